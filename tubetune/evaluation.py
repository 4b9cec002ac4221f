"""Score models on the test split, a held-out set and whole videos: WER, CER, edits, RTF.

The baseline (the model before fine-tuning) and every fine-tuning round are scored with
the same engine and settings on the same utterances, so differences mean something. The
baseline's predictions are made once, by their own stage, so experiments that only change
training do not transcribe everything with the base model again. A second held-out set of a
different kind catches a model that got better on its own domain by forgetting everything
else. Long-form sets transcribe whole test videos through the project's own long-form path
(:func:`tubetune.transcribe.transcribe_long`): cut at pauses by VAD (what serve does) and
decoded window by window (what decoders without VAD do, which depends on timestamps).
Utterances are decoded on every CPU core at once (:class:`Decoder`), with the transcripts of
one model decoding them in order.
"""

from __future__ import annotations

import json
import logging
import math
import os
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd
from tqdm import tqdm

from tubetune.audio import load_audio
from tubetune.constants import SAMPLE_RATE
from tubetune.engines import (
    DecodeOptions,
    FasterWhisperTranscriber,
    FirstPass,
    pick_beam_size,
    pick_device,
)
from tubetune.errors import StageError
from tubetune.fsutil import atomic_path, atomic_write_text
from tubetune.metrics import Edits, bootstrap_ratio_quantile, set_error_rates, utterance_edits
from tubetune.params import EvaluateParams
from tubetune.split import LONGFORM_CSV, external_rows

log = logging.getLogger(__name__)

PREDICTION_COLUMNS = ["set", "path", "source", "item", "start_ms", "end_ms", "reference", "text"]
LONGFORM_MODES = {"longform_vad": True, "longform_sequential": False}  # set -> VAD filter


MAX_WINDOW_S = 30.0  # longer utterances span several windows: decoded whole, in order


class Decoder:
    """One model's evaluation decodes: utterances on every CPU core at once, with the
    transcripts that one model decoding them in order gives.

    A decode at temperature 0 draws no random numbers, so first passes run on ``workers``
    single-threaded CTranslate2 replicas sharing the weights (as pseudo-labelling does,
    :mod:`tubetune.sharding`; one thread per core beats one model's threads on short clips).
    What may sample (an utterance whose first pass asks for Whisper's temperature fallback,
    one longer than a window, every long-form video) goes to one seeded single-replica model,
    in set and row order: its draws are then a sequential decoder's, draw for draw. On GPU
    there is one model (``workers`` 1), as before.
    """

    def __init__(self, ct2_dir: Path, params: EvaluateParams, workers: int | str = "auto"):
        from tubetune.sharding import TeacherSpec, auto_workers, gpu_count

        spec = TeacherSpec("faster-whisper", ct2_dir, ct2_dir, params.device,
                           params.compute_type)
        if workers == "auto":
            workers = 1 if gpu_count(spec) else auto_workers(spec, os.cpu_count() or 1)
        self.workers = int(workers)
        self.ct2_dir, self.params = ct2_dir, params
        self.device = pick_device(params.device)
        self._sequential: FasterWhisperTranscriber | None = None
        self._parallel: FasterWhisperTranscriber | None = None

    @property
    def sequential(self) -> FasterWhisperTranscriber:
        """The seeded single-replica model (loaded on first use)."""
        if self._sequential is None:
            self._sequential = FasterWhisperTranscriber(self.ct2_dir, self.device,
                                                        self.params.compute_type)
        return self._sequential

    @property
    def parallel(self) -> FasterWhisperTranscriber:
        """``workers`` single-threaded replicas (the sequential model when ``workers`` is 1)."""
        if self.workers == 1:
            return self.sequential
        if self._parallel is None:
            self._parallel = FasterWhisperTranscriber(self.ct2_dir, self.device,
                                                      self.params.compute_type, cpu_threads=1,
                                                      replicas=self.workers)
        return self._parallel


def transcribe_manifest(
    frame: pd.DataFrame, decoder: Decoder, language: str, task: str, beam_size: int,
) -> tuple[list[str], float]:
    """Transcripts of every row's audio and the real-time factor (wall time) of making them."""
    started = time.perf_counter()
    rows = list(frame.itertuples(index=False))
    options = [DecodeOptions(row.language or language, task, beam_size) for row in rows]
    model = decoder.parallel

    def first(i: int) -> tuple[int, FirstPass | None]:
        audio = load_audio(Path(rows[i].path))
        if len(audio) > MAX_WINDOW_S * SAMPLE_RATE:  # each window may fall back: sequential
            return len(audio), None
        return len(audio), model.first_pass([audio], options[i])[0]

    with ThreadPoolExecutor(decoder.workers) as pool:
        firsts = list(tqdm(pool.map(first, range(len(rows))), total=len(rows),
                           desc="evaluate"))
    texts = []
    for row, option, (_, first_pass) in zip(rows, options, firsts, strict=True):
        if first_pass is not None and not first_pass.retry:
            texts.append(first_pass.transcript.text)
            continue
        audio = load_audio(Path(row.path))
        if first_pass is None:
            transcript = decoder.sequential.transcribe(audio, option.language, task, beam_size)
        else:
            transcript = decoder.sequential.retry(audio, first_pass, option)
        texts.append(transcript.text)
    seconds = sum(samples for samples, _ in firsts) / SAMPLE_RATE
    return texts, (time.perf_counter() - started) / (seconds or 1.0)


def _ct2_dir(model: Path, workdir: Path) -> Path:
    """A CTranslate2 dir for ``model`` (a Hugging Face dir is converted as the export does)."""
    if (model / "model.bin").is_file():
        return model
    from tubetune.conversion import convert_hf_to_ct2

    out = workdir / model.name
    convert_hf_to_ct2(model, out)
    return out


HELDOUT_SETS = ("heldout_select", "heldout")


def heldout_halves(frame: pd.DataFrame) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(selection half, report half) of the held-out set.

    Rows alternate between the halves within each ``kind`` (voice family) in path order, so
    both halves hold every kind. The forgetting guard selects on the first half; evaluate
    reports on the second, so the reported figure is not the one a choice was made on.
    """
    kinds = frame["kind"] if "kind" in frame else pd.Series("", index=frame.index)
    order = frame.assign(_kind=kinds).sort_values(["_kind", "path"], kind="stable")
    rank = order.groupby("_kind").cumcount()
    select = order[rank % 2 == 0].drop(columns="_kind")
    report = order[rank % 2 == 1].drop(columns="_kind")
    return select.reset_index(drop=True), report.reset_index(drop=True)


def _read_split(path: Path) -> pd.DataFrame:
    return pd.read_csv(path, dtype={"text": str, "language": str}, keep_default_na=False)


def load_sets(test_csv: Path, heldout: str | None, language: str,
              validation_csv: Path | None = None) -> dict[str, pd.DataFrame]:
    """The scored sets: ``test`` first, then ``validation`` (when given) and the held-out set's
    two halves ``heldout_select`` and ``heldout`` (when configured); empty ones are left out.
    An empty test split is an error: there would be nothing to compare."""
    sets = {"test": _read_split(test_csv)}
    if sets["test"].empty:
        raise StageError("the test split has no utterances")
    if validation_csv is not None:
        sets["validation"] = _read_split(validation_csv)
    if heldout:
        halves = heldout_halves(pd.DataFrame(external_rows(Path(heldout), language)))
        sets.update(zip(HELDOUT_SETS, halves, strict=True))
    return {name: frame for name, frame in sets.items() if not frame.empty}


def row_languages(frame: pd.DataFrame, default: str) -> list[str]:
    """The language each row is scored in: its own (an English held-out clip in a zh-TW
    pipeline is scored as English), else ``default``."""
    if "language" not in frame:
        return [default] * len(frame)
    return [language or default for language in frame["language"]]


def load_longform(split_dir: Path, split: str, modes: tuple[str, ...] = tuple(LONGFORM_MODES),
                  prefix: str = "") -> dict[str, pd.DataFrame]:
    """Whole ``split`` videos with subtitles as long-form sets (``prefix`` + mode name)."""
    path = split_dir / "longform" / LONGFORM_CSV
    if not path.is_file():
        return {}
    frame = pd.read_csv(path, dtype={"text": str, "language": str}, keep_default_na=False)
    frame = frame[frame["set"] == split].reset_index(drop=True)
    if frame.empty:
        return {}
    frame = frame.assign(start_ms=0, end_ms=(frame["duration_s"] * 1000).round().astype(int),
                         reference="subtitles")
    return {prefix + name: frame for name in modes}


STAGE_SETS = {  # which sets each stage scores
    "evaluate": ("test", "heldout", "longform_vad", "longform_sequential"),
    "guard": ("validation", "heldout_select", "validation_longform_sequential"),
}
STAGE_SETS["baseline"] = STAGE_SETS["evaluate"] + STAGE_SETS["guard"]


def stage_sets(split_dir: Path, heldout: str | None, language: str,
               stage: str) -> dict[str, pd.DataFrame]:
    """The sets ``stage`` (evaluate, guard or baseline) scores, from the split and the
    held-out CSV: the guard chooses on validation and the held-out selection half, evaluate
    reports on the test split and the other half, the baseline covers both."""
    sets = load_sets(split_dir / "test.csv", heldout, language, split_dir / "validation.csv")
    sets.update(load_longform(split_dir, "test"))
    sets.update(load_longform(split_dir, "validation", ("longform_sequential",), "validation_"))
    wanted = STAGE_SETS[stage]
    return {name: frame for name, frame in sets.items() if name in wanted}


@dataclass
class Predictions:
    """One model's transcripts per set, the real-time factor of making them, and for
    long-form sets the 30 s windows per video and how many a timestamp token closed."""

    texts: dict[str, list[str]] = field(default_factory=dict)
    rtf: dict[str, float] = field(default_factory=dict)
    windows: dict[str, list[tuple[int, int]]] = field(default_factory=dict)

    def timestamp_share(self, name: str) -> float | None:
        """Share of a long-form set's windows closed by a timestamp token."""
        if name not in self.windows:
            return None
        total = sum(w for w, _ in self.windows[name])
        return round(sum(c for _, c in self.windows[name]) / total, 4) if total else 1.0


def _longform_mode(name: str) -> bool | None:
    """The VAD setting of a long-form set's name; None for a set of utterances."""
    return next((vad for mode, vad in LONGFORM_MODES.items() if name.endswith(mode)), None)


def transcribe_sets(
    sets: dict[str, pd.DataFrame], model_dir: Path, language: str, task: str,
    params: EvaluateParams, workers: int | str = "auto",
) -> Predictions:
    """One model's transcripts of every set (utterances on ``workers`` replicas, see
    :class:`Decoder`; long-form sets whole)."""
    from tubetune.transcribe import transcribe_long

    out = Predictions()
    with tempfile.TemporaryDirectory(prefix="tubetune-eval-") as tmp:
        decoder = Decoder(_ct2_dir(model_dir, Path(tmp)), params, workers)
        beam_size = pick_beam_size(params.beam_size, decoder.device)
        for name, frame in sets.items():
            vad = _longform_mode(name)
            if vad is None:
                out.texts[name], out.rtf[name] = transcribe_manifest(
                    frame, decoder, language, task, beam_size)
                continue
            started, texts, windows = time.perf_counter(), [], []
            model = decoder.sequential.model
            for row in frame.itertuples(index=False):
                result = transcribe_long(model, row.path, row.language or language, task,
                                         beam_size, vad_filter=vad)
                texts.append(result.text)
                windows.append((result.windows, result.closed_windows))
            seconds = float(frame["duration_s"].sum()) or 1.0
            out.texts[name], out.windows[name] = texts, windows
            out.rtf[name] = (time.perf_counter() - started) / seconds
    return out


def save_predictions(sets: dict[str, pd.DataFrame], predictions: Predictions,
                     out_dir: Path) -> None:
    """``out_dir/predictions.csv`` (set, path, text, windows) and ``rtf.json``, atomically."""
    frames = []
    for name, f in sets.items():
        windows = predictions.windows.get(name, [(None, None)] * len(f))
        frames.append(pd.DataFrame({
            "set": name, "path": f["path"], "text": predictions.texts[name],
            "windows": [w for w, _ in windows], "closed_windows": [c for _, c in windows]}))
    frame = pd.concat(frames)
    with atomic_path(out_dir) as tmp:
        tmp.mkdir(parents=True)
        frame.to_csv(tmp / "predictions.csv", index=False, lineterminator="\n")
        (tmp / "rtf.json").write_text(json.dumps(
            {k: round(v, 4) for k, v in predictions.rtf.items()}, indent=2) + "\n")


def load_predictions(sets: dict[str, pd.DataFrame], out_dir: Path) -> Predictions:
    """What :func:`save_predictions` wrote, checked to cover exactly ``sets``' utterances."""
    frame = pd.read_csv(out_dir / "predictions.csv", dtype=str, keep_default_na=False)
    rtfs = json.loads((out_dir / "rtf.json").read_text())
    out = Predictions()
    for name, f in sets.items():
        rows = frame[frame["set"] == name]
        if rows["path"].tolist() != f["path"].tolist():
            raise StageError(f"{out_dir} holds predictions for other {name} utterances than "
                             f"the current ones; rerun the stage that writes it")
        out.texts[name], out.rtf[name] = rows["text"].tolist(), rtfs[name]
        if _longform_mode(name) is not None:
            out.windows[name] = [(int(w), int(c)) for w, c in
                                 zip(rows["windows"], rows["closed_windows"], strict=True)]
    return out


def evaluate_models(
    sets: dict[str, pd.DataFrame],
    predictions: dict[str, Predictions],
    predictions_path: Path,
    metrics_path: Path,
    language: str,
) -> dict[str, dict]:
    """Score each model's predictions (``baseline`` first) on each set; write the
    per-utterance CSV and the metrics JSON.

    ``sets`` (from :func:`load_sets`) maps a name (``test`` first) to a manifest frame; the
    test set's scores sit at the top of each model's metrics, other sets under their name.
    """
    metrics: dict[str, dict] = {
        "sets": {name: {"utterances": len(f), "hours": round(f["duration_s"].sum() / 3600, 4),
                        "reference": ",".join(sorted(set(f["reference"])))}
                 for name, f in sets.items()}
    }
    rows = {
        name: frame.assign(set=name)[PREDICTION_COLUMNS].copy() for name, frame in sets.items()
    }
    edits: dict[str, dict[str, Edits]] = {}
    for model_name, prediction in predictions.items():
        for set_name, frame in sets.items():
            hyps = prediction.texts[set_name]
            rows[set_name][model_name] = hyps
            per_utterance = edits.setdefault(model_name, {})[set_name] = utterance_edits(
                frame["text"].tolist(), hyps, row_languages(frame, language))
            rows[set_name][f"{model_name}_error"] = [  # None for an empty reference
                round(100.0 * (e / n), 2) if n else None for e, n in per_utterance]
            rates = {**set_error_rates(frame["text"].tolist(), hyps,
                                       row_languages(frame, language)).as_dict(),
                     "rtf": round(prediction.rtf[set_name], 3)}
            share = prediction.timestamp_share(set_name)
            if share is not None:
                rates["timestamp_share"] = share
            scores = metrics.setdefault(model_name, {})
            if set_name == "test":
                scores.update(rates)
            else:
                scores[set_name] = rates
            log.info("evaluate %s on %s: WER %.2f CER %.2f RTF %.3f%s", model_name, set_name,
                     rates["wer"], rates["cer"], rates["rtf"],
                     f" MER {rates['mer']:.2f}" if "mer" in rates else "")
    _relative_changes(metrics, [m for m in predictions if m != "baseline"])
    _ratio_intervals(metrics, edits)
    with atomic_path(predictions_path) as tmp_csv:
        pd.concat(rows.values()).to_csv(tmp_csv, index=False, lineterminator="\n")
    atomic_write_text(metrics_path, json.dumps(metrics, indent=2) + "\n")
    return metrics


def _relative_changes(metrics: dict[str, dict], tuned: list[str]) -> None:
    """Add ``relative_<metric>_change_pct`` (vs the baseline) to each fine-tuned model."""
    base = metrics.get("baseline")
    if not base:
        return
    for name in tuned:
        scores = metrics[name]
        for key in ("wer", "cer"):
            if base[key]:
                scores[f"relative_{key}_change_pct"] = round(
                    (scores[key] - base[key]) / base[key] * 100, 2
                )
        for set_name, rates in list(scores.items()):
            if isinstance(rates, dict) and isinstance(base.get(set_name), dict):
                for key in ("wer", "cer", "mer"):
                    if base[set_name].get(key) and key in rates:
                        rates[f"relative_{key}_change_pct"] = round(
                            (rates[key] - base[set_name][key]) / base[set_name][key] * 100, 2
                        )


def _ratio_intervals(metrics: dict[str, dict], edits: dict[str, dict[str, Edits]]) -> None:
    """Add ``vs_base`` (errors / the baseline's errors) and ``vs_base_90`` (its 5 % and 95 %
    quantiles over paired bootstrap resamples of the utterances) to each fine-tuned model on
    each set of several utterances: how large a difference the set's size can tell from
    luck. None for a bound where a resample holds no baseline error."""
    base = edits.get("baseline")
    if not base:
        return
    for name, per_set in edits.items():
        for set_name, per_utterance in per_set.items():
            reference = base[set_name]
            errors = sum(e for e, _ in reference)
            if name == "baseline" or len(reference) < 2 or not errors:
                continue
            scores = metrics[name] if set_name == "test" else metrics[name][set_name]
            scores["vs_base"] = round(sum(e for e, _ in per_utterance) / errors, 3)
            bounds = (bootstrap_ratio_quantile(per_utterance, reference, q) for q in (0.05, 0.95))
            scores["vs_base_90"] = [round(b, 3) if math.isfinite(b) else None for b in bounds]


HEADLINE_SETS = {"test": "test", "heldout": "heldout", "longform": "longform_sequential"}
HEADLINE_UNITS = {"word": "wer", "char": "cer", "mixed": "mer"}  # a set's unit -> its metric


def headline(metrics: dict[str, dict], hours_trained: float,
             guard: dict | None) -> dict[str, float | str]:
    """The handful of figures people compare across experiments (``dvc exp show``): the
    headline error (CER for zh/ja/ko/th, else WER; MER for a set of several languages) of
    the exported model and of the base on each set, the long-form timestamp share, the
    hours trained on and the guard's choice."""
    out: dict[str, float | str] = {}
    for label, name in HEADLINE_SETS.items():
        for model, suffix in (("finetuned", ""), ("baseline", "_base")):
            scores = metrics.get(model, {})
            scores = scores if name == "test" else scores.get(name)
            if scores:
                unit = HEADLINE_UNITS[scores["unit"]]  # each set's own language(s)
                out[f"{label}_{unit}{suffix}"] = scores[unit]
                if "cer_script_insensitive" in scores and not suffix:
                    out[f"{label}_cer_script_insensitive"] = scores["cer_script_insensitive"]
    for model, suffix in (("finetuned", ""), ("baseline", "_base")):
        share = metrics.get(model, {}).get("longform_sequential", {}).get("timestamp_share")
        if share is not None:
            out[f"timestamp_share{suffix}"] = share
    out["hours_trained"] = round(hours_trained, 4)
    if guard:
        out["guard_choice"] = guard["chosen"]
    return out


def render_headline(summary: dict[str, float | str]) -> str:
    """The headline as a short table: base vs exported per set, and the relative change."""
    lines = [f"{'':<26}{'base':>9}{'exported':>10}{'change':>9}"]
    for key, tuned in summary.items():
        base = summary.get(f"{key}_base")
        if key.endswith("_base") or base is None:
            continue
        change = f"{(tuned - base) / base * 100:+.0f} %" if base else ""
        lines.append(f"{key.replace('_', ' '):<26}{base:>9.2f}{tuned:>10.2f}{change:>9}")
    extra = [f"{k.replace('_', ' ')}: {v}" for k, v in summary.items()
             if not k.endswith("_base") and f"{k}_base" not in summary]
    return "\n".join(lines + extra)


def render_intervals(metrics: dict[str, dict], model: str = "finetuned") -> str:
    """One line per set: ``model``'s errors as a multiple of the base's, with the 90 %
    bootstrap interval (see ``_ratio_intervals``), so a small set's change reads as such."""
    lines = []
    for set_name, scores in [("test", metrics.get(model, {})),
                             *metrics.get(model, {}).items()]:
        if isinstance(scores, dict) and "vs_base_90" in scores:
            low, high = (f"{b:.2f}" if b is not None else "?" for b in scores["vs_base_90"])
            lines.append(f"{set_name}: {scores['vs_base']:.2f}x the base's errors (90 % "
                         f"interval {low}-{high}, {metrics['sets'][set_name]['utterances']} "
                         "utterances)")
    return "\n".join(lines)


def comparison_table(metrics: dict[str, dict], path: Path) -> None:
    """One row per model and set (WER, CER): the data of the comparison plot."""
    rows = []
    for model, scores in metrics.items():
        if model == "sets":
            continue
        rows.append({"model": model, "set": "test", "wer": scores["wer"], "cer": scores["cer"]})
        for set_name, rates in scores.items():
            if isinstance(rates, dict):
                rows.append({"model": model, "set": set_name, "wer": rates["wer"],
                             "cer": rates["cer"]})
    with atomic_path(path) as tmp:
        pd.DataFrame(rows).to_csv(tmp, index=False, lineterminator="\n")
