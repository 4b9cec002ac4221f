"""The forgetting guard: which model a fine-tuning round hands on, chosen rather than assumed.

A fine-tune that gets better on its own voice by getting worse on everything else is not an
improvement. For each round the guard scores candidates — the round's final weights, its
saved checkpoints, and weight-space interpolations ``(1 - a) * start + a * fine-tuned``
between the round's start model and its final weights (robust fine-tuning, Wortsman et al.
2022) — with the engine and settings that ship (CTranslate2 through faster-whisper), on:

- the validation split (in-domain: what the round should improve),
- the selection half of the general held-out set (another kind of speech: what it must not
  forget), and
- the whole validation videos, decoded window by window with timestamps (long-form: what
  breaks when a fine-tune forgets to predict timestamps).

The winner is the candidate with the lowest validation error among those whose held-out
error stays within ``max_heldout_regression`` (relative) of both the base model and the
round's start model (for later rounds, the round before) in ``heldout_confidence`` of paired
bootstrap resamples of the held-out utterances (a held-out set of a few dozen clips cannot
tell 10 % better from 10 % worse on one draw), and none of whose languages (a held-out set
of several languages is scored in each utterance's own language) is worse than the budget in
``heldout_confidence`` of the resamples of that language's utterances. The pooled check asks
the candidate to show it is no worse; the per-language check vetoes a loss it can show: a
language with a few clips and a dozen errors cannot prove "no worse" for any model that
changes a word (one extra error is already 7 %), but it can show a doubled error. And whose
long-form error and share of windows closed by a timestamp token stay within the same budget
of the start model's. The start model itself (``a`` = 0) is always a candidate, so a round
that cannot be trusted hands on what it started from, with a loud warning. The held-out half
used here is never the one `evaluate` reports.

"Lowest validation error" is read with the same care: a candidate whose validation errors
exceed the best one's in fewer than ``validation_confidence`` of paired bootstrap resamples
is not really worse (one error against three on a short validation set is a coin flip),
and among those ties the one closest to the start model (the smallest ``a``) ranks first:
it changed least, so it has the least to forget where nothing was measured. The start model
itself is never a tie.
"""

from __future__ import annotations

import json
import logging
import shutil
import tempfile
from collections.abc import Callable
from dataclasses import asdict, dataclass, replace
from pathlib import Path

import pandas as pd

from tubetune.evaluation import Predictions, load_predictions, row_languages, transcribe_sets
from tubetune.fsutil import atomic_path, atomic_write_text
from tubetune.metrics import (
    Edits,
    bootstrap_ratio_quantile,
    bootstrap_share_worse,
    set_error_rates,
    utterance_edits,
)
from tubetune.models import ModelError
from tubetune.params import EvaluateParams, ExportParams

log = logging.getLogger(__name__)

WEIGHTS = "model.safetensors"
SNAPSHOTS = "snapshots"
LONGFORM = "validation_longform_sequential"
SCORED_SETS = ("validation", "heldout_select", LONGFORM)


@dataclass(frozen=True)
class Candidate:
    """A model the round could hand on: ``a`` of ``tuned`` weights over the start model."""

    name: str
    a: float
    tuned: Path  # the fine-tuned end: the final model dir or a snapshot dir


@dataclass(frozen=True)
class Scored:
    """A candidate's errors (primary unit, percent); None where the set is missing."""

    name: str
    a: float
    validation: float | None
    heldout_select: float | None
    longform: float | None = None
    timestamp_share: float | None = None
    vs_base: float | None = None
    vs_start: float | None = None
    vs_base_upper: float | None = None  # the ratio's bootstrap quantile (see choose)
    vs_start_upper: float | None = None
    by_language_lower: str | None = None  # several languages: each one's sure-loss bound
    within_budget: bool | None = True  # None: not checked, a better-ranked one was in budget
    ties_best: bool | None = None  # validation not really worse than the best (see choose)


def candidates(train_dir: Path, params: ExportParams) -> list[Candidate]:
    """The start model, the interpolations of the final model, and its checkpoints."""
    found = [Candidate("start", 0.0, train_dir)]
    found += [Candidate(f"a={a:g}", a, train_dir) for a in sorted(set(params.interpolation))]
    if params.checkpoints:
        snapshots = sorted((train_dir / SNAPSHOTS).glob("step-*"),
                           key=lambda p: int(p.name.split("-")[1]))
        found += [Candidate(p.name, 1.0, p) for p in snapshots]
    return found


def _ct2_candidate(candidate: Candidate, start_dir: Path, train_dir: Path, tmp: Path) -> Path:
    """``candidate`` as the CTranslate2 model it would ship as, under ``tmp``."""
    from tubetune.conversion import convert_hf_to_ct2

    hf = tmp / f"{candidate.name}-hf"
    write_candidate(candidate, start_dir, train_dir, hf)
    convert_hf_to_ct2(hf, tmp / candidate.name)
    shutil.rmtree(hf)
    return tmp / candidate.name


def _read_weights(model_dir: Path) -> dict:
    """Every tensor of a Hugging Face model dir's safetensors files, by name."""
    from safetensors.torch import load_file

    files = sorted(model_dir.glob("*.safetensors"))
    if not files:
        raise ModelError(f"{model_dir} holds no .safetensors weights")
    weights: dict = {}
    for path in files:
        weights.update(load_file(path))
    return weights


def write_candidate(candidate: Candidate, start_dir: Path, train_dir: Path, out: Path) -> None:
    """``out``: a loadable Hugging Face model dir holding ``candidate``'s weights.

    Configuration, tokenizer and generation settings come from the round's final model;
    the weights are the interpolation, tensor by tensor, of the start and the tuned end.
    """
    from safetensors.torch import save_file

    out.mkdir(parents=True)
    for path in train_dir.iterdir():
        if path.is_file() and not path.name.endswith((".safetensors", ".safetensors.index.json")):
            shutil.copyfile(path, out / path.name)
    start = _read_weights(start_dir)
    if candidate.a == 0:
        weights = start
    else:
        tuned = _read_weights(candidate.tuned)
        if set(tuned) != set(start) or any(tuned[k].shape != start[k].shape for k in start):
            raise ModelError(f"{candidate.tuned} and {start_dir} are not the same architecture")
        a = candidate.a
        weights = {k: (start[k] + a * (tuned[k] - start[k])) if start[k].is_floating_point()
                   else tuned[k] for k in start}
    save_file({k: v.contiguous() for k, v in weights.items()}, out / WEIGHTS,
              metadata={"format": "pt"})


def _errors(sets: dict[str, pd.DataFrame], predictions: Predictions,
            language: str) -> tuple[dict[str, float], dict[str, Edits]]:
    """Primary error (percent) per set, plus the long-form set's timestamp share; and the
    per-utterance edits on the validation split and the held-out selection half (those of
    them in ``sets``)."""
    errors = {name: round(set_error_rates(sets[name]["text"].tolist(), predictions.texts[name],
                                          row_languages(sets[name], language)).primary, 2)
              for name in sets}
    share = predictions.timestamp_share(LONGFORM)
    if share is not None:
        errors["timestamp_share"] = share
    edits = {name: utterance_edits(sets[name]["text"].tolist(), predictions.texts[name],
                                   row_languages(sets[name], language))
             for name in ("validation", "heldout_select") if name in sets}
    return errors, edits


def language_rows(frame: pd.DataFrame | None, default: str) -> dict[str, list[int]] | None:
    """Each language's row indices in ``frame`` (None without one)."""
    if frame is None:
        return None
    rows: dict[str, list[int]] = {}
    for i, language in enumerate(row_languages(frame, default)):
        rows.setdefault(language, []).append(i)
    return rows


def _scored(name: str, a: float, errors: dict[str, float]) -> Scored:
    return Scored(name, a, errors.get("validation"), errors.get("heldout_select"),
                  errors.get(LONGFORM), errors.get("timestamp_share"))


def choose(scored: list[Scored], base: dict[str, float], start: dict[str, float],
           budget: float, edits: dict[str, Edits] | None = None,
           confidence: float = 0.9,
           fill_heldout: Callable[[Scored], Scored] | None = None,
           languages: dict[str, list[int]] | None = None,
           validation_edits: dict[str, Edits] | None = None,
           validation_confidence: float = 0.0) -> tuple[list[Scored], Scored]:
    """Mark each candidate's budget check and return the winner (see module docstring).

    With per-utterance ``edits`` on the held-out selection half (candidate names, ``base``
    and ``start``), a candidate is within budget only when its error ratio to the base and
    to the start model stays within the budget in ``confidence`` of paired bootstrap
    resamples of the utterances: on a small held-out set a lucky draw must not pass for "no
    worse". In a held-out half of several languages (``languages``: each one's utterance
    indices) no language may be worse than the budget in ``confidence`` of the resamples of
    its own utterances: a model may not buy an English gain with a clear Mandarin loss.
    Without edits the ratios themselves are compared.
    Ties in validation error go to the smaller ``a`` (closer to the start model); with
    per-utterance ``validation_edits`` (candidate names) a tie is any candidate whose errors
    exceed the best one's in fewer than ``validation_confidence`` of paired bootstrap
    resamples of the validation utterances (0: exact ties only). Without a
    held-out set nothing can be checked: every candidate is within budget. Without a
    validation set the candidate with the most fine-tuning within budget wins.

    Candidates are checked in the winner's order (``rank``) and the first one allowed wins.
    ``fill_heldout`` scores the held-out half of a candidate that has none yet: called only
    in that order, so candidates after the winner are never decoded (marked ``None``: not
    checked), and the choice is the one of scoring them all. It may hand back a candidate
    already vetoed (``within_budget`` False, no held-out score): one language ruled it out
    before the rest was decoded.
    """
    scored = _mark_ties(scored, validation_edits, validation_confidence)
    marked = {s.name: s for s in scored}
    checked: set[str] = set()
    winner = None
    for s in sorted(scored, key=rank):
        if fill_heldout is not None and s.heldout_select is None:
            s = fill_heldout(s)
        if s.heldout_select is None and s.within_budget is False:  # vetoed part-way
            marked[s.name] = s
        else:
            s = marked[s.name] = mark(s, base, start, budget, edits, confidence, languages)
        checked.add(s.name)
        if s.within_budget or s.a == 0:
            winner = s
            break
    if winner is None:
        raise ValueError("no candidate within budget and no start model (a = 0) among them")
    for name, s in marked.items():  # the rest, for the record
        if name not in checked:
            marked[name] = (replace(s, within_budget=None)
                            if fill_heldout is not None and s.heldout_select is None
                            else mark(s, base, start, budget, edits, confidence, languages))
    return list(marked.values()), winner


def _mark_ties(scored: list[Scored], edits: dict[str, Edits] | None,
               confidence: float) -> list[Scored]:
    """``scored`` with ``ties_best`` set where validation edits allow the comparison."""
    if not edits or not confidence:
        return scored
    best = min((s for s in scored if s.name in edits and s.validation is not None),
               key=rank, default=None)
    if best is None or best.a == 0:  # no fine-tuned candidate beats the start: no ties
        return scored
    # The start model never ties: a round hands it on only when nothing else may go.
    return [replace(s, ties_best=s.a > 0 and (s.name == best.name or bootstrap_share_worse(
                edits[s.name], edits[best.name]) < confidence)) if s.name in edits else s
            for s in scored]


def rank(s: Scored) -> tuple[int, float, float]:
    """The winner's order: candidates tied with the best validation error (``ties_best``)
    first, the smallest ``a`` of them first; then the lowest validation error, then the
    smaller ``a``."""
    if s.ties_best:
        return (0, s.a, s.validation)
    return (1, s.validation if s.validation is not None else -s.a, s.a)


def mark(s: Scored, base: dict[str, float], start: dict[str, float], budget: float,
         edits: dict[str, Edits] | None, confidence: float,
         languages: dict[str, list[int]] | None = None) -> Scored:
    """``s`` with its ratios to the base and start models and its budget check."""
    vs_base = vs_start = upper_base = upper_start = by_language = None
    ok = True
    if s.heldout_select is not None:
        vs_base = _ratio(s.heldout_select, base["heldout_select"])
        vs_start = _ratio(s.heldout_select, start["heldout_select"])
        if edits and s.name in edits:
            upper_base, upper_start = (round(bootstrap_ratio_quantile(
                edits[s.name], edits[ref], confidence), 3) for ref in ("base", "start"))
            ok = max(upper_base, upper_start) <= 1 + budget + 1e-9
            if languages and len(languages) > 1:
                lowers = {lang: language_lower([edits[s.name][i] for i in rows], edits, rows,
                                               confidence) for lang, rows in languages.items()}
                by_language = ", ".join(f"{k} {v:.3f}" for k, v in lowers.items())
                ok = ok and not any(vetoes(lower, budget) for lower in lowers.values())
        else:
            ok = all(s.heldout_select <= (1 + budget) * ref["heldout_select"] + 1e-9
                     for ref in (base, start))
    if s.longform is not None and LONGFORM in start:
        ok = ok and s.longform <= (1 + budget) * start[LONGFORM] + 1e-9
        ok = ok and s.timestamp_share >= (1 - budget) * start["timestamp_share"] - 1e-9
    return replace(s, vs_base=vs_base, vs_start=vs_start, vs_base_upper=upper_base,
                   vs_start_upper=upper_start, by_language_lower=by_language,
                   within_budget=ok)


def language_lower(candidate: Edits, edits: dict[str, Edits], rows: list[int],
                   confidence: float) -> float:
    """How much worse than the worse of the base and start models one language surely is:
    the ``1 - confidence`` quantile of the error ratio over resamples of its utterances.
    ``candidate`` holds that language's edits only; ``edits`` the whole half's, by model,
    of which ``rows`` are the language's."""
    return max(bootstrap_ratio_quantile(candidate, [edits[ref][i] for i in rows],
                                        1 - confidence) for ref in ("base", "start"))


def vetoes(lower: float, budget: float) -> bool:
    """Whether a language's sure-loss bound (:func:`language_lower`) rules a candidate out."""
    return lower > 1 + budget + 1e-9


def _ratio(value: float, reference: float) -> float | None:
    return round(value / reference, 3) if reference else None


def guard_round(
    round_name: str,
    train_dir: Path,
    start_dir: Path,
    base_is_start: bool,
    sets: dict[str, pd.DataFrame],
    baseline_dir: Path,
    out_dir: Path,
    metrics_path: Path,
    curve_path: Path,
    language: str,
    task: str,
    params: ExportParams,
    evaluate: EvaluateParams,
) -> dict:
    """Score the round's candidates, write the winner to ``out_dir`` and record the choice.

    ``sets`` holds the ``validation`` and ``heldout_select`` frames that exist; the base
    model's transcripts of them come from ``baseline_dir`` (the evaluate-baseline stage).
    Every candidate is scored on validation and long-form; the held-out half only as
    ``choose`` asks for it (in the winner's order until one is within budget): the same
    choice as scoring all of them, for about a third of the held-out decoding.
    """
    sets = {name: frame for name, frame in sets.items() if name in SCORED_SETS}
    base, base_edits = _errors(sets, load_predictions(sets, baseline_dir), language)
    # per set (validation, heldout_select), each model's per-utterance edits: "base" and
    # the candidates, whose start model is named "start"
    edits: dict[str, dict[str, Edits]] = {"validation": {}, "heldout_select": {}}

    def keep(name: str, model_edits: dict[str, Edits]) -> None:
        for set_name, per_utterance in model_edits.items():
            edits[set_name][name] = per_utterance

    keep("base", base_edits)
    heldout = {name: frame for name, frame in sets.items() if name == "heldout_select"}
    in_domain = {name: frame for name, frame in sets.items() if name not in heldout}
    if not heldout:
        log.warning("guard %s: no held-out set (evaluate.heldout): forgetting cannot be "
                    "checked; choosing on validation alone", round_name)
    scored: list[Scored] = []
    start: dict[str, float] = {}
    with tempfile.TemporaryDirectory(prefix="tubetune-guard-") as tmp:
        models: dict[str, Path] = {}

        def score(candidate: Candidate, named: dict[str, pd.DataFrame]) -> dict[str, float]:
            errors, candidate_edits = _errors(named, transcribe_sets(
                named, models[candidate.name], language, task, evaluate), language)
            keep(candidate.name, candidate_edits)
            return errors

        listed = candidates(train_dir, params)
        for candidate in listed:
            if candidate.a == 0 and base_is_start:
                errors = base
                keep(candidate.name, base_edits)
            else:
                models[candidate.name] = _ct2_candidate(candidate, start_dir, train_dir,
                                                        Path(tmp))
                errors = score(candidate, in_domain)
                if candidate.a == 0 and heldout:  # the reference of every held-out ratio
                    errors |= score(candidate, heldout)
            if candidate.a == 0:
                start = errors
            scored.append(_scored(candidate.name, candidate.a, errors))
            log.info("guard %s: %s: %s", round_name, candidate.name, errors)
        by_name = {c.name: c for c in listed}

        def fill_heldout(s: Scored) -> Scored:
            """Decode the held-out half language by language, smallest first, and stop at
            a language that vetoes the candidate (``mark`` would veto it the same way)."""
            frame = heldout["heldout_select"]
            groups = language_rows(frame, language) or {}
            order = sorted(groups, key=lambda lang: (len(groups[lang]), lang))
            texts: list[str] = [""] * len(frame)
            for lang in order:
                rows = groups[lang]
                part = {"heldout_select": frame.iloc[rows].reset_index(drop=True)}
                found = transcribe_sets(part, models[s.name], language, task, evaluate)
                for i, text in zip(rows, found.texts["heldout_select"], strict=True):
                    texts[i] = text
                if len(order) > 1 and lang != order[-1]:
                    _, part_edits = _errors(part, found, language)
                    lower = language_lower(part_edits["heldout_select"],
                                           edits["heldout_select"], rows,
                                           params.heldout_confidence)
                    if vetoes(lower, params.max_heldout_regression):
                        log.info("guard %s: %s: %s %.3f x its reference or worse: vetoed, "
                                 "the other languages not decoded", round_name, s.name, lang,
                                 lower)
                        return replace(s, within_budget=False,
                                       by_language_lower=f"{lang} {lower:.3f} (vetoed)")
            errors, found_edits = _errors(heldout, Predictions({"heldout_select": texts}),
                                          language)
            keep(s.name, found_edits)
            log.info("guard %s: %s: %s", round_name, s.name, errors)
            return replace(s, heldout_select=errors["heldout_select"])

        marked, winner = choose(scored, base, start,
                                params.max_heldout_regression, edits["heldout_select"] or None,
                                params.heldout_confidence, fill_heldout if heldout else None,
                                language_rows(heldout.get("heldout_select"), language),
                                edits["validation"], params.validation_confidence)
    if winner.a == 0:
        log.warning("guard %s: NO fine-tuned candidate kept the held-out error within %.0f %% "
                    "of the base and start models: round %s hands on its START MODEL unchanged",
                    round_name, 100 * params.max_heldout_regression, round_name)
    with atomic_path(out_dir) as tmp_out:
        write_candidate(by_name[winner.name], start_dir, train_dir, tmp_out)
    record = {
        "chosen": winner.name, "a": winner.a, "validation": winner.validation,
        "heldout_select": winner.heldout_select, "vs_base": winner.vs_base,
        "vs_base_upper": winner.vs_base_upper,
        "longform": winner.longform, "timestamp_share": winner.timestamp_share,
        "kept_start_model": winner.a == 0, "budget": params.max_heldout_regression,
    }
    if winner.by_language_lower:
        record["by_language_lower"] = winner.by_language_lower
    atomic_write_text(metrics_path, json.dumps(record, indent=2) + "\n")
    with atomic_path(curve_path) as tmp_csv:
        pd.DataFrame([asdict(s) for s in marked]).to_csv(tmp_csv, index=False,
                                                        lineterminator="\n")
    log.info("guard %s: chose %s (validation %s, held-out %s, %s x base)", round_name,
             winner.name, winner.validation, winner.heldout_select, winner.vs_base)
    return record
