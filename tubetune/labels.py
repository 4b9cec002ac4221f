"""Pseudo-labelling: transcribe each chunk with the teacher, keep the trustworthy labels.

Every chunk ends in exactly one of two CSVs: ``labels.csv`` (kept, with the teacher's
scores so later filters can be tuned without re-transcribing) or ``rejects.csv`` (with the
reason). Floats are rounded so the CSVs are byte-identical across runs.
"""

from __future__ import annotations

import logging
from dataclasses import asdict
from pathlib import Path

import pandas as pd
from tqdm import tqdm

from tubetune.audio import load_audio
from tubetune.fsutil import atomic_path
from tubetune.items import ItemReport
from tubetune.params import LabelParams
from tubetune.teacher import FasterWhisperTranscriber, Transcript
from tubetune.text import clean_target

log = logging.getLogger(__name__)

LABEL_COLUMNS = [
    "path", "text", "source", "item", "start_ms", "end_ms", "duration_s", "language",
    "language_probability", "avg_logprob", "no_speech_prob", "compression_ratio", "num_tokens",
]


def rejection_reason(t: Transcript, params: LabelParams) -> str | None:
    """Why a pseudo-label should not be trained on, or None to keep it."""
    if not t.text:
        return "empty text"
    if t.no_speech_prob > params.max_no_speech_prob and t.avg_logprob < params.min_avg_logprob:
        return f"no speech (no_speech_prob {t.no_speech_prob:.2f})"
    if t.avg_logprob < params.min_avg_logprob:
        return f"low confidence (avg_logprob {t.avg_logprob:.2f})"
    if t.compression_ratio > params.max_compression_ratio:
        return f"repetitive (compression ratio {t.compression_ratio:.2f})"
    return None


def label_source(
    segments_dir: Path,
    out_dir: Path,
    source: str,
    model_dir: Path,
    language: str | None,
    task: str,
    params: LabelParams,
) -> ItemReport:
    """Transcribe every chunk of ``segments_dir/segments.csv`` into ``out_dir``."""
    report = ItemReport("pseudo-label", source)
    chunks = pd.read_csv(segments_dir / "segments.csv", dtype={"item": str, "path": str})
    teacher = FasterWhisperTranscriber(
        model_dir, params.device, params.compute_type, params.cpu_threads
    )
    kept, rejected = [], []
    for row in tqdm(chunks.itertuples(index=False), total=len(chunks), desc=f"label {source}"):
        name = Path(row.path).name
        try:
            audio = load_audio(Path(row.path))
            t = teacher.transcribe(audio, language, task, params.beam_size, params.temperatures)
        except Exception as exc:  # one bad chunk must not sink the source
            report.fail(name, f"{type(exc).__name__}: {exc}")
            continue
        record = {
            "path": row.path, "source": source, "item": row.item,
            "start_ms": row.start_ms, "end_ms": row.end_ms,
            "duration_s": round((row.end_ms - row.start_ms) / 1000, 3),
            **asdict(t), "text": clean_target(t.text),
        }
        reason = rejection_reason(t, params)
        if reason:
            rejected.append({**record, "reason": reason})
            report.skip(name, reason)
        else:
            kept.append(record)
            report.ok.append(name)
    _write_csv(kept, LABEL_COLUMNS, out_dir / "labels.csv")
    _write_csv(rejected, [*LABEL_COLUMNS, "reason"], out_dir / "rejects.csv")
    report.finish(out_dir / "report.json")
    return report


def _write_csv(rows: list[dict], columns: list[str], path: Path) -> None:
    frame = pd.DataFrame(rows, columns=columns).sort_values(["item", "start_ms"], kind="stable")
    for col in ("language_probability", "avg_logprob", "no_speech_prob", "compression_ratio"):
        frame[col] = frame[col].astype(float).round(4)
    with atomic_path(path) as tmp:
        frame.to_csv(tmp, index=False, lineterminator="\n")
