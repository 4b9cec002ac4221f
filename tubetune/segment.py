"""Cut resampled 16 kHz mono audio into training chunks, streaming, one chunk file per span.

Two methods:

- ``fixed``: the seed's windows (10 s every 8 s by default). Simple, but cuts words in half.
- ``vad``: Silero VAD (the ONNX model shipped in faster-whisper) finds speech; chunks are cut
  at pauses, adjacent speech is grouped into the fewest chunks of at most ``max_s`` (Whisper's
  30 s window: each chunk costs one full window to label and train on), cutting at the longest
  pauses among those groupings, over-long speech is split at its quietest point, and each chunk
  gets up to ``pad_ms`` of the neighbouring silence without overlapping its neighbours.

VAD reads per-window speech scores (tubetune.vad) that the resample stage stored next to each
WAV right after writing it; without them (the transcribe CLI, a WAV from elsewhere)
they are computed here, streaming. Chunks are written one at a time, so memory stays flat
however long the file is.

Layout: one folder per source (``data/segments/S``, one DVC output per ``segment@S``), one WAV
per chunk. Adding a source reruns only that source. Cost measured by benchmarks/prep.py: a
no-op ``dvc status`` over 50 folders x 400 chunks (20,000 files, each checked twice: as
``segment@S`` output and as the dependency of an aggregate stage) took 3.8 s on a quiet
2-core machine (5.6-7.2 s loaded), of which about 2.2 s is dvc's own start-up; one stage's
400 files cost about the same as none. Sharding chunks into fewer files is the lever if
that grows too slow.
"""

from __future__ import annotations

import logging
import math
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import soundfile as sf
from tqdm import tqdm

from tubetune.audio import AUDIO_CSV, REPORT_JSON, MediaError, read_table
from tubetune.fsutil import atomic_path, atomic_write_text
from tubetune.items import ItemReport
from tubetune.vad import SAMPLE_RATE as VAD_SAMPLE_RATE
from tubetune.vad import WINDOW_MS as _WINDOW_MS
from tubetune.vad import load_scores

with warnings.catch_warnings():
    # pydub warns at import when no ffmpeg is on PATH (we only use its pure-Python WAV export)
    # and about the deprecated audioop module it imports.
    warnings.simplefilter("ignore", RuntimeWarning)
    warnings.simplefilter("ignore", DeprecationWarning)
    from pydub import AudioSegment

log = logging.getLogger(__name__)

METHODS = ("fixed", "vad")
SEGMENTS_CSV = "segments.csv"
SEGMENT_COLUMNS = ["source", "item", "start_ms", "end_ms", "duration_s", "path"]
WHISPER_WINDOW_S = 30.0

_MIN_SPEECH_RATIO = 0.5
"""A chunk must be at least this much speech: never a chunk that is mostly silence."""
_SMOOTH_WINDOWS = 5
"""Energy is averaged over this many windows (160 ms) before picking a split point."""


@dataclass(frozen=True, order=True)
class Span:
    """A chunk of one file, in milliseconds from its start."""

    start_ms: int
    end_ms: int


def chunk_name(item: str, span: Span) -> str:
    """Deterministic chunk file name: ``<item>_<start_ms:09d>_<end_ms:09d>.wav``."""
    return f"{item}_{span.start_ms:09d}_{span.end_ms:09d}.wav"


def _ms(seconds: float) -> int:
    return round(seconds * 1000)


def _check_fixed(length_s: float, overlap_s: float, min_s: float) -> None:
    """Raise ValueError naming the first bad fixed-window parameter."""
    if not 0 < _ms(length_s) <= _ms(WHISPER_WINDOW_S):
        raise ValueError(f"length_s must be > 0 and <= {WHISPER_WINDOW_S:g}, got {length_s}")
    if not 0 <= _ms(overlap_s) < _ms(length_s):
        raise ValueError(f"overlap_s must be >= 0 and < length_s ({length_s}), got {overlap_s}")
    if not 0 <= _ms(min_s) <= _ms(length_s):
        raise ValueError(f"min_s must be >= 0 and <= length_s ({length_s}), got {min_s}")


def _check_vad(min_s: float, max_s: float, pad_ms: int, threshold: float) -> None:
    """Raise ValueError naming the first bad VAD parameter."""
    if not 0 < _ms(max_s) <= _ms(WHISPER_WINDOW_S):
        raise ValueError(f"max_s must be > 0 and <= {WHISPER_WINDOW_S:g}, got {max_s}")
    if not 0 <= _ms(min_s) < _ms(max_s):
        raise ValueError(f"min_s must be >= 0 and < max_s ({max_s}), got {min_s}")
    if pad_ms < 0 or 2 * pad_ms >= _ms(max_s) - _ms(min_s):
        raise ValueError(
            f"pad_ms must be >= 0 and 2 * pad_ms < (max_s - min_s) * 1000, got {pad_ms}"
        )
    if not 0 < threshold < 1:
        raise ValueError(f"threshold must be between 0 and 1, got {threshold}")


def fixed_spans(duration_ms: int, length_s: float, overlap_s: float, min_s: float) -> list[Span]:
    """Windows of ``length_s`` starting every ``length_s - overlap_s``, up to the end.

    The last window ends at the end of the audio (so it may be short) and is kept when it
    lasts at least ``min_s``; no window starts after one has reached the end.
    """
    _check_fixed(length_s, overlap_s, min_s)
    length_ms, min_ms = _ms(length_s), _ms(min_s)
    step_ms = length_ms - _ms(overlap_s)
    spans: list[Span] = []
    start = 0
    while start < duration_ms:
        end = min(start + length_ms, duration_ms)
        if end - start >= min_ms:
            spans.append(Span(start, end))
        if end >= duration_ms:
            break
        start += step_ms
    return spans


def _speech_runs(
    probs: np.ndarray, threshold: float, min_silence_windows: int, min_speech_windows: int
) -> list[tuple[int, int]]:
    """Speech runs as (first window, end window) with Silero's hysteresis.

    Speech starts at a window >= ``threshold`` and ends at the first window of a stretch of
    ``min_silence_windows`` windows below ``threshold - 0.15`` (values in between neither
    start nor end speech). Runs shorter than ``min_speech_windows`` are dropped (clicks).
    """
    neg_threshold = max(threshold - 0.15, 0.01)
    runs: list[tuple[int, int]] = []
    start: int | None = None
    silence_from: int | None = None
    for i, prob in enumerate(probs.tolist()):
        if start is None:
            if prob >= threshold:
                start, silence_from = i, None
        elif prob >= threshold:
            silence_from = None
        elif prob < neg_threshold:
            if silence_from is None:
                silence_from = i
            if i + 1 - silence_from >= min_silence_windows:
                runs.append((start, silence_from))
                start = None
    if start is not None:
        runs.append((start, len(probs) if silence_from is None else silence_from))
    return [(a, b) for a, b in runs if b - a >= min_speech_windows]


def _split_long(
    start: int, end: int, energy: np.ndarray, max_ms: int, min_ms: int
) -> list[tuple[int, int]]:
    """Split a speech run longer than ``max_ms`` at its quietest points (in ms).

    Each cut is searched where both the piece before it (<= ``max_ms``) and the rest (fits in
    the remaining pieces) stay legal and, when possible, no piece is shorter than ``min_ms``.
    """
    pieces: list[tuple[int, int]] = []
    while end - start > max_ms:
        rest = (math.ceil((end - start) / max_ms) - 1) * max_ms
        lo, hi = max(start + min_ms, end - rest), min(start + max_ms, end - min_ms)
        if lo > hi:  # min_ms cannot be honoured; keep pieces <= max_ms
            lo, hi = end - rest, start + max_ms
        first = math.ceil((lo - _WINDOW_MS // 2) / _WINDOW_MS)
        last = min((hi - _WINDOW_MS // 2) // _WINDOW_MS, len(energy) - 1)
        if first > last:
            cut = hi
        else:
            quietest = first + int(np.argmin(energy[first : last + 1]))
            cut = min(max(quietest * _WINDOW_MS + _WINDOW_MS // 2, lo), hi)
        pieces.append((start, cut))
        start = cut
    pieces.append((start, end))
    return pieces


def _merge(
    pieces: list[tuple[int, int]], max_ms: int, max_gap_ms: int
) -> list[tuple[int, int, int]]:
    """Group adjacent speech pieces into the fewest chunks, cut at the longest pauses.

    A chunk is a run of pieces that lasts at most ``max_ms``, bridges no pause over
    ``max_gap_ms`` and stays mostly speech. Whisper encodes a full 30 s window per chunk
    whatever its length, so the fewest chunks is the cheapest cover of the speech to label
    and train on; among partitions with that count, the one whose cuts have the largest
    product of pause lengths wins (cuts at long pauses, sentence ends, over short ones).
    Exact dynamic programming over the pieces. Returns (start, end, speech ms) per chunk.
    """
    n = len(pieces)
    best: list[tuple[int, float]] = [(0, 0.0)] + [(n + 1, 0.0)] * n  # best[j]: pieces[:j]
    first: list[int] = [0] * (n + 1)  # first piece of the last chunk of best[j]
    for j in range(1, n + 1):
        speech = 0
        for i in range(j - 1, -1, -1):
            if i < j - 1 and pieces[i + 1][0] - pieces[i][1] > max_gap_ms:
                break
            span = pieces[j - 1][1] - pieces[i][0]
            if span > max_ms:
                break
            speech += pieces[i][1] - pieces[i][0]
            if speech < _MIN_SPEECH_RATIO * span:
                continue
            count, penalty = best[i]
            if i:  # a cut before piece i: short pauses cost more
                penalty -= math.log(max(pieces[i][0] - pieces[i - 1][1], 1))
            if (count + 1, penalty) < best[j]:
                best[j], first[j] = (count + 1, penalty), i
    chunks: list[tuple[int, int, int]] = []
    j = n
    while j:
        i = first[j]
        speech = sum(end - start for start, end in pieces[i:j])
        chunks.append((pieces[i][0], pieces[j - 1][1], speech))
        j = i
    return chunks[::-1]


def _plan_spans(
    probs: np.ndarray,
    energy: np.ndarray,
    duration_ms: int,
    min_s: float,
    max_s: float,
    pad_ms: int,
    threshold: float,
    min_silence_ms: int,
    min_speech_ms: int,
    max_gap_s: float,
) -> list[Span]:
    """Turn per-window speech probabilities and energies into chunk spans (see vad_spans)."""
    core_max_ms = _ms(max_s) - 2 * pad_ms  # room for the padding on both sides
    min_ms = _ms(min_s)
    min_silence = math.ceil(min_silence_ms / _WINDOW_MS)
    runs = _speech_runs(probs, threshold, min_silence, math.ceil(min_speech_ms / _WINDOW_MS))
    kernel = np.ones(_SMOOTH_WINDOWS) / _SMOOTH_WINDOWS
    smooth = np.convolve(energy, kernel, mode="same") if len(energy) else energy
    pieces = [
        piece
        for a, b in runs
        for piece in _split_long(
            a * _WINDOW_MS, min(b * _WINDOW_MS, duration_ms), smooth, core_max_ms, min_ms
        )
    ]
    chunks = _merge(pieces, core_max_ms, _ms(max_gap_s))
    spans: list[Span] = []
    for k, (start, end, speech) in enumerate(chunks):
        room_before = start - chunks[k - 1][1] if k else 2 * start
        room_after = chunks[k + 1][0] - end if k + 1 < len(chunks) else 2 * (duration_ms - end)
        span = Span(start - min(pad_ms, room_before // 2), end + min(pad_ms, room_after // 2))
        length = span.end_ms - span.start_ms
        if length >= min_ms and speech >= _MIN_SPEECH_RATIO * length:
            spans.append(span)
    return spans


def vad_spans(
    wav_path: Path,
    min_s: float,
    max_s: float,
    pad_ms: int,
    threshold: float = 0.5,
    min_silence_ms: int = 100,
    min_speech_ms: int = 250,
    max_gap_s: float = 2.0,
) -> list[Span]:
    """Speech chunks of a 16 kHz mono WAV from its Silero VAD scores (stored or computed).

    Speech runs end after ``min_silence_ms`` of silence and must last ``min_speech_ms``;
    runs are grouped into the fewest chunks within ``max_s`` (padding included), pauses over
    ``max_gap_s`` are never bridged, runs too long are split at the quietest 160 ms, each
    chunk is padded by up to ``pad_ms`` into the silence around it (half a pause at most, so
    chunks never overlap), and chunks shorter than ``min_s`` or mostly silence are dropped.
    """
    _check_vad(min_s, max_s, pad_ms, threshold)
    info = sf.info(str(wav_path))
    if info.samplerate != VAD_SAMPLE_RATE or info.channels != 1:
        raise MediaError(f"VAD needs {VAD_SAMPLE_RATE} Hz mono audio, got {info.samplerate} Hz "
                         f"with {info.channels} channels")
    duration_ms = info.frames * 1000 // info.samplerate
    scores = load_scores(Path(wav_path))  # stored by the resample stage when it ran
    return _plan_spans(
        scores[:, 0],
        scores[:, 1],
        duration_ms,
        min_s,
        max_s,
        pad_ms,
        threshold,
        min_silence_ms,
        min_speech_ms,
        max_gap_s,
    )


def write_chunks(wav_path: Path, spans: list[Span], out_dir: Path, item: str) -> list[Path]:
    """Write each span of a mono 16-bit WAV as its own WAV (via pydub), one at a time.

    Only one chunk is in memory at once; files are named by chunk_name and written atomically.
    """
    out_dir = Path(out_dir)
    paths: list[Path] = []
    with sf.SoundFile(str(wav_path)) as fh:
        if fh.channels != 1:
            raise MediaError(f"chunks are cut from mono audio, got {fh.channels} channels")
        rate = fh.samplerate
        for span in spans:
            first = span.start_ms * rate // 1000
            fh.seek(min(first, fh.frames))
            samples = fh.read(span.end_ms * rate // 1000 - first, dtype="int16")
            chunk = AudioSegment(
                data=samples.tobytes(), sample_width=2, frame_rate=rate, channels=1
            )
            path = out_dir / chunk_name(item, span)
            with atomic_path(path) as tmp:
                chunk.export(tmp, format="wav").close()
            paths.append(path)
    return paths


def segment_source(
    resampled_dir: Path,
    out_dir: Path,
    source: str,
    method: str,
    length_s: float,
    overlap_s: float,
    min_s: float,
    max_s: float,
    pad_ms: int,
    path_prefix: Path | None = None,
) -> ItemReport:
    """Segment stage for one source: chunk WAVs plus ``segments.csv`` in ``out_dir``.

    ``path`` in the CSV is ``path_prefix / name`` (default ``out_dir`` as given), meant to be
    relative to the repository root. ``out_dir`` is replaced as a whole on success; items
    without any chunk are reported as skipped, unreadable ones as failed.
    """
    if method not in METHODS:
        raise ValueError(f"method must be one of {', '.join(METHODS)}, got {method!r}")
    if method == "fixed":
        _check_fixed(length_s, overlap_s, min_s)
    else:
        _check_vad(min_s, max_s, pad_ms, threshold=0.5)
    resampled_dir, out_dir = Path(resampled_dir), Path(out_dir)
    prefix = Path(out_dir if path_prefix is None else path_prefix)
    table = read_table(resampled_dir / AUDIO_CSV, ["item", "path"])
    report = ItemReport("segment", source)
    rows: list[dict[str, object]] = []
    with atomic_path(out_dir) as tmp_dir:
        tmp_dir.mkdir()
        for item, path in tqdm(
            list(zip(table["item"], table["path"], strict=True)),
            desc=f"segment {source}",
            unit="item",
            disable=None,
        ):
            wav = resampled_dir / path
            try:
                if method == "fixed":
                    info = sf.info(str(wav))
                    duration_ms = info.frames * 1000 // info.samplerate
                    spans = fixed_spans(duration_ms, length_s, overlap_s, min_s)
                else:
                    spans = vad_spans(wav, min_s, max_s, pad_ms)
                written = write_chunks(wav, spans, tmp_dir, item)
            except MediaError as exc:
                report.fail(item, str(exc))
                continue
            except sf.LibsndfileError as exc:  # its str() holds the absolute path
                report.fail(item, f"cannot read audio: {exc.error_string}")
                continue
            if not written:
                report.skip(item, "no speech found" if method == "vad" else "shorter than min_s")
                continue
            rows.extend(
                {
                    "source": source,
                    "item": item,
                    "start_ms": span.start_ms,
                    "end_ms": span.end_ms,
                    "duration_s": (span.end_ms - span.start_ms) / 1000,
                    "path": (prefix / chunk.name).as_posix(),
                }
                for span, chunk in zip(spans, written, strict=True)
            )
            report.ok.append(item)
            kept_s = sum(span.end_ms - span.start_ms for span in spans) / 1000
            log.info("segment %s: %s: %d chunks, %.1f s", source, item, len(written), kept_s)
        segments = pd.DataFrame(rows, columns=SEGMENT_COLUMNS).sort_values(
            ["item", "start_ms"], kind="stable"
        )
        atomic_write_text(tmp_dir / SEGMENTS_CSV, segments.to_csv(index=False, lineterminator="\n"))
        report.write(tmp_dir / REPORT_JSON)
    report.finish()
    return report
