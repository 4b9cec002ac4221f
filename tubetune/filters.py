"""Label filters: reject teacher transcripts that are hallucinations rather than speech.

Each check returns a short reason code (the key of the label report and of ``rejects.csv``)
and a human detail, or None. The checks follow distil-whisper/NeMo practice: decoder scores
(no-speech probability, avg log-prob, compression ratio), repetition, known hallucination
phrases (per-language lists in ``tubetune/data/hallucinations/<lang>.txt``), speaking rate,
wrong language and Whisper's 448-token decoder limit.
"""

from __future__ import annotations

import re
from collections import Counter
from functools import cache
from pathlib import Path

from tubetune.engines import Transcript
from tubetune.languages import profile
from tubetune.params import LabelParams
from tubetune.text import base_language, fold_script, normalize_for_metric, uses_characters

HALLUCINATION_DIR = Path(__file__).parent / "data" / "hallucinations"

Rejection = tuple[str, str]  # (reason code, detail)


@cache
def hallucination_phrases(language: str) -> frozenset[str]:
    """Normalised phrases of ``<lang>.txt`` (empty when the language has no list)."""
    path = HALLUCINATION_DIR / f"{base_language(language)}.txt"
    if not path.is_file():
        return frozenset()
    lines = path.read_text(encoding="utf-8").splitlines()
    phrases = (normalize_for_metric(fold_script(ln, language), language)
               for ln in lines if not ln.startswith("#"))
    return frozenset(p for p in phrases if p)


def is_hallucination(text: str, language: str) -> bool:
    """True when the whole text is made of known hallucination phrases (repeats included)."""
    phrases = hallucination_phrases(language)
    rest = normalize_for_metric(fold_script(text, language), language)
    if not phrases or not rest:
        return False
    sep = "" if uses_characters(language) else " "
    pattern = "|".join(re.escape(p) for p in sorted(phrases, key=len, reverse=True))
    rest = re.sub(rf"(?:{pattern})", sep, rest)
    return not rest.strip()


def _units(text: str, language: str) -> list[str]:
    norm = normalize_for_metric(text, language)
    return list(norm.replace(" ", "")) if uses_characters(language) else norm.split()


def unique_ratio(text: str, language: str) -> float:
    """Distinct words (characters for zh/ja/ko) over all of them; 1.0 for short texts."""
    units = _units(text, language)
    return len(set(units)) / len(units) if len(units) >= 8 else 1.0


def max_ngram_count(text: str, language: str, n: int = 3) -> int:
    """How often the most frequent n-gram of words (characters for zh/ja/ko) occurs."""
    units = _units(text, language)
    grams = Counter(tuple(units[i : i + n]) for i in range(len(units) - n + 1))
    return max(grams.values(), default=0)


def longest_char_run(text: str) -> int:
    """Longest run of one repeated non-space character (e.g. "喔喔喔喔")."""
    runs = re.findall(r"((\S)\2*)", text)
    return max((len(r[0]) for r in runs), default=0)


def chars_per_second(text: str, duration_s: float) -> float:
    """Non-space characters per second of audio."""
    return len(re.sub(r"\s", "", text)) / duration_s if duration_s > 0 else 0.0


def char_rate_bounds(params: LabelParams, language: str | None) -> tuple[float, float]:
    """``labels.min/max_chars_per_s``, each ``auto`` taken from the language's profile."""
    low, high = profile(language).chars_per_s
    return (low if params.min_chars_per_s == "auto" else float(params.min_chars_per_s),
            high if params.max_chars_per_s == "auto" else float(params.max_chars_per_s))


def teacher_rejection(
    t: Transcript, duration_s: float, language: str | None, params: LabelParams
) -> Rejection | None:
    """Why the teacher's transcript is not a usable label, or None (first failing check)."""
    lang = base_language(language) or t.language
    if not t.text.strip():
        return "empty", "empty text"
    if t.no_speech_prob > params.max_no_speech_prob:
        return "no_speech", f"no_speech_prob {t.no_speech_prob:.2f}"
    if t.avg_logprob < params.min_avg_logprob:
        return "low_logprob", f"avg_logprob {t.avg_logprob:.2f}"
    if language is None and t.language_probability < params.min_language_probability:
        return "language_uncertain", f"{t.language} with probability {t.language_probability:.2f}"
    if language and base_language(t.language) != lang:
        return "wrong_language", f"detected {t.language} ({t.language_probability:.2f})"
    if language and t.language_probability < params.min_language_probability:
        return "wrong_language", f"{lang} only {t.language_probability:.2f} likely"
    if t.compression_ratio > params.max_compression_ratio:
        return "compression", f"compression ratio {t.compression_ratio:.2f}"
    return text_rejection(t.text, t.num_tokens, duration_s, lang, params)


def text_rejection(
    text: str, num_tokens: int, duration_s: float, language: str, params: LabelParams
) -> Rejection | None:
    """Checks on the text alone (also applied to subtitle labels)."""
    if params.hallucination_phrases and is_hallucination(text, language):
        return "hallucination", f"known hallucination phrase {text[:40]!r}"
    ratio = unique_ratio(text, language)
    if ratio < params.min_unique_word_ratio:
        return "repetition", f"unique-unit ratio {ratio:.2f}"
    repeats = max_ngram_count(text, language)
    if repeats > params.max_ngram_repeats:
        return "repetition", f"a 3-gram repeated {repeats} times"
    run = longest_char_run(text)
    if run > params.max_char_run:
        return "repetition", f"a character repeated {run} times in a row"
    cps = chars_per_second(text, duration_s)
    low, high = char_rate_bounds(params, language)
    if not low <= cps <= high:
        return "char_rate", f"{cps:.1f} characters/s (allowed {low:g}-{high:g})"
    if num_tokens > params.max_label_tokens:
        return "too_long", f"{num_tokens} tokens"
    return None
