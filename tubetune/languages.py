"""What the pipeline needs to know about a language, in one table.

``language`` in params.yaml is a code such as ``en``, ``zh-TW`` or ``ko``. Labelling,
filters, training and metrics each need a few facts about it: Whisper's language token, the
unit errors are counted in (characters where words are not separated by spaces: WER is
meaningless there), the speaking rate a real transcript can have (for the label filter),
and whether the script has variants a recogniser may mix up (Chinese: Traditional and
Simplified). :func:`profile` resolves them once.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache

# Languages written without spaces between words, or scored in characters by convention
# (Korean: KsponSpeech and the course plan report CER).
CHARACTER_LANGUAGES = frozenset({"zh", "ja", "ko", "th", "lo", "my", "km", "yue", "bo"})
# Non-space characters per second a transcript of real speech can have, by language
# (bounds, not typical rates: chunks hold pauses, and punctuation counts). Mandarin is
# spoken at about 3-8 characters a second, Korean at about 5-8 syllables.
_CHAR_RATES: dict[str, tuple[float, float]] = {
    "zh": (1.0, 12.0), "yue": (1.0, 12.0), "ja": (1.0, 15.0), "ko": (1.0, 15.0),
}
_SPACED_CHAR_RATE = (2.0, 30.0)
_CHARACTER_CHAR_RATE = (1.0, 20.0)


@dataclass(frozen=True)
class LanguageProfile:
    """The facts about one language code that labels, filters and metrics use."""

    code: str  # as given, e.g. "zh-TW"
    base: str  # ISO 639-1 without region, e.g. "zh"; "" when unknown (detected)
    unit: str  # "char" or "word": the headline error rate's unit
    chars_per_s: tuple[float, float]  # label filter bounds for ``auto``
    fold_script: str | None  # OpenCC config mapping script variants to one ("t2s" for zh)

    @property
    def whisper(self) -> str | None:
        """Whisper's language token name (``zh-TW`` -> ``zh``); None to detect."""
        return self.base or None

    @property
    def metric(self) -> str:
        """The headline metric: ``cer`` or ``wer``."""
        return "cer" if self.unit == "char" else "wer"


def base_language(language: str | None) -> str:
    """``zh-TW`` -> ``zh``; ``None`` -> ``""``."""
    return (language or "").split("-")[0].lower()


@lru_cache(maxsize=64)
def profile(language: str | None) -> LanguageProfile:
    """The profile of a language code (``None``: unknown, treated as spaced words)."""
    base = base_language(language)
    by_char = base in CHARACTER_LANGUAGES
    rates = _CHAR_RATES.get(base, _CHARACTER_CHAR_RATE if by_char else _SPACED_CHAR_RATE)
    return LanguageProfile(code=language or "", base=base, unit="char" if by_char else "word",
                           chars_per_s=rates, fold_script="t2s" if base == "zh" else None)
