"""Score models on the test split: WER, CER, edit counts, real-time factor, per utterance.

The baseline (the model before fine-tuning) is always scored with the same engine and
settings as the fine-tuned model, on the same utterances, so the difference means something.
"""

from __future__ import annotations

import json
import logging
import time
from pathlib import Path

import pandas as pd
from tqdm import tqdm

from tubetune.audio import load_audio
from tubetune.fsutil import atomic_path, atomic_write_text
from tubetune.metrics import error_rates, utterance_error_rate
from tubetune.params import EvaluateParams
from tubetune.teacher import FasterWhisperTranscriber

log = logging.getLogger(__name__)


def transcribe_manifest(
    frame: pd.DataFrame, model_dir: Path, language: str, task: str, params: EvaluateParams
) -> tuple[list[str], float]:
    """Transcripts of every row's audio and the real-time factor of doing so."""
    model = FasterWhisperTranscriber(model_dir, params.device, params.compute_type)
    texts, busy = [], 0.0
    for row in tqdm(frame.itertuples(index=False), total=len(frame), desc=f"eval {model_dir}"):
        audio = load_audio(Path(row.path))
        started = time.perf_counter()
        result = model.transcribe(audio, row.language or language, task, params.beam_size)
        busy += time.perf_counter() - started
        texts.append(result.text)
    audio_s = float(frame["duration_s"].sum()) or 1.0
    return texts, busy / audio_s


def evaluate_models(
    test_csv: Path,
    models: dict[str, Path],
    predictions_path: Path,
    metrics_path: Path,
    language: str,
    task: str,
    params: EvaluateParams,
) -> dict[str, dict]:
    """Score each named model on ``test_csv``; write per-utterance CSV and metrics JSON."""
    frame = pd.read_csv(test_csv, dtype={"path": str, "text": str, "language": str},
                        keep_default_na=False)
    if frame.empty:
        raise ValueError(f"evaluate: {test_csv} has no utterances")
    out = frame[["path", "source", "item", "start_ms", "end_ms", "reference", "text"]].copy()
    metrics: dict[str, dict] = {
        "test": {"utterances": len(frame), "hours": round(frame["duration_s"].sum() / 3600, 4),
                 "reference": ",".join(sorted(set(frame["reference"])))}
    }
    for name, model_dir in models.items():
        hyps, rtf = transcribe_manifest(frame, model_dir, language, task, params)
        out[name] = hyps
        out[f"{name}_error"] = [
            utterance_error_rate(r.text, h, r.language or language)
            for r, h in zip(frame.itertuples(index=False), hyps, strict=True)
        ]
        rates = error_rates(frame["text"].tolist(), hyps, language)
        metrics[name] = {**rates.as_dict(), "rtf": round(rtf, 3)}
        log.info("evaluate %s: WER %.2f CER %.2f RTF %.3f", name, rates.wer, rates.cer, rtf)
    if "baseline" in metrics and "finetuned" in metrics:
        for key in ("wer", "cer"):
            base = metrics["baseline"][key]
            change = (metrics["finetuned"][key] - base) / base * 100 if base else 0.0
            metrics[f"relative_{key}_change_pct"] = round(change, 2)
    with atomic_path(predictions_path) as tmp:
        out.to_csv(tmp, index=False, lineterminator="\n")
    atomic_write_text(metrics_path, json.dumps(metrics, indent=2) + "\n")
    return metrics
