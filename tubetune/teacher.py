"""Transcription with faster-whisper (CTranslate2): the teacher and the evaluator's engine.

faster-whisper is used for all inference because on CPU it is faster than transformers'
``generate`` with int8 weights, uses less memory, and reports the per-segment scores
(average log-probability, no-speech probability, compression ratio) that label filters need.
"""

from __future__ import annotations

import logging
import zlib
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Transcript:
    """The text of one clip plus the scores the decoder gave it."""

    text: str
    language: str
    language_probability: float
    avg_logprob: float
    no_speech_prob: float
    compression_ratio: float
    num_tokens: int


def compression_ratio(text: str) -> float:
    """UTF-8 length over zlib-compressed length; high values mean repetitive text."""
    data = text.encode("utf-8")
    return len(data) / len(zlib.compress(data)) if data else 0.0


def pick_device(device: str) -> str:
    """``auto`` -> ``cuda`` when CTranslate2 sees a GPU, else ``cpu``."""
    if device != "auto":
        return device
    import ctranslate2

    return "cuda" if ctranslate2.get_cuda_device_count() > 0 else "cpu"


def pick_compute_type(compute_type: str, device: str) -> str:
    """``auto`` -> int8 on CPU (fastest there), float16 on GPU."""
    if compute_type != "auto":
        return compute_type
    return "float16" if device == "cuda" else "int8"


class FasterWhisperTranscriber:
    """A CTranslate2 Whisper model kept in memory, transcribing one clip at a time."""

    def __init__(
        self,
        model_dir: str | Path,
        device: str = "auto",
        compute_type: str = "auto",
        cpu_threads: int = 0,
    ) -> None:
        from faster_whisper import WhisperModel

        self.device = pick_device(device)
        self.compute_type = pick_compute_type(compute_type, self.device)
        log.info("loading %s on %s (%s)", model_dir, self.device, self.compute_type)
        self.model = WhisperModel(
            str(model_dir),
            device=self.device,
            compute_type=self.compute_type,
            cpu_threads=cpu_threads,
        )

    def transcribe(
        self,
        audio: np.ndarray,
        language: str | None,
        task: str = "transcribe",
        beam_size: int = 5,
        temperatures: Sequence[float] = (0.0, 0.2, 0.4, 0.6, 0.8, 1.0),
    ) -> Transcript:
        """Transcribe a float32 16 kHz mono clip (≤ 30 s) without previous-text conditioning."""
        segments, info = self.model.transcribe(
            audio,
            language=_whisper_language(language),
            task=task,
            beam_size=beam_size,
            temperature=list(temperatures),
            condition_on_previous_text=False,
            without_timestamps=True,
            vad_filter=False,
        )
        segments = list(segments)
        text = " ".join(s.text.strip() for s in segments if s.text.strip())
        tokens = sum(len(s.tokens) for s in segments)
        weighted = sum(s.avg_logprob * max(len(s.tokens), 1) for s in segments)
        weights = sum(max(len(s.tokens), 1) for s in segments)
        return Transcript(
            text=text,
            language=info.language,
            language_probability=float(info.language_probability),
            avg_logprob=float(weighted / weights) if weights else 0.0,
            no_speech_prob=float(segments[0].no_speech_prob) if segments else 1.0,
            compression_ratio=compression_ratio(text),
            num_tokens=tokens,
        )


def _whisper_language(language: str | None) -> str | None:
    """Whisper knows ``zh``, not ``zh-TW``: strip the region."""
    return language.split("-")[0].lower() if language else None
