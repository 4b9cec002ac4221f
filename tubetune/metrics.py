"""Word and character error rates, with their substitution/insertion/deletion breakdown."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass

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
    unit: str  # "word" or "char": which of WER/CER is the primary metric
    # Chinese: CER with Traditional and Simplified folded to one script, so recognition
    # errors show apart from script errors (Whisper often answers zh in Simplified).
    cer_script_insensitive: float | None = None

    @property
    def primary(self) -> float:
        """WER for spaced scripts, CER for zh/ja/ko/th and similar."""
        return self.cer if self.unit == "char" else self.wer

    def as_dict(self) -> dict[str, float | int | str]:
        """JSON-ready, rounded to 2 decimals."""
        data = asdict(self)
        if data["cer_script_insensitive"] is None:
            del data["cer_script_insensitive"]
        for key in ("wer", "cer", "cer_script_insensitive"):
            if key in data:
                data[key] = round(data[key], 2)
        return data


def _pairs(refs: Sequence[str], hyps: Sequence[str], language: str | None) -> tuple[list, list]:
    refs_n = [normalize_for_metric(r, language) for r in refs]
    hyps_n = [normalize_for_metric(h, language) for h in hyps]
    keep = [i for i, r in enumerate(refs_n) if r]
    return [refs_n[i] for i in keep], [hyps_n[i] for i in keep]


def error_rates(refs: Sequence[str], hyps: Sequence[str], language: str | None) -> ErrorRates:
    """Score ``hyps`` against ``refs`` (utterances with empty references are skipped)."""
    if len(refs) != len(hyps):
        raise ValueError(f"{len(refs)} references but {len(hyps)} hypotheses")
    refs_n, hyps_n = _pairs(refs, hyps, language)
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


def utterance_edits(refs: Sequence[str], hyps: Sequence[str],
                    language: str | None) -> list[tuple[int, int]]:
    """(edits, reference units) of each utterance at the primary unit; (0, 0) for an empty
    reference. Summed, they give the corpus error rate; resampled, its uncertainty."""
    out = []
    for ref, hyp in zip(refs, hyps, strict=True):
        ref_n, hyp_n = normalize_for_metric(ref, language), normalize_for_metric(hyp, language)
        if not ref_n:
            out.append((0, 0))
            continue
        m = (jiwer.process_characters if uses_characters(language) else jiwer.process_words)(
            ref_n, hyp_n)
        out.append((m.substitutions + m.deletions + m.insertions,
                    m.hits + m.substitutions + m.deletions))
    return out


def bootstrap_ratio_quantile(candidate: Sequence[tuple[int, int]],
                             reference: Sequence[tuple[int, int]], quantile: float,
                             resamples: int = 2000, seed: int = 0) -> float:
    """The ``quantile`` of candidate/reference corpus error over paired bootstrap resamples of
    the utterances: how much worse the candidate may really be, given how few utterances the
    comparison rests on. Deterministic for a seed; inf where the reference makes no error."""
    import numpy as np

    cand = np.array([e for e, _ in candidate], dtype=float)
    ref = np.array([e for e, _ in reference], dtype=float)
    rng = np.random.default_rng(seed)
    picks = rng.integers(0, len(ref), size=(resamples, len(ref)))
    cand_sum, ref_sum = cand[picks].sum(axis=1), ref[picks].sum(axis=1)
    with np.errstate(divide="ignore", invalid="ignore"):
        ratios = np.where(ref_sum > 0, cand_sum / ref_sum,
                          np.where(cand_sum > 0, np.inf, 1.0))
    return float(np.quantile(ratios, quantile))


def utterance_error_rate(ref: str, hyp: str, language: str | None) -> float | None:
    """Primary error rate (percent) of one utterance, or None for an empty reference."""
    ref_n, hyp_n = normalize_for_metric(ref, language), normalize_for_metric(hyp, language)
    if not ref_n:
        return None
    rate = jiwer.cer(ref_n, hyp_n) if uses_characters(language) else jiwer.wer(ref_n, hyp_n)
    return round(100.0 * rate, 2)
