"""Transcribe a long file or URL with a model from the pipeline: text, SRT or VTT.

    python -m tubetune.transcribe models/export/ct2 talk.mp4 --format srt > talk.srt
    python -m tubetune.transcribe models/finetuned https://example.org/clip.mp3

MODEL is a CTranslate2 dir (``models/export/ct2``), a Hugging Face dir (converted to
CTranslate2 in a temporary folder first), or a ``bundled:`` spec. Long audio is cut at
pauses by faster-whisper's Silero VAD and decoded window by window.
"""

from __future__ import annotations

import argparse
import logging
import sys
import tempfile
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from tubetune.audio import resample_to_wav
from tubetune.engines import pick_compute_type, pick_device
from tubetune.text import whisper_language

if TYPE_CHECKING:
    from faster_whisper import WhisperModel

log = logging.getLogger(__name__)

FORMATS = ("text", "srt", "vtt")


@dataclass(frozen=True)
class Segment:
    """A stretch of transcript with its times in seconds."""

    start: float
    end: float
    text: str


def _timestamp(seconds: float, decimal: str) -> str:
    ms = round(seconds * 1000)
    h, ms = divmod(ms, 3_600_000)
    m, ms = divmod(ms, 60_000)
    s, ms = divmod(ms, 1000)
    return f"{h:02d}:{m:02d}:{s:02d}{decimal}{ms:03d}"


def render(segments: Iterable[Segment], fmt: str) -> str:
    """Segments as plain text (one line each), SRT or WebVTT."""
    segments = list(segments)
    if fmt == "text":
        return "".join(f"{s.text}\n" for s in segments)
    if fmt == "srt":
        return "\n".join(
            f"{i}\n{_timestamp(s.start, ',')} --> {_timestamp(s.end, ',')}\n{s.text}\n"
            for i, s in enumerate(segments, 1)
        )
    if fmt == "vtt":
        cues = "\n".join(
            f"{_timestamp(s.start, '.')} --> {_timestamp(s.end, '.')}\n{s.text}\n"
            for s in segments
        )
        return "WEBVTT\n\n" + cues
    raise ValueError(f"format: expected one of {', '.join(FORMATS)}, got {fmt!r}")


def ct2_model_dir(spec: str, workdir: Path) -> Path:
    """A CTranslate2 directory for ``spec``, converted or assembled in ``workdir`` if needed."""
    from tubetune.conversion import convert_hf_to_ct2
    from tubetune.models import prepare_base_model, resolve_model

    resolved = resolve_model(spec)
    if resolved.kind == "ct2":
        return resolved.path
    if resolved.kind == "hf":
        out = workdir / "ct2"
        convert_hf_to_ct2(resolved.path, out)
        return out
    hf, ct2 = workdir / "hf", workdir / "ct2"
    prepare_base_model(spec, hf, ct2)
    return ct2


def load_whisper(
    spec: str, device: str = "auto", compute_type: str = "auto", cpu_threads: int = 0,
    num_workers: int = 1,
) -> WhisperModel:
    """faster-whisper model for ``spec``; a conversion's temporary files go once it is loaded."""
    from faster_whisper import WhisperModel

    device = pick_device(device)
    with tempfile.TemporaryDirectory(prefix="tubetune-model-") as tmp:
        model_dir = ct2_model_dir(spec, Path(tmp))
        return WhisperModel(
            str(model_dir), device=device, compute_type=pick_compute_type(compute_type, device),
            cpu_threads=cpu_threads, num_workers=num_workers,
        )


def _local_audio(source: str, workdir: Path) -> Path:
    """A 16 kHz mono WAV of ``source`` (a local file, or a URL fetched with yt-dlp)."""
    path = Path(source)
    if not path.is_file():
        from tubetune.sources import download_source

        raw = workdir / "download"
        download_source("transcribe", [source], raw)
        media = sorted(p for p in raw.iterdir() if p.suffix not in (".json", ".vtt", ".csv"))
        if not media:
            raise FileNotFoundError(f"{source}: nothing could be downloaded")
        path = media[0]
    wav = workdir / "audio.wav"
    resample_to_wav(path, wav)
    return wav


@dataclass(frozen=True)
class LongForm:
    """A long-form transcript and how the decoder moved through its 30 s windows."""

    segments: list[Segment]
    windows: int  # 30 s windows that produced text
    closed_windows: int  # of those, windows where a segment ended on a timestamp token

    @property
    def text(self) -> str:
        """The whole transcript, segments joined by spaces."""
        return " ".join(s.text for s in self.segments)

    @property
    def timestamp_share(self) -> float:
        """Share of windows closed by a timestamp token: a Whisper that stopped predicting
        timestamps (the classic fine-tuning damage) scores near 0 and its sequential
        long-form decoding jumps blindly from window to window."""
        return self.closed_windows / self.windows if self.windows else 1.0


def transcribe_long(
    whisper: WhisperModel, audio: str | Path, language: str | None = None,
    task: str = "transcribe", beam_size: int = 5, vad_filter: bool = True,
    word_timestamps: bool = False,
) -> LongForm:
    """Transcribe a whole recording with timestamps: cut at pauses by Silero VAD
    (``vad_filter``, what serve does) or decoded window after window (sequential, as
    faster-whisper without VAD, whisper.cpp and transformers' long-form generate do)."""
    from faster_whisper.tokenizer import Tokenizer

    segments, info = whisper.transcribe(
        str(audio), language=whisper_language(language), task=task, beam_size=beam_size,
        vad_filter=vad_filter,
        condition_on_previous_text=False, word_timestamps=word_timestamps,
    )
    segments = list(segments)  # decoding happens while iterating
    timestamp_begin = Tokenizer(whisper.hf_tokenizer, whisper.model.is_multilingual, task,
                                info.language).timestamp_begin
    closed: dict[int, bool] = {}
    for s in segments:
        ends_on_timestamp = bool(s.tokens) and s.tokens[-1] >= timestamp_begin
        closed[s.seek] = closed.get(s.seek, False) or ends_on_timestamp
    log.info("%s: %.1f s of audio, language %s, %d windows", audio, info.duration,
             info.language, len(closed))
    kept = [Segment(s.start, s.end, s.text.strip()) for s in segments if s.text.strip()]
    return LongForm(kept, len(closed), sum(closed.values()))


def transcribe_file(
    model: str, source: str, language: str | None = None, task: str = "transcribe",
    beam_size: int = 5, device: str = "auto", compute_type: str = "auto",
) -> list[Segment]:
    """Transcribe ``source`` with ``model``; returns timed segments."""
    with tempfile.TemporaryDirectory(prefix="tubetune-transcribe-") as tmp:
        audio = _local_audio(source, Path(tmp))  # a bad input fails before any model work
        whisper = load_whisper(model, device, compute_type)
        return transcribe_long(whisper, audio, language, task, beam_size).segments


def main(argv: list[str] | None = None) -> int:
    """Command-line entry point."""
    parser = argparse.ArgumentParser(prog="python -m tubetune.transcribe", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("model", help="CTranslate2 or Hugging Face model dir, or bundled:NAME")
    parser.add_argument("source", help="audio/video file or URL")
    parser.add_argument("--format", choices=FORMATS, default="text")
    parser.add_argument("--language", default=None, help="e.g. en; default: detect")
    parser.add_argument("--task", choices=("transcribe", "translate"), default="transcribe")
    parser.add_argument("--beam-size", type=int, default=5)
    parser.add_argument("--device", default="auto")
    parser.add_argument("--compute-type", default="auto")
    parser.add_argument("--output", "-o", type=Path, help="write here instead of stdout")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    try:
        segments = transcribe_file(
            args.model, args.source, args.language, args.task, args.beam_size, args.device,
            args.compute_type,
        )
    except Exception as exc:  # a CLI answers with one line, not a traceback
        print(f"error: {type(exc).__name__}: {exc}", file=sys.stderr)
        return 1
    text = render(segments, args.format)
    if args.output:
        args.output.write_text(text, encoding="utf-8")
    else:
        sys.stdout.write(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
