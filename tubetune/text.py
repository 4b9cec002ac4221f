"""Text normalisation: training targets (keep Whisper style) and metric normalisers.

Training targets stay as the teacher or subtitle wrote them (case and punctuation are
part of what Whisper predicts). Metrics compare normalised text: Whisper's English
normaliser for English, its basic normaliser elsewhere, and characters rather than words
for scripts written without spaces.
"""

from __future__ import annotations

import re
import unicodedata

from transformers.models.whisper.english_normalizer import (
    BasicTextNormalizer,
    EnglishTextNormalizer,
)

# Languages written without spaces between words: WER is meaningless there, use CER.
CHARACTER_LANGUAGES = frozenset({"zh", "ja", "ko", "th", "lo", "my", "km", "yue", "bo"})

_english = EnglishTextNormalizer({})
_basic = BasicTextNormalizer()


def base_language(language: str | None) -> str:
    """``zh-TW`` -> ``zh``; ``None`` -> ``""``."""
    return (language or "").split("-")[0].lower()


def uses_characters(language: str | None) -> bool:
    """True when the language is scored by CER rather than WER."""
    return base_language(language) in CHARACTER_LANGUAGES


def clean_target(text: str) -> str:
    """A training target: NFC, no control characters, single spaces, trimmed."""
    text = unicodedata.normalize("NFC", text)
    text = "".join(ch for ch in text if unicodedata.category(ch)[0] != "C" or ch in "\t\n")
    return re.sub(r"\s+", " ", text).strip()


def normalize_for_metric(text: str, language: str | None) -> str:
    """Text as compared by WER/CER: Whisper's normaliser for the language."""
    lang = base_language(language)
    normalized = _english(text) if lang == "en" else _basic(text)
    if uses_characters(lang):
        normalized = normalized.replace(" ", "")
    return re.sub(r"\s+", " ", normalized).strip()
