"""Text normalisation: training targets (per language) and metric normalisers.

Training targets keep Whisper style (case and punctuation are part of what Whisper
predicts) with per-language fixes (:func:`normalize_target`): Chinese converted with
OpenCC (``s2twp`` for zh-TW: Traditional with Taiwanese phrasing) and given full-width
punctuation, Korean KsponSpeech transcription notation resolved, English untouched.
Metrics compare normalised text: Whisper's English normaliser for English, its basic
normaliser elsewhere, and characters rather than words for scripts written without spaces.
"""

from __future__ import annotations

import re
import unicodedata
from functools import lru_cache
from typing import TYPE_CHECKING

from tubetune.languages import base_language, profile

if TYPE_CHECKING:
    from collections.abc import Callable

    from tubetune.params import NormalizeParams


@lru_cache(maxsize=2)
def _whisper_normalizer(english: bool) -> Callable[[str], str]:
    """Whisper's English or basic normaliser (imported on first use: transformers is slow to
    import, and many stages never score text)."""
    from transformers.models.whisper.english_normalizer import (
        BasicTextNormalizer,
        EnglishTextNormalizer,
    )

    return EnglishTextNormalizer({}) if english else BasicTextNormalizer()


def whisper_language(language: str | None) -> str | None:
    """Whisper's language token name for a code (``zh-TW`` -> ``zh``); None stays None."""
    return profile(language).whisper


def uses_characters(language: str | None) -> bool:
    """True when the language is scored by CER rather than WER."""
    return profile(language).unit == "char"


def fold_script(text: str, language: str | None) -> str:
    """``text`` with script variants mapped to one (Chinese: Traditional -> Simplified), so
    comparisons count recognition errors apart from script choice; other languages as is."""
    config = profile(language).fold_script
    return _opencc(config).convert(text) if config else text


def clean_target(text: str) -> str:
    """A training target: NFC, no control characters, single spaces, trimmed."""
    text = unicodedata.normalize("NFC", text)
    text = "".join(ch for ch in text if unicodedata.category(ch)[0] != "C" or ch in "\t\n")
    return re.sub(r"\s+", " ", text).strip()


def normalize_for_metric(text: str, language: str | None) -> str:
    """Text as compared by WER/CER: Whisper's normaliser for the language."""
    lang = base_language(language)
    normalized = _whisper_normalizer(lang == "en")(text)
    if uses_characters(lang):
        normalized = normalized.replace(" ", "")
    return re.sub(r"\s+", " ", normalized).strip()


# Half-width -> full-width punctuation for Chinese/Japanese targets (only next to CJK text,
# so "3.5" or "e.g." inside a sentence keep their ASCII form).
_FULLWIDTH = str.maketrans({",": "，", "!": "！", "?": "？", ":": "：", ";": "；",
                            "(": "（", ")": "）"})
_CJK = r"[\u3040-\u30ff\u3400-\u9fff\uf900-\ufaff]"
_KO_DUAL = re.compile(r"\(([^()]*)\)\s*/\s*\(([^()]*)\)")
_KO_NOISE = re.compile(r"(?<![\w/])[bnolu]/")
_KO_MARKS = re.compile(r"[+*]|(?<=\S)/")


@lru_cache(maxsize=4)
def _opencc(config: str):
    import opencc

    return opencc.OpenCC(config)


def fullwidth_punctuation(text: str) -> str:
    """Chinese-style punctuation: full-width marks next to CJK text, 。 for a final period."""
    text = re.sub(rf"(?<={_CJK})\s*([,!?:;()])\s*|\s*([,!?:;()])\s*(?={_CJK})",
                  lambda m: (m.group(1) or m.group(2)).translate(_FULLWIDTH), text)
    return re.sub(rf"(?<={_CJK})\.(?=\s|$)", "。", text)


def clean_ksponspeech(text: str, dual_spelling: str = "phonetic") -> str:
    """Korean KsponSpeech notation to plain text.

    ``(A)/(B)`` dual transcriptions keep A (orthographic) or B (phonetic); noise tags
    ``b/ n/ o/ l/ u/`` are dropped; ``+`` (repeated), ``*`` (unclear) and word-final ``/``
    (filler) markers are removed, keeping the words.
    """
    keep = 1 if dual_spelling == "orthographic" else 2
    text = _KO_DUAL.sub(lambda m: m.group(keep), text)
    text = _KO_NOISE.sub(" ", text)
    text = _KO_MARKS.sub("", text)
    return re.sub(r"\s+", " ", text).strip()


def normalize_target(text: str, language: str | None, norm: NormalizeParams) -> str:
    """A training target in ``language``: cleaned, then the language's conventions applied."""
    text = clean_target(text)
    lang = base_language(language)
    if lang == "zh":
        if norm.zh_convert:
            text = _opencc(norm.zh_convert).convert(text)
        if norm.fullwidth_punctuation:
            text = fullwidth_punctuation(text)
    elif lang == "ja" and norm.fullwidth_punctuation:
        text = fullwidth_punctuation(text)
    elif lang == "ko":
        text = clean_ksponspeech(text, norm.ko_dual_spelling)
    return text
