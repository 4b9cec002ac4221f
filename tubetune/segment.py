"""Cut resampled 16 kHz mono audio into training chunks, streaming, one chunk file per span.

Two methods for videos without subtitle labels:

- ``fixed``: the seed's windows (10 s every 8 s by default). Simple, but cuts words in half.
- ``vad``: Silero VAD (the ONNX model shipped in faster-whisper) finds speech; chunks are cut
  at pauses, adjacent speech is grouped into the fewest chunks of at most ``max_s`` (Whisper's
  30 s window: each chunk costs one full window to label and train on), cutting at the longest
  pauses among those groupings, over-long speech is split at its quietest point, and each chunk
  gets up to ``pad_ms`` of the neighbouring silence without overlapping its neighbours.

Videos whose labels come from their subtitles are cut along their cues instead, whatever the
method (cue_spans): a label must be whole cues, and speakers pause inside cues (at commas,
between the sentences of one cue), so cutting at pauses would cut cues. Whole consecutive
cues are packed like VAD speech (fewest chunks, longest pauses), cut only between cues; the
VAD scores place each cue's speech, its edges snapped to the nearest silence within
``cue_snap_ms`` of the uploader's often early or late times. ``fixed`` computes no VAD
scores, so there the cue times stand as they are.

A labelled corpus's recordings (tubetune.corpus) are cut into their utterances as the
corpus made them (corpus_spans): no padding, no packing; only an utterance longer than
``max_s`` is split, the way an over-long cue is.

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

import bisect
import logging
import math
import re
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import soundfile as sf
from tqdm import tqdm

from tubetune.audio import AUDIO_CSV, REPORT_JSON, MediaError, read_table
from tubetune.constants import SAMPLE_RATE
from tubetune.fsutil import atomic_path, atomic_write_text
from tubetune.items import ItemReport
from tubetune.subtitles import CoveredCue, Cue, dump_covered
from tubetune.vad import WINDOW_MS as _WINDOW_MS
from tubetune.vad import load_scores

with warnings.catch_warnings():
    # pydub warns at import when no ffmpeg is on PATH (we only use its pure-Python WAV export)
    # and about the deprecated audioop module it imports.
    warnings.simplefilter("ignore", RuntimeWarning)
    warnings.simplefilter("ignore", DeprecationWarning)
    from pydub import AudioSegment

log = logging.getLogger(__name__)

SEGMENTS_CSV = "segments.csv"
SEGMENT_COLUMNS = ["source", "item", "start_ms", "end_ms", "duration_s", "path", "cues"]
"""``cues``: the subtitle cues a chunk covers (tubetune.subtitles.dump_covered), or empty."""
REJECTS_CSV = "rejects.csv"
REJECT_COLUMNS = ["source", "item", "start_ms", "end_ms", "duration_s", "cues", "reason",
                  "detail"]
"""Subtitle time that got no chunk: the label stage reports it with the other rejects."""

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


def fixed_spans(duration_ms: int, length_s: float, overlap_s: float, min_s: float) -> list[Span]:
    """Windows of ``length_s`` starting every ``length_s - overlap_s``, up to the end.

    The last window ends at the end of the audio (so it may be short) and is kept when it
    lasts at least ``min_s``; no window starts after one has reached the end. The values
    are ``segment``'s as tubetune.params checks them (``overlap_s`` < ``length_s``).
    """
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


def _speech_ms(
    probs: np.ndarray, duration_ms: int, threshold: float, min_silence_ms: int,
    min_speech_ms: int,
) -> list[tuple[int, int]]:
    """Speech runs (see _speech_runs) in milliseconds, the last one ending with the audio."""
    windows = _speech_runs(probs, threshold, math.ceil(min_silence_ms / _WINDOW_MS),
                           math.ceil(min_speech_ms / _WINDOW_MS))
    return [(a * _WINDOW_MS, min(b * _WINDOW_MS, duration_ms)) for a, b in windows]


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


def _partition(
    pieces: list[tuple[int, int]], max_ms: int, max_gap_ms: int
) -> list[tuple[int, int]]:
    """Group adjacent pieces into the fewest chunks, cut at the longest pauses.

    A chunk is a run of pieces that lasts at most ``max_ms``, bridges no pause over
    ``max_gap_ms`` and stays mostly speech (a piece over ``max_ms`` is a chunk of its own).
    Whisper encodes a full 30 s window per chunk whatever its length, so the fewest chunks is
    the cheapest cover of the speech to label and train on; among partitions with that count,
    the one whose cuts have the largest product of pause lengths wins (cuts at long pauses,
    sentence ends, over short ones). Exact dynamic programming over the pieces. Returns the
    chunks as ranges ``(first, end)`` of piece indices.
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
            if span > max_ms and i < j - 1:
                break
            speech += pieces[i][1] - pieces[i][0]
            if speech < _MIN_SPEECH_RATIO * span:
                continue
            count, penalty = best[i]
            if i:  # a cut before piece i: short pauses cost more
                penalty -= math.log(max(pieces[i][0] - pieces[i - 1][1], 1))
            if (count + 1, penalty) < best[j]:
                best[j], first[j] = (count + 1, penalty), i
    ranges: list[tuple[int, int]] = []
    j = n
    while j:
        ranges.append((first[j], j))
        j = first[j]
    return ranges[::-1]


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
    runs = _speech_ms(probs, duration_ms, threshold, min_silence_ms, min_speech_ms)
    kernel = np.ones(_SMOOTH_WINDOWS) / _SMOOTH_WINDOWS
    smooth = np.convolve(energy, kernel, mode="same") if len(energy) else energy
    pieces = [
        piece
        for a, b in runs
        for piece in _split_long(a, b, smooth, core_max_ms, min_ms)
    ]
    chunks = [
        (pieces[i][0], pieces[j - 1][1], sum(b - a for a, b in pieces[i:j]))
        for i, j in _partition(pieces, core_max_ms, _ms(max_gap_s))
    ]
    spans: list[Span] = []
    for k, (start, end, speech) in enumerate(chunks):
        room_before = start - chunks[k - 1][1] if k else 2 * start
        room_after = chunks[k + 1][0] - end if k + 1 < len(chunks) else 2 * (duration_ms - end)
        span = Span(start - min(pad_ms, room_before // 2), end + min(pad_ms, room_after // 2))
        length = span.end_ms - span.start_ms
        if length >= min_ms and speech >= _MIN_SPEECH_RATIO * length:
            spans.append(span)
    return spans


def _duration_ms(wav_path: Path, vad: bool = False) -> int:
    """Length of a WAV in ms; with ``vad``, MediaError unless it is the VAD's 16 kHz mono."""
    info = sf.info(str(wav_path))
    if vad and (info.samplerate != SAMPLE_RATE or info.channels != 1):
        raise MediaError(f"VAD needs {SAMPLE_RATE} Hz mono audio, got {info.samplerate} Hz "
                         f"with {info.channels} channels")
    return info.frames * 1000 // info.samplerate


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
    duration_ms = _duration_ms(wav_path, vad=True)
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


_MIN_CUE_SPEECH_MS = 250
"""A cue needs this much speech under it (half its length, if that is less), or it holds
none: ``[Music]``, or a cue far off its audio."""
_CLAUSE_END = re.compile(r"[.!?;:,…]+[\"'”’)\]]*\s+|[。！？；：，、]+[」』”’）]*\s*")
"""Where a cue's text may be split: after sentence or clause punctuation."""
_SPLIT_TOLERANCE = 0.05
"""A clause boundary falls in a pause when its proportional time lies within ``cue_snap_ms``,
or this share of the cue's speech time, of the pause."""


@dataclass(frozen=True)
class CueChunk:
    """A chunk cut along subtitle cues: its span and the whole cues (or pieces) it covers."""

    span: Span
    cues: tuple[CoveredCue, ...]


@dataclass(frozen=True)
class CueReject:
    """Subtitle time that gets no chunk, and why (the label stage reports it with its reason)."""

    span: Span
    cues: tuple[CoveredCue, ...]
    reason: str
    detail: str


@dataclass
class _Unit:
    """A cue (or piece) being planned: where its speech starts and ends (``onset``,
    ``offset``), how much silence around it its chunk may pad into, whether it may share a
    chunk with the next unit, and why it is rejected (None: kept)."""

    cue: CoveredCue
    onset: int
    offset: int
    room_before: int
    room_after: int
    bridge: bool
    reject: tuple[str, str] | None = None


def _cue_runs(cues: list[Cue], duration_ms: int) -> list[tuple[int, int]]:
    """The cues' own times as speech runs (merged where they touch): no VAD scores."""
    runs: list[tuple[int, int]] = []
    for cue in cues:
        start, end = max(cue.start_ms, 0), min(cue.end_ms, duration_ms)
        if end <= start:
            continue
        if runs and start <= runs[-1][1]:
            runs[-1] = (runs[-1][0], max(runs[-1][1], end))
        else:
            runs.append((start, end))
    return runs


def _silences(runs: list[tuple[int, int]], duration_ms: int) -> list[tuple[int, int]]:
    """The stretches between speech runs, the leading and trailing ones included."""
    edges = [0, *(t for run in runs for t in run), duration_ms]
    return [(a, b) for a, b in zip(edges[::2], edges[1::2], strict=True) if b > a]


def _distance(silence: tuple[int, int], lo: int, hi: int) -> int:
    return max(0, silence[0] - hi, lo - silence[1])


class _Snapper:
    """Finds the silence a cue edge snaps to (silences sorted, searched by bisection)."""

    def __init__(self, silences: list[tuple[int, int]], snap_ms: int) -> None:
        self.silences = silences
        self.ends = [b for _, b in silences]
        self.snap_ms = snap_ms

    def snap(self, edge: int, lo: int, hi: int, floor: int) -> tuple[int, int] | None:
        """The silence within ``snap_ms`` of the cue edge at ``edge`` that lies closest to the
        stretch ``[lo, hi]`` between the two cue times, then closest to the edge, then the
        longest; silences starting before ``floor`` (the cue's own speech start) are out."""
        best, best_key = None, None
        i = bisect.bisect_left(self.ends, max(edge - self.snap_ms, floor))
        while i < len(self.silences) and self.silences[i][0] <= edge + self.snap_ms:
            silence = self.silences[i]
            key = (_distance(silence, lo, hi), _distance(silence, edge, edge), -_length(silence))
            if silence[0] >= floor and (best_key is None or key < best_key):
                best, best_key = silence, key
            i += 1
        return best

    def boundary(self, end: int, start: int, floor: int) -> tuple[int, int, int, int, bool]:
        """Where a cue ending at ``end`` stops and the next one, starting at ``start``, begins:
        ``(offset, onset, room_after, room_before, shared)``. ``shared``: one pause (or none:
        the cut then goes between the cue times) separates them, so they may share a chunk;
        otherwise speech that neither cue holds lies between them."""
        lo, hi = min(end, start), max(end, start)
        after, before = self.snap(end, lo, hi, floor), self.snap(start, lo, hi, floor)
        if after and before and before[0] < after[0]:  # overlapping cues: one pause for both
            after = before = min(after, before, key=lambda s: (_distance(s, lo, hi), -_length(s)))
        if after is None and before is None:
            cut = max((lo + hi) // 2, floor)
            return cut, cut, 0, 0, True
        if after == before:
            half = _length(after) // 2
            return after[0], after[1], half, half, True
        offset = after[0] if after else min(max(end, floor), before[0])
        onset = before[1] if before else max(start, after[1])
        return offset, onset, _length(after), _length(before), False


def _length(silence: tuple[int, int] | None) -> int:
    return silence[1] - silence[0] if silence else 0


def _speech_under(runs: list[tuple[int, int]], starts: list[int], lo: int, hi: int) -> int:
    """Milliseconds of speech (runs, sorted, with their ``starts``) within ``[lo, hi]``."""
    total = 0
    i = max(bisect.bisect_right(starts, lo) - 1, 0)
    while i < len(runs) and runs[i][0] < hi:
        total += max(0, min(runs[i][1], hi) - max(runs[i][0], lo))
        i += 1
    return total


def _clause_split(
    text: str, onset: int, offset: int, pauses: list[tuple[int, int]], snap_ms: int
) -> tuple[tuple[int, int], int] | None:
    """Where to split a cue's speech and text without guessing: ``(pause, text position)``.

    The text's characters are spread evenly over the cue's speech (pauses hold none); a pause
    qualifies when exactly one clause boundary of the text falls in it by that proportional
    time and no other pause lies as near that boundary. The longest qualifying pause wins;
    None when there is none.
    """
    spoken = sum(ch.isalnum() for ch in text)
    speech_ms = offset - onset - sum(b - a for a, b in pauses)
    if not pauses or not spoken or speech_ms <= 0:
        return None
    tolerance = max(snap_ms, _SPLIT_TOLERANCE * speech_ms)
    boundary_at = {
        m.end(): speech_ms * sum(ch.isalnum() for ch in text[: m.end()]) / spoken
        for m in _CLAUSE_END.finditer(text)
        if any(ch.isalnum() for ch in text[m.end() :])
    }
    pause_at, paused = [], 0
    for a, b in pauses:
        pause_at.append(a - onset - paused)
        paused += b - a
    for pause, at in sorted(zip(pauses, pause_at, strict=True), key=lambda p: -_length(p[0])):
        near = [k for k, t in boundary_at.items() if abs(t - at) <= tolerance]
        if len(near) == 1 and sum(abs(boundary_at[near[0]] - q) <= tolerance
                                  for q in pause_at) == 1:
            return pause, near[0]
    return None


def _split_cue(unit: _Unit, silences: list[tuple[int, int]], max_ms: int, snap_ms: int,
               kind: str = "cue") -> list[_Unit]:
    """A unit longer than ``max_ms`` as pieces split at pauses (_clause_split), recursively;
    a piece that cannot be split so is rejected (``<kind>_too_long``: a cue, or a corpus
    utterance)."""
    if unit.offset - unit.onset <= max_ms:
        return [unit]
    pauses = [p for p in silences if unit.onset < p[0] and p[1] < unit.offset]
    cue = unit.cue
    split = _clause_split(cue.text, unit.onset, unit.offset, pauses, snap_ms)
    if split is None:
        why = "no clause boundary of its text falls in one of its pauses" if pauses else (
            "there is no pause in it")
        unit.reject = (f"{kind}_too_long", f"{(unit.offset - unit.onset) / 1000:.1f} s of speech "
                       f"in one {kind}, over max_s ({max_ms / 1000:g} s), and {why}: it cannot "
                       "be split without guessing")
        return [unit]
    (a, b), k = split
    half = (b - a) // 2
    left = _Unit(CoveredCue(cue.index, cue.start_ms, a, cue.text[:k].rstrip()),
                 unit.onset, a, unit.room_before, half, True)
    right = _Unit(CoveredCue(cue.index, b, cue.end_ms, cue.text[k:].lstrip()),
                  b, unit.offset, half, unit.room_after, unit.bridge)
    return [*_split_cue(left, pauses, max_ms, snap_ms, kind),
            *_split_cue(right, pauses, max_ms, snap_ms, kind)]


def _cue_units(
    cues: list[Cue], runs: list[tuple[int, int]], duration_ms: int, snap_ms: int
) -> list[_Unit]:
    """Every cue as a unit with its edges snapped into the silence around its speech; cues
    past the audio's end or without speech under them come out rejected."""
    starts = [a for a, _ in runs]
    units: list[_Unit] = []
    for i, cue in enumerate(cues):
        covered = CoveredCue(i, cue.start_ms, cue.end_ms, cue.text)
        if cue.start_ms >= duration_ms:
            reject = ("outside_audio", "the cue starts after the end of the audio")
        elif _speech_under(runs, starts, cue.start_ms, cue.end_ms) < min(
            _MIN_CUE_SPEECH_MS, cue.duration_ms // 2
        ):
            reject = ("no_speech", "the voice activity detector hears no speech under the cue")
        else:
            reject = None
        units.append(_Unit(covered, cue.start_ms, min(cue.end_ms, duration_ms), 0, 0, False,
                           reject))
    kept = [u for u in units if u.reject is None]
    snapper = _Snapper(_silences(runs, duration_ms), snap_ms)
    if kept:
        first = kept[0].cue.start_ms
        before = snapper.snap(first, first, first, 0)
        kept[0].onset, kept[0].room_before = (before[1], _length(before)) if before else (first, 0)
    for unit, after in zip(kept, [*kept[1:], None], strict=True):
        if after is None:
            end = min(unit.cue.end_ms, duration_ms)
            silence = snapper.snap(end, end, end, unit.onset)
            unit.offset = silence[0] if silence else max(end, unit.onset)
            unit.room_after = _length(silence)
            break
        (unit.offset, after.onset, unit.room_after, after.room_before,
         shared) = snapper.boundary(unit.cue.end_ms, after.cue.start_ms, unit.onset)
        unit.bridge = shared and after.cue.index == unit.cue.index + 1  # no rejected cue between
    for unit in kept:
        if unit.offset <= unit.onset:
            unit.reject = ("no_speech", "no speech between the silences around the cue")
    return units


def cue_spans(
    cues: list[Cue],
    runs: list[tuple[int, int]],
    duration_ms: int,
    min_s: float,
    max_s: float,
    pad_ms: int,
    cue_snap_ms: int,
    max_gap_s: float = 2.0,
) -> tuple[list[CueChunk], list[CueReject]]:
    """Chunks of whole consecutive cues, cut only between cues, in silence.

    ``runs`` are the speech runs in ms (VAD, or the cues' own times without it). Each cue
    edge snaps to the nearest silence within ``cue_snap_ms`` (uploader times are often a few
    hundred ms early or late): its speech starts where that silence ends and ends where the
    next begins. Cues are packed into the fewest chunks of at most ``max_s`` (padding
    included), cut at the longest pauses (_partition), never across a pause over
    ``max_gap_s``, a rejected cue, or speech that no cue holds; chunks are padded by up to
    ``pad_ms`` into the silence around them without overlapping their neighbours. A cue
    longer than ``max_s`` is split where its text has a clause boundary in a pause
    (_clause_split), or rejected; so are cues without speech and chunks shorter than
    ``min_s``, each with its reason.
    """
    max_ms, min_ms = _ms(max_s), _ms(min_s)
    silences = _silences(runs, duration_ms)
    units = [
        piece
        for unit in _cue_units(cues, runs, duration_ms, cue_snap_ms)
        for piece in ([unit] if unit.reject else _split_cue(unit, silences, max_ms, cue_snap_ms))
    ]
    chunks: list[CueChunk] = []
    rejects: list[CueReject] = []
    run: list[_Unit] = []
    for unit in [*units, None]:
        if unit is not None and unit.reject is None:
            run.append(unit)
            if unit.bridge:
                continue
        for i, j in _partition([(u.onset, u.offset) for u in run], max_ms - 2 * pad_ms,
                               _ms(max_gap_s)):
            first, last = run[i], run[j - 1]
            budget = max_ms - (last.offset - first.onset)
            before = min(pad_ms, first.room_before,
                         budget - min(pad_ms, last.room_after, budget // 2))
            after = min(pad_ms, last.room_after, budget - before)
            span = Span(max(first.onset - before, 0), min(last.offset + after, duration_ms))
            covered = tuple(u.cue for u in run[i:j])
            if span.end_ms - span.start_ms >= min_ms:
                chunks.append(CueChunk(span, covered))
            else:
                length_s = (span.end_ms - span.start_ms) / 1000
                rejects.append(CueReject(span, covered, "too_short", (
                    f"{length_s:.2f} s of cues with no neighbour to share a chunk with (long "
                    f"pauses or rejected cues around them), under min_s ({min_s:g} s)")))
        run = []
        if unit is not None and unit.reject is not None:
            rejects.append(CueReject(Span(unit.cue.start_ms, unit.cue.end_ms), (unit.cue,),
                                     *unit.reject))
    return chunks, sorted(rejects, key=lambda r: r.span)


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


def subtitle_spans(
    wav_path: Path, cues: list[Cue], method: str, min_s: float, max_s: float, pad_ms: int,
    cue_snap_ms: int,
) -> tuple[list[CueChunk], list[CueReject]]:
    """Chunks of a subtitled 16 kHz mono WAV cut along its cues (cue_spans): with ``vad`` its
    stored Silero scores place the speech; ``fixed`` has none, so the cue times stand as the
    uploader wrote them (no snapping, and a cue over ``max_s`` cannot be split)."""
    duration_ms = _duration_ms(wav_path, vad=method == "vad")
    if method == "vad":
        scores = load_scores(Path(wav_path))
        runs = _speech_ms(scores[:, 0], duration_ms, 0.5, 100, 250)  # vad_spans' defaults
    else:
        runs = _cue_runs(cues, duration_ms)
    return cue_spans(cues, runs, duration_ms, min_s, max_s, pad_ms, cue_snap_ms)


def corpus_spans(
    wav_path: Path, utterances: list[Cue], method: str, max_s: float, cue_snap_ms: int
) -> tuple[list[CueChunk], list[CueReject]]:
    """Chunks of a corpus recording (tubetune.corpus): each utterance whole, exactly its span,
    as the corpus cut it (no padding, no ``min_s``: the split's duration bounds apply later).

    An utterance over ``max_s`` is split where its text has a clause boundary in a pause
    (_clause_split, on the stored VAD scores), else rejected; ``fixed`` computes no VAD
    scores, so there every such utterance is rejected.
    """
    max_ms = _ms(max_s)
    duration_ms = _duration_ms(wav_path, vad=method == "vad")
    silences: list[tuple[int, int]] = []
    if method == "vad" and any(u.duration_ms > max_ms for u in utterances):
        scores = load_scores(Path(wav_path))
        runs = _speech_ms(scores[:, 0], duration_ms, 0.5, 100, 250)  # vad_spans' defaults
        silences = _silences(runs, duration_ms)
    chunks: list[CueChunk] = []
    rejects: list[CueReject] = []
    for i, utterance in enumerate(utterances):
        covered = CoveredCue(i, utterance.start_ms, utterance.end_ms, utterance.text)
        if utterance.duration_ms <= max_ms:
            chunks.append(CueChunk(Span(utterance.start_ms, utterance.end_ms), (covered,)))
            continue
        if method != "vad":
            rejects.append(CueReject(Span(utterance.start_ms, utterance.end_ms), (covered,),
                                     "utterance_too_long", (
                f"{utterance.duration_ms / 1000:.1f} s, over max_s ({max_s:g} s); segment."
                "method fixed finds no pauses to split it at")))
            continue
        unit = _Unit(covered, utterance.start_ms, utterance.end_ms, 0, 0, False)
        for piece in _split_cue(unit, silences, max_ms, cue_snap_ms, "utterance"):
            span = Span(piece.onset, piece.offset)
            if piece.reject:
                rejects.append(CueReject(span, (piece.cue,), *piece.reject))
            else:
                chunks.append(CueChunk(span, (piece.cue,)))
    return chunks, rejects


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
    cues: dict[str, list[Cue]] | None = None,
    cue_snap_ms: int = 300,
    utterances: dict[str, list[Cue]] | None = None,
) -> ItemReport:
    """Segment stage for one source: chunk WAVs, ``segments.csv`` and ``rejects.csv`` in
    ``out_dir``.

    Items in ``cues`` (those whose labels come from their subtitles,
    tubetune.subtitles.label_cues) are cut along their cues (subtitle_spans), whatever the
    method; the ``cues`` column names the cues each chunk covers, and ``rejects.csv`` lists
    the subtitle time left without a chunk, with the reason. Items in ``utterances`` (a
    corpus's, tubetune.corpus.utterance_cues) are cut into their utterances (corpus_spans),
    each named in ``cues`` the same way. Other items get ``method``'s chunks. ``path`` in
    the CSV is ``path_prefix / name`` (default ``out_dir`` as given), meant to be relative
    to the repository root. ``out_dir`` is replaced as a whole on
    success; items without any chunk are reported as skipped, unreadable ones as failed.
    The parameters are ``segment``'s, as tubetune.params validated them (SegmentParams).
    """
    cues = cues or {}
    utterances = utterances or {}
    resampled_dir, out_dir = Path(resampled_dir), Path(out_dir)
    prefix = Path(out_dir if path_prefix is None else path_prefix)
    table = read_table(resampled_dir / AUDIO_CSV, ["item", "path"])
    report = ItemReport("segment", source)
    rows: list[dict[str, object]] = []
    reject_rows: list[dict[str, object]] = []
    with atomic_path(out_dir) as tmp_dir:
        tmp_dir.mkdir()
        for item, path in tqdm(
            list(zip(table["item"], table["path"], strict=True)),
            desc=f"segment {source}",
            unit="item",
            disable=None,
        ):
            wav = resampled_dir / path
            covered: list[tuple[CoveredCue, ...]] = []
            try:
                if item in cues or item in utterances:
                    chunks, rejected = (
                        subtitle_spans(wav, cues[item], method, min_s, max_s, pad_ms,
                                       cue_snap_ms) if item in cues else
                        corpus_spans(wav, utterances[item], method, max_s, cue_snap_ms))
                    spans, covered = [c.span for c in chunks], [c.cues for c in chunks]
                    reject_rows += [_reject_row(source, item, r) for r in rejected]
                elif method == "fixed":
                    spans = fixed_spans(_duration_ms(wav), length_s, overlap_s, min_s)
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
                report.skip(item, (f"no chunk from its {len(cues[item])} cues (see rejects.csv)"
                                   if item in cues else
                                   f"no chunk from its {len(utterances[item])} utterances (see "
                                   "rejects.csv)" if item in utterances else
                                   "no speech found" if method == "vad" else "shorter than min_s"))
                continue
            rows.extend(
                {
                    "source": source,
                    "item": item,
                    "start_ms": span.start_ms,
                    "end_ms": span.end_ms,
                    "duration_s": (span.end_ms - span.start_ms) / 1000,
                    "path": (prefix / chunk.name).as_posix(),
                    "cues": dump_covered(covered[k]) if covered else "",
                }
                for k, (span, chunk) in enumerate(zip(spans, written, strict=True))
            )
            report.ok.append(item)
            kept_s = sum(span.end_ms - span.start_ms for span in spans) / 1000
            log.info("segment %s: %s: %d chunks, %.1f s", source, item, len(written), kept_s)
        for name, frame_rows, columns in ((SEGMENTS_CSV, rows, SEGMENT_COLUMNS),
                                          (REJECTS_CSV, reject_rows, REJECT_COLUMNS)):
            frame = pd.DataFrame(frame_rows, columns=columns).sort_values(
                ["item", "start_ms"], kind="stable"
            )
            atomic_write_text(tmp_dir / name, frame.to_csv(index=False, lineterminator="\n"))
        report.write(tmp_dir / REPORT_JSON)
    report.finish()
    return report


def _reject_row(source: str, item: str, reject: CueReject) -> dict[str, object]:
    """A ``rejects.csv`` row; the subtitle time it holds is logged as lost."""
    span = reject.span
    log.info("segment %s: %s: %.1f s of labelled speech at %d ms rejected: %s: %s", source, item,
             (span.end_ms - span.start_ms) / 1000, span.start_ms, reject.reason, reject.detail)
    return {"source": source, "item": item, "start_ms": span.start_ms, "end_ms": span.end_ms,
            "duration_s": (span.end_ms - span.start_ms) / 1000, "cues": dump_covered(reject.cues),
            "reason": reject.reason, "detail": reject.detail}
