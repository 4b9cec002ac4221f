"""Silero VAD speech probabilities of 16 kHz mono audio, streamed block by block.

The resample stage scores each WAV it writes (:func:`score_file`, long files in pieces on
every core) and stores the result next to it (``<item>.vad.npy``); the segment stage then
only plans cuts, so changing ``segment`` params never runs the model again.

Uses the ONNX model shipped in faster-whisper, run by onnxruntime with faster-whisper's
session options and input names (``input``, ``h``, ``c``), without importing faster-whisper
itself (hundreds of MB of imports every audio stage would pay); a test compares against
faster-whisper's whole-file call.
"""

from __future__ import annotations

import functools
import importlib.util
import math
import os
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import onnxruntime
import soundfile as sf

from tubetune.constants import SAMPLE_RATE  # Silero scores Whisper's input as is

WINDOW = 512
"""Samples per Silero decision (32 ms at 16 kHz)."""
WINDOW_MS = WINDOW * 1000 // SAMPLE_RATE
_CONTEXT = 64
"""Samples of the previous window the model sees before each window."""
BLOCK_WINDOWS = 1875
"""Windows per model call: 60 s of audio. The model's activations grow with the batch
(faster-whisper's 10,000 windows peak near 400 MB RSS, 60 s blocks near 200 MB) while the
speed stays the same. Blocks are always this size, however the audio arrives, so results
are identical whether a file is read or streamed."""
SUFFIX = ".vad.npy"
"""Scores stored next to a WAV: ``<item>.vad.npy``, float32 rows of (probability, RMS)."""


@functools.cache
def _session() -> onnxruntime.InferenceSession:
    """The Silero VAD model file of the installed faster-whisper, one thread per session."""
    spec = importlib.util.find_spec("faster_whisper")  # locates, does not import
    if spec is None or not spec.submodule_search_locations:
        raise RuntimeError("faster-whisper is not installed; it ships the Silero VAD model")
    model = Path(spec.submodule_search_locations[0]) / "assets" / "silero_vad_v6.onnx"
    options = onnxruntime.SessionOptions()
    options.inter_op_num_threads = 1
    options.intra_op_num_threads = 1
    options.enable_cpu_mem_arena = False
    options.log_severity_level = 4
    return onnxruntime.InferenceSession(str(model), providers=["CPUExecutionProvider"],
                                        sess_options=options)


class SpeechScorer:
    """Speech probability and RMS per 32 ms window of audio fed in any block sizes.

    The LSTM state and the 64-sample context are carried from block to block, exactly as
    faster-whisper does between its batches, so the result equals a whole-file run while
    memory stays flat.
    """

    def __init__(self, block_windows: int = BLOCK_WINDOWS) -> None:
        self._session = _session()
        self._block = block_windows * WINDOW
        self._pending: list[np.ndarray] = []
        self._pending_len = 0
        self._h = np.zeros((1, 1, 128), dtype=np.float32)
        self._c = np.zeros((1, 1, 128), dtype=np.float32)
        self._context = np.zeros(_CONTEXT, dtype=np.float32)
        self._probs: list[np.ndarray] = []
        self._rms: list[np.ndarray] = []

    def feed(self, samples: np.ndarray) -> None:
        """Add float32 samples in [-1, 1]; scores every complete block."""
        self._pending.append(np.asarray(samples, dtype=np.float32))
        self._pending_len += len(samples)
        if self._pending_len < self._block:
            return
        audio = np.concatenate(self._pending)
        full = len(audio) // self._block * self._block
        for start in range(0, full, self._block):
            self._score(audio[start : start + self._block])
        self._pending = [audio[full:]]
        self._pending_len = len(audio) - full

    def finish(self) -> np.ndarray:
        """Score what is left; (windows, 2) float32 array of probability and RMS."""
        if self._pending_len:
            self._score(np.concatenate(self._pending))
            self._pending, self._pending_len = [], 0
        if not self._probs:
            return np.zeros((0, 2), dtype=np.float32)
        return np.stack([np.concatenate(self._probs), np.concatenate(self._rms)], axis=1)

    def _score(self, block: np.ndarray) -> None:
        windows = np.pad(block, (0, -len(block) % WINDOW)).reshape(-1, WINDOW)
        contexts = np.concatenate([self._context[None, :], windows[:-1, -_CONTEXT:]])
        out, self._h, self._c = self._session.run(
            None, {"input": np.concatenate([contexts, windows], axis=1), "h": self._h,
                   "c": self._c}
        )
        self._context = windows[-1, -_CONTEXT:].copy()
        self._probs.append(np.asarray(out, dtype=np.float32).reshape(-1))
        rms = np.sqrt(np.mean(np.square(windows, dtype=np.float64), axis=1))
        self._rms.append(rms.astype(np.float32))


PIECE_WINDOWS = 5 * BLOCK_WINDOWS
"""Long files are scored in independent 5-minute pieces, in parallel on every core."""
_WARMUP_WINDOWS = 64
"""Each piece after the first starts this many windows (about 2 s) early with a fresh model
state; those scores are dropped, so the state has settled where the piece's own scores start.
The piece grid is fixed, so results do not depend on the number of cores."""


def score_file(wav_path: Path, block_windows: int = BLOCK_WINDOWS,
               workers: int | None = None) -> np.ndarray:
    """Scores of a 16 kHz mono WAV; ValueError for any other format.

    Files up to one piece (5 min) are scored in one stream (identical to a whole-file run);
    longer ones piece by piece on ``workers`` threads (default: every core; onnxruntime
    releases the GIL), each piece read in blocks, so memory stays bounded.
    """
    info = sf.info(str(wav_path))
    if info.samplerate != SAMPLE_RATE or info.channels != 1:
        raise ValueError(
            f"VAD needs {SAMPLE_RATE} Hz mono audio, got {info.samplerate} Hz "
            f"with {info.channels} channels"
        )
    piece = PIECE_WINDOWS * WINDOW
    starts = list(range(0, info.frames, piece)) or [0]

    def score_piece(start: int) -> np.ndarray:
        warmup = min(start, _WARMUP_WINDOWS * WINDOW)
        scorer = SpeechScorer(block_windows)
        with sf.SoundFile(str(wav_path)) as fh:
            fh.seek(start - warmup)
            left = min(piece, info.frames - start) + warmup
            while left > 0:
                block = fh.read(min(block_windows * WINDOW, left), dtype="float32")
                if not len(block):
                    break
                scorer.feed(block)
                left -= len(block)
        return scorer.finish()[warmup // WINDOW :]

    workers = workers or min(len(starts), os.cpu_count() or 1)
    if workers == 1:
        return np.concatenate([score_piece(start) for start in starts])
    with ThreadPoolExecutor(workers) as pool:
        return np.concatenate(list(pool.map(score_piece, starts)))


def level_dbfs(scores: np.ndarray, frames: int) -> float:
    """RMS level in dBFS of the ``frames`` samples whose scores these are, from the
    per-window RMS (the last window's zero padding adds nothing), so the resample stage
    need not read the file again. Digital silence is -inf, as for ``audio.rms_dbfs``."""
    energy = float(np.sum(np.square(scores[:, 1], dtype=np.float64))) * WINDOW
    if energy == 0.0 or frames == 0:
        return float("-inf")
    return 10.0 * math.log10(energy / frames)


def scores_path(wav_path: Path) -> Path:
    """Where the resample stage stores the scores of ``wav_path``."""
    return Path(wav_path).with_suffix(SUFFIX)


def save_scores(path: Path, scores: np.ndarray) -> None:
    """Write scores as .npy (deterministic bytes for identical values)."""
    with open(path, "wb") as fh:
        np.save(fh, scores.astype(np.float32), allow_pickle=False)


def load_scores(wav_path: Path) -> np.ndarray:
    """Stored scores of ``wav_path`` when the resample stage wrote them, else computed."""
    stored = scores_path(wav_path)
    if stored.is_file():
        return np.load(stored, allow_pickle=False)
    return score_file(wav_path)
