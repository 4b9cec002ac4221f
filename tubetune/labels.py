"""Labels for the training chunks: subtitles where the video has them, the teacher elsewhere.

Every chunk is transcribed by the teacher. With ``source: auto`` (default) a chunk whose
video has uploader subtitles takes the subtitle text (cut to the chunk's times) as its
label, and the teacher's transcript serves as a check: a chunk where the two disagree
(subtitles out of sync, not verbatim, or cut mid-cue) is rejected. ``pseudo`` always uses
the teacher; ``subtitles`` uses only chunks that have subtitles.

Every chunk ends in exactly one of two CSVs: ``labels.csv`` (kept, with the teacher's
scores so filters can be tuned without re-transcribing) or ``rejects.csv`` (with the
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
from tubetune.metrics import utterance_error_rate
from tubetune.params import LabelParams
from tubetune.subtitles import Cue, cut_fraction, pick_subtitle, read_vtt, text_in_span
from tubetune.teacher import FasterWhisperTranscriber, Transcript
from tubetune.text import clean_target

log = logging.getLogger(__name__)

LABEL_COLUMNS = [
    "path", "text", "label_source", "source", "item", "start_ms", "end_ms", "duration_s",
    "language", "language_probability", "avg_logprob", "no_speech_prob", "compression_ratio",
    "num_tokens", "pseudo_text", "disagreement",
]
FLOAT_COLUMNS = ("language_probability", "avg_logprob", "no_speech_prob", "compression_ratio")


def teacher_rejection(t: Transcript, params: LabelParams) -> str | None:
    """Why the teacher's transcript is not a usable label, or None."""
    if not t.text:
        return "empty text"
    if t.no_speech_prob > params.max_no_speech_prob and t.avg_logprob < params.min_avg_logprob:
        return f"no speech (no_speech_prob {t.no_speech_prob:.2f})"
    if t.avg_logprob < params.min_avg_logprob:
        return f"low confidence (avg_logprob {t.avg_logprob:.2f})"
    if t.compression_ratio > params.max_compression_ratio:
        return f"repetitive (compression ratio {t.compression_ratio:.2f})"
    return None


def subtitle_rejection(
    subtitle: str, cut: float, disagreement: float | None, params: LabelParams
) -> str | None:
    """Why a chunk's subtitle text is not a usable label, or None."""
    if not subtitle:
        return "no subtitle text in the chunk"
    if cut > params.max_subtitle_cut:
        return f"subtitle cues cut by the chunk edges ({cut:.0%} of the chunk's subtitle time)"
    if disagreement is not None and disagreement > params.max_subtitle_disagreement:
        return f"subtitle and teacher disagree (error rate {disagreement:.0f}%)"
    return None


def _item_cues(raw_dir: Path, language: str | None) -> dict[str, list[Cue]]:
    """Subtitle cues per item of a download manifest (items without subtitles left out)."""
    manifest_path = raw_dir / "manifest.csv"
    if not manifest_path.is_file():
        return {}
    manifest = pd.read_csv(manifest_path, dtype=str, keep_default_na=False)
    cues = {}
    for row in manifest.itertuples(index=False):
        path = pick_subtitle(raw_dir, row.subtitles, row.language or language or "")
        if path is not None:
            cues[row.item] = read_vtt(path)
    return cues


def label_source(
    segments_dir: Path,
    raw_dir: Path,
    out_dir: Path,
    source: str,
    model_dir: Path,
    language: str | None,
    task: str,
    params: LabelParams,
) -> ItemReport:
    """Label every chunk of ``segments_dir/segments.csv`` into ``out_dir``."""
    report = ItemReport("pseudo-label", source)
    chunks = pd.read_csv(segments_dir / "segments.csv", dtype={"item": str, "path": str})
    cues = _item_cues(raw_dir, language) if params.source != "pseudo" else {}
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
        pseudo = clean_target(t.text)
        record = {
            "path": row.path, "source": source, "item": row.item,
            "start_ms": row.start_ms, "end_ms": row.end_ms,
            "duration_s": round((row.end_ms - row.start_ms) / 1000, 3),
            **asdict(t), "pseudo_text": pseudo, "disagreement": None,
        }
        if row.item in cues:
            item_cues = cues[row.item]
            subtitle = clean_target(text_in_span(item_cues, row.start_ms, row.end_ms))
            cut = cut_fraction(item_cues, row.start_ms, row.end_ms)
            disagreement = utterance_error_rate(subtitle, pseudo, language) if subtitle else None
            record.update(text=subtitle, label_source="subtitles", disagreement=disagreement)
            reason = subtitle_rejection(subtitle, cut, disagreement, params)
        elif params.source == "subtitles":
            record.update(text="", label_source="none")
            reason = "video has no subtitles (labels.source: subtitles)"
        else:
            record.update(text=pseudo, label_source="pseudo")
            reason = teacher_rejection(t, params)
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
    for col in FLOAT_COLUMNS:
        frame[col] = frame[col].astype(float).round(4)
    with atomic_path(path) as tmp:
        frame.to_csv(tmp, index=False, lineterminator="\n")
