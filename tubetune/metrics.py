"""Word and character error rates, with their substitution/insertion/deletion breakdown."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any

import jiwer

from tubetune.languages import profile
from tubetune.text import fold_script, normalize_for_metric, uses_characters


@dataclass(frozen=True)
class ErrorRates:
    """Corpus-level scores (percent) and edit counts at the primary unit."""

    wer: float
    cer: float
    substitutions: int
    deletions: int
    insertions: int
    reference_units: int
    # "word" or "char": which of WER/CER is the primary metric; "mixed" for a set of several
    # languages, whose primary metric is ``mer``
    unit: str
    # Chinese: CER with Traditional and Simplified folded to one script, so recognition
    # errors show apart from script errors (Whisper often answers zh in Simplified).
    cer_script_insensitive: float | None = None
    # Several languages: the mixed error rate (each utterance's edits in its own language's
    # unit, words or characters, over all their units) and each language's own scores.
    mer: float | None = None
    by_language: dict[str, ErrorRates] | None = None

    @property
    def primary(self) -> float:
        """WER for spaced scripts, CER for zh/ja/ko/th and similar, MER for a mix."""
        if self.unit == "mixed":
            return self.mer
        return self.cer if self.unit == "char" else self.wer

    def as_dict(self) -> dict:
        """JSON-ready, rounded to 2 decimals."""
        data = {k: v for k, v in asdict(self).items() if v is not None}
        for key in ("wer", "cer", "cer_script_insensitive", "mer"):
            if key in data:
                data[key] = round(data[key], 2)
        if self.by_language:
            data["by_language"] = {k: v.as_dict() for k, v in self.by_language.items()}
        return data


def _pairs(refs: Sequence[str], hyps: Sequence[str],
           languages: Sequence[str | None]) -> tuple[list, list]:
    """Normalised (references, hypotheses), each in its utterance's language; empty
    references dropped."""
    refs_n = [normalize_for_metric(r, lang) for r, lang in zip(refs, languages, strict=True)]
    hyps_n = [normalize_for_metric(h, lang) for h, lang in zip(hyps, languages, strict=True)]
    keep = [i for i, r in enumerate(refs_n) if r]
    return [refs_n[i] for i in keep], [hyps_n[i] for i in keep]


def error_rates(refs: Sequence[str], hyps: Sequence[str], language: str | None) -> ErrorRates:
    """Score ``hyps`` against ``refs`` (utterances with empty references are skipped)."""
    if len(refs) != len(hyps):
        raise ValueError(f"{len(refs)} references but {len(hyps)} hypotheses")
    refs_n, hyps_n = _pairs(refs, hyps, [language] * len(refs))
    if not refs_n:
        raise ValueError("no non-empty reference to score against")
    words = jiwer.process_words(refs_n, hyps_n)
    chars = jiwer.process_characters(refs_n, hyps_n)
    by_char = uses_characters(language)
    edits = chars if by_char else words
    folded = None
    if profile(language).fold_script:
        folded = 100.0 * jiwer.cer([fold_script(r, language) for r in refs_n],
                                   [fold_script(h, language) for h in hyps_n])
    return ErrorRates(
        wer=100.0 * words.wer,
        cer=100.0 * chars.cer,
        substitutions=edits.substitutions,
        deletions=edits.deletions,
        insertions=edits.insertions,
        reference_units=edits.hits + edits.substitutions + edits.deletions,
        unit="char" if by_char else "word",
        cer_script_insensitive=folded,
    )


Edits = list[tuple[int, int]]  # per utterance: (errors, reference units)


def utterance_edits(refs: Sequence[str], hyps: Sequence[str],
                    languages: Sequence[str | None]) -> Edits:
    """(edits, reference units) of each utterance at its language's primary unit (one
    language per utterance); (0, 0) for an empty reference. Summed, they give the corpus
    error rate; resampled, its uncertainty."""
    out = []
    for ref, hyp, language in zip(refs, hyps, languages, strict=True):
        ref_n, hyp_n = normalize_for_metric(ref, language), normalize_for_metric(hyp, language)
        if not ref_n:
            out.append((0, 0))
            continue
        m = (jiwer.process_characters if uses_characters(language) else jiwer.process_words)(
            ref_n, hyp_n)
        out.append((m.substitutions + m.deletions + m.insertions,
                    m.hits + m.substitutions + m.deletions))
    return out


def set_error_rates(refs: Sequence[str], hyps: Sequence[str],
                    languages: Sequence[str]) -> ErrorRates:
    """Score a set whose utterances each name their language (``languages``, one per
    utterance): as :func:`error_rates` when they agree; else every utterance in its own
    language's normalisation and unit, pooled as the mixed error rate (``mer``: an English
    word and a Mandarin character count one unit each, as in code-switching benchmarks),
    with each language's own scores under ``by_language``."""
    if len(refs) != len(hyps) or len(refs) != len(languages):
        raise ValueError(f"{len(refs)} references, {len(hyps)} hypotheses, "
                         f"{len(languages)} languages")
    distinct = sorted(set(languages))
    if len(distinct) <= 1:
        return error_rates(refs, hyps, distinct[0] if distinct else None)
    by_language = {}
    for language in distinct:
        rows = [i for i, lang in enumerate(languages) if lang == language]
        if any(normalize_for_metric(refs[i], language) for i in rows):
            by_language[language] = error_rates([refs[i] for i in rows],
                                                [hyps[i] for i in rows], language)
    if not by_language:
        raise ValueError("no non-empty reference to score against")
    refs_n, hyps_n = _pairs(refs, hyps, languages)
    words = jiwer.process_words(refs_n, hyps_n)
    chars = jiwer.process_characters(refs_n, hyps_n)
    parts = by_language.values()
    units = sum(p.reference_units for p in parts)
    edits = sum(p.substitutions + p.deletions + p.insertions for p in parts)
    return ErrorRates(
        wer=100.0 * words.wer, cer=100.0 * chars.cer,
        substitutions=sum(p.substitutions for p in parts),
        deletions=sum(p.deletions for p in parts),
        insertions=sum(p.insertions for p in parts),
        reference_units=units, unit="mixed", mer=100.0 * edits / units,
        by_language=by_language,
    )


def _resampled_errors(candidate: Sequence[tuple[int, int]],
                      reference: Sequence[tuple[int, int]], resamples: int,
                      seed: int) -> tuple[Any, Any]:
    """Candidate and reference error totals over paired bootstrap resamples of utterances."""
    import numpy as np

    cand = np.array([e for e, _ in candidate], dtype=float)
    ref = np.array([e for e, _ in reference], dtype=float)
    picks = np.random.default_rng(seed).integers(0, len(ref), size=(resamples, len(ref)))
    return cand[picks].sum(axis=1), ref[picks].sum(axis=1)


def bootstrap_ratio_quantile(candidate: Sequence[tuple[int, int]],
                             reference: Sequence[tuple[int, int]], quantile: float,
                             resamples: int = 2000, seed: int = 0) -> float:
    """The ``quantile`` of candidate/reference corpus error over paired bootstrap resamples of
    the utterances: how much worse the candidate may really be, given how few utterances the
    comparison rests on. Deterministic for a seed; inf where the reference makes no error."""
    import numpy as np

    cand_sum, ref_sum = _resampled_errors(candidate, reference, resamples, seed)
    with np.errstate(divide="ignore", invalid="ignore"):
        ratios = np.where(ref_sum > 0, cand_sum / ref_sum,
                          np.where(cand_sum > 0, np.inf, 1.0))
    return float(np.quantile(ratios, quantile))


def bootstrap_share_worse(candidate: Sequence[tuple[int, int]],
                          reference: Sequence[tuple[int, int]], resamples: int = 2000,
                          seed: int = 0) -> float:
    """Share of paired bootstrap resamples of the utterances in which the candidate makes more
    errors than the reference: how sure one can be that it is really worse (deterministic)."""
    cand_sum, ref_sum = _resampled_errors(candidate, reference, resamples, seed)
    return float((cand_sum > ref_sum).mean())


def utterance_error_rate(ref: str, hyp: str, language: str | None) -> float | None:
    """Primary error rate (percent) of one utterance, or None for an empty reference."""
    ref_n, hyp_n = normalize_for_metric(ref, language), normalize_for_metric(hyp, language)
    if not ref_n:
        return None
    rate = jiwer.cer(ref_n, hyp_n) if uses_characters(language) else jiwer.wer(ref_n, hyp_n)
    return round(100.0 * rate, 2)
