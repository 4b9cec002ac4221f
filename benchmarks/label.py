"""Benchmark of segment + pseudo-label throughput: our defaults vs the seed's way (issue 6).

One run, one model (whisper-base), one source: the five bundled samples decoded to 16 kHz mono
and concatenated in a loop until at least ``--minutes`` of audio, written as one WAV. Gold text
is the samples' subtitle cues, in order, for every copy.

Configurations, so that the table separates the levers:

- ``seed``: fixed 10 s windows every 8 s (2 s overlap, min 1 s) + transformers fp32
  ``WhisperForConditionalGeneration.generate``, greedy as the seed's HF pipeline defaulted to,
  one chunk at a time. Greedy favours the seed: transformers' beam search reorders the
  cross-attention cache every step, which dominated a profile of one chunk here.
- ``fixed + faster-whisper`` (engine lever alone: int8, greedy, one process) and
  ``vad + transformers`` (chunking lever alone).
- ``ours``: the project's defaults through its own labelling code
  (``tubetune.sharding.transcribe_batches``): VAD chunks (min 1 s, max 30 s, pad 200 ms,
  fewest chunks), faster-whisper int8, ``labels.beam_size: auto`` (greedy on CPU),
  temperature fallback, no previous-text conditioning, ``scale.label_workers: auto`` (on CPU
  one single-threaded replica of the model per core, decoding from as many threads). Model
  loading is inside its time.
- ``ours, one worker``: the same with ``label_workers: 1`` (the worker lever alone).
- ``ours, beam 5``: ``labels.beam_size: 5``, the quality setting (GPU default).

Each configuration's wall time is its segmentation (spans + chunk WAVs written, measured once
per chunking method) plus its labelling (each chunk WAV read back and transcribed). Model
loading, with one warm-up decode, is timed apart and excluded for the seed and lever rows;
the three ``ours`` rows load their teachers inside the timing.
Throughput is seconds of source
audio per wall second. With ``--subset N`` the transformers configurations transcribe only
their first N chunks; their labelling time is extrapolated by audio duration (source length
over the audio those chunks reach) and their WER is over that prefix of the source only.

WER joins every chunk transcript in order and compares it with the joined gold text using
``tubetune.metrics.error_rates`` (English normaliser). The seed's overlapping windows transcribe
about 2 s of speech twice per boundary; the insertions this causes are the seed's real cost and
are reported as they are.

    python benchmarks/label.py [--minutes 10] [--subset 0] [--model models/base]
"""

from __future__ import annotations

import argparse
import logging
import os
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import soundfile as sf

from tubetune.audio import load_audio, resample_to_wav
from tubetune.constants import SAMPLE_RATE
from tubetune.engines import DecodeOptions, FasterWhisperTranscriber, pick_beam_size
from tubetune.metrics import ErrorRates, error_rates
from tubetune.models import prepare_base_model
from tubetune.params import LabelParams, ScaleParams
from tubetune.segment import Span, fixed_spans, vad_spans, write_chunks
from tubetune.sharding import TeacherSpec, auto_workers, transcribe_batches
from tubetune.subtitles import read_vtt

ROOT = Path(__file__).resolve().parents[1]
SAMPLE_DIR = ROOT / "data" / "sample"
LANGUAGE = "en"
DEFAULTS = LabelParams()  # the project's labelling defaults (params.yaml has the same)
SEED_BEAMS = 1  # the seed's pipeline default: greedy
VAD = {"min_s": 1.0, "max_s": 30.0, "pad_ms": 200}  # params.yaml segment (method vad)
FIXED = {"length_s": 10.0, "overlap_s": 2.0, "min_s": 1.0}  # the seed's windows
TARGET_RATIO = 4.0
OURS = "ours: project defaults"
ONE_WORKER = "ours, one worker"
BEAM5 = "ours, beam 5"
SEED = "seed: fixed + transformers"
CHUNKING_ONLY = "vad + transformers"
ENGINE_ONLY = "fixed + faster-whisper"
ROW_ORDER = (SEED, ENGINE_ONLY, CHUNKING_ONLY, OURS, ONE_WORKER, BEAM5)
log = logging.getLogger("benchmarks.label")

Transcribe = Callable[[np.ndarray], str]


@dataclass(frozen=True)
class Source:
    """The looped source WAV, its length and its gold cues (times on the looped timeline)."""

    wav: Path
    duration_s: float
    gold: list[tuple[float, str]]  # (cue midpoint in s, cue text), in order


@dataclass(frozen=True)
class Chunks:
    """One chunking method's chunk files and the wall time it took to make them."""

    spans: list[Span]
    paths: list[Path]
    segment_s: float


@dataclass(frozen=True)
class Row:
    """One configuration's measurements."""

    name: str
    chunks: int
    timed_chunks: int
    audio_s: float
    segment_s: float
    label_s: float  # extrapolated to the whole source when only a subset was timed
    rates: ErrorRates

    @property
    def wall_s(self) -> float:
        """Segment + label wall seconds for the whole source."""
        return self.segment_s + self.label_s

    @property
    def throughput(self) -> float:
        """Seconds of source audio per wall second."""
        return self.audio_s / self.wall_s

    @property
    def extrapolated(self) -> bool:
        """True when only a subset of the chunks was transcribed."""
        return self.timed_chunks < self.chunks


def build_source(work: Path, minutes: float) -> Source:
    """Loop the subtitled samples (16 kHz mono) until ``minutes`` of audio; one WAV in ``work``."""
    media = sorted(
        p
        for p in SAMPLE_DIR.iterdir()
        if p.is_file() and p.suffix != ".vtt" and p.with_suffix(f".{LANGUAGE}.vtt").is_file()
    )
    clips: list[tuple[np.ndarray, list[tuple[float, str]]]] = []
    for path in media:
        wav = work / f"{path.stem}.wav"
        resample_to_wav(path, wav, SAMPLE_RATE)
        cues = read_vtt(SAMPLE_DIR / f"{path.stem}.{LANGUAGE}.vtt")
        clips.append((load_audio(wav), [((c.start_ms + c.end_ms) / 2000, c.text) for c in cues]))
    parts: list[np.ndarray] = []
    gold: list[tuple[float, str]] = []
    offset = 0.0
    while offset < minutes * 60:
        for audio, cues in clips:
            gold.extend((offset + mid, text) for mid, text in cues)
            parts.append(audio)
            offset += len(audio) / SAMPLE_RATE
    source = work / "source.wav"
    sf.write(str(source), np.concatenate(parts), SAMPLE_RATE, subtype="PCM_16")
    return Source(source, sf.info(str(source)).frames / SAMPLE_RATE, gold)


def segment(source: Source, method: str, out_dir: Path) -> Chunks:
    """Spans by ``method`` (``vad`` or ``fixed``) plus the chunk WAVs, timed together."""
    out_dir.mkdir()
    start = time.perf_counter()
    if method == "vad":
        spans = vad_spans(source.wav, **VAD)
    else:
        spans = fixed_spans(round(source.duration_s * 1000), **FIXED)
    paths = write_chunks(source.wav, spans, out_dir, "source")
    return Chunks(spans, paths, time.perf_counter() - start)


def faster_whisper_engine(ct2_dir: Path) -> Transcribe:
    """faster-whisper int8 on CPU, greedy like the seed, one chunk at a time (engine lever)."""
    model = FasterWhisperTranscriber(ct2_dir, device="cpu", compute_type="int8")
    temperatures = tuple(DEFAULTS.temperatures)

    def transcribe(audio: np.ndarray) -> str:
        return model.transcribe(audio, LANGUAGE, "transcribe", SEED_BEAMS, temperatures).text

    return transcribe


def project_labelling(
    name: str, model_dir: Path, chunks: Chunks, source: Source, beam_size: int | str,
    workers: int | str,
) -> Row:
    """The pipeline's own path: chunk files -> sharded teacher workers -> transcripts."""
    spec = TeacherSpec("faster-whisper", model_dir / "ct2", model_dir / "hf", device="cpu")
    options = DecodeOptions(LANGUAGE, "transcribe", pick_beam_size(beam_size, "cpu"),
                            tuple(DEFAULTS.temperatures))
    start = time.perf_counter()
    outcomes = transcribe_batches(spec, [[p] for p in chunks.paths], options, "local", workers)
    label_s = time.perf_counter() - start
    texts = []
    for outcome in outcomes:
        if isinstance(outcome, str):
            raise RuntimeError(f"{name}: a chunk failed: {outcome}")
        texts.append(outcome[0].text)
    log.info("%s: %d chunks in %.1f s", name, len(texts), label_s)
    rates = error_rates([" ".join(t for _, t in source.gold)], [" ".join(texts)], LANGUAGE)
    return Row(name, len(texts), len(texts), source.duration_s, chunks.segment_s, label_s, rates)


class _Suppress:
    """Whisper's token suppression as a plain index assignment (transformers logits processor).

    Same effect as transformers' SuppressTokens and SuppressTokensAtBegin processors, whose
    ``torch.isin`` over the whole vocabulary takes about 0.15 s per step on this CPU (torch
    2.13), more than the decoder step itself: left in, it would inflate the seed's cost.
    """

    def __init__(self, always: list[int], at_begin: list[int]) -> None:
        self.always, self.at_begin = always, at_begin
        self.begin_index = 0

    def set_begin_index(self, begin_index: int) -> None:
        """Called by Whisper's generate with the length of the decoder prompt."""
        self.begin_index = begin_index

    def __call__(self, input_ids: Any, scores: Any) -> Any:
        """Set the suppressed tokens' scores to -inf."""
        scores[:, self.always] = -float("inf")
        if input_ids.shape[-1] == self.begin_index:
            scores[:, self.at_begin] = -float("inf")
        return scores


def transformers_engine(hf_dir: Path) -> Transcribe:
    """The seed's engine: transformers fp32 ``generate`` on CPU, greedy, one chunk at a time."""
    import torch
    from transformers import LogitsProcessorList, WhisperForConditionalGeneration, WhisperProcessor

    processor = WhisperProcessor.from_pretrained(str(hf_dir))
    model = WhisperForConditionalGeneration.from_pretrained(str(hf_dir), dtype=torch.float32)
    model.eval()
    config = model.generation_config
    suppress = _Suppress(list(config.suppress_tokens), list(config.begin_suppress_tokens))
    config.suppress_tokens = config.begin_suppress_tokens = None

    def transcribe(audio: np.ndarray) -> str:
        features = processor.feature_extractor(
            audio, sampling_rate=SAMPLE_RATE, return_tensors="pt"
        ).input_features
        with torch.inference_mode():
            ids = model.generate(
                features,
                language=LANGUAGE,
                task="transcribe",
                num_beams=SEED_BEAMS,
                logits_processor=LogitsProcessorList([suppress]),
            )
        return processor.tokenizer.decode(ids[0], skip_special_tokens=True).strip()

    return transcribe


def load_engine(name: str, model_dir: Path) -> tuple[Transcribe, float]:
    """The engine and its load time in seconds, one warm-up decode (1 s of noise) included."""
    start = time.perf_counter()
    if name == "faster-whisper":
        engine = faster_whisper_engine(model_dir / "ct2")
    else:
        engine = transformers_engine(model_dir / "hf")
    noise = np.random.default_rng(0).normal(0, 0.003, SAMPLE_RATE).astype(np.float32)
    engine(noise)
    return engine, time.perf_counter() - start


def label(name: str, engine: Transcribe, chunks: Chunks, source: Source, subset: int) -> Row:
    """Transcribe the chunk WAVs (the first ``subset`` only when > 0) and score the text."""
    paths = chunks.paths[:subset] if subset > 0 else chunks.paths
    texts: list[str] = []
    start = time.perf_counter()
    for path in paths:
        texts.append(engine(load_audio(path)))
    label_s = time.perf_counter() - start
    reached_s = chunks.spans[len(paths) - 1].end_ms / 1000 if paths else 0.0
    if len(paths) < len(chunks.paths):
        label_s *= source.duration_s / reached_s
        gold = [text for mid, text in source.gold if mid < reached_s]
    else:
        gold = [text for _, text in source.gold]
    log.info("%s: %d/%d chunks in %.1f s", name, len(paths), len(chunks.paths), label_s)
    rates = error_rates([" ".join(gold)], [" ".join(texts)], LANGUAGE)
    return Row(
        name, len(chunks.paths), len(paths), source.duration_s, chunks.segment_s, label_s, rates
    )


def report(rows: list[Row], loads: dict[str, float], source: Source, workers: int) -> bool:
    """Print the table and the verdict; True when ``ours`` meets the target."""
    by_name = {r.name: r for r in rows}
    seed, ours = by_name[SEED], by_name[OURS]
    head = (
        f"{'configuration':<34} {'chunks':>9} {'audio s':>8} {'seg s':>6} {'label s':>8} "
        f"{'wall s':>8} {'audio/wall':>10} {'vs seed':>8} {'WER %':>6} {'S/D/I':>12}"
    )
    print(
        f"\nsource: {source.duration_s:.1f} s ({source.duration_s / 60:.2f} min), "
        f"{len(source.gold)} gold cues; load average {os.getloadavg()[0]:.2f}"
    )
    print(head)
    print("-" * len(head))
    for r in sorted(rows, key=lambda r: ROW_ORDER.index(r.name)):
        counted = f"{r.timed_chunks}/{r.chunks}" if r.extrapolated else str(r.chunks)
        edits = f"{r.rates.substitutions}/{r.rates.deletions}/{r.rates.insertions}"
        mark = "*" if r.extrapolated else ""
        print(
            f"{r.name:<34} {counted:>9} {r.audio_s:>8.1f} {r.segment_s:>6.2f} "
            f"{r.label_s:>7.1f}{mark:1} {r.wall_s:>8.1f} {r.throughput:>10.2f} "
            f"{r.throughput / seed.throughput:>7.2f}x {r.rates.wer:>6.2f} {edits:>12}"
        )
    if any(r.extrapolated for r in rows):
        print(
            "* labelling timed on the first chunks only and extrapolated by audio duration; "
            "WER over the audio those chunks reach"
        )
    print(
        "model load + one warm-up decode, excluded above: "
        + ", ".join(f"{name} {s:.1f} s" for name, s in loads.items())
    )
    chunking = by_name[CHUNKING_ONLY].throughput / seed.throughput
    engine = by_name[ENGINE_ONLY].throughput / seed.throughput
    engine_vad = ours.throughput / by_name[CHUNKING_ONLY].throughput
    print(
        f"levers: chunking alone (vad vs fixed, transformers) {chunking:.2f}x; "
        f"engine alone (faster-whisper vs transformers) {engine:.2f}x on fixed windows, "
        f"{engine_vad:.2f}x on vad chunks"
    )
    one, beam5 = by_name[ONE_WORKER], by_name[BEAM5]
    print(
        f"scale.label_workers auto ({workers} on this machine) vs one worker: "
        f"{ours.throughput / one.throughput:.2f}x; labels.beam_size 5 instead of auto (greedy "
        f"on CPU): {beam5.throughput / seed.throughput:.2f}x the seed, WER "
        f"{beam5.rates.wer:.2f} (defaults: {ours.rates.wer:.2f})"
    )
    ratio = ours.throughput / seed.throughput
    passed = ratio >= TARGET_RATIO and ours.rates.wer <= seed.rates.wer
    print(
        f"target >= {TARGET_RATIO:g}x at equal or better WER: ours {ratio:.2f}x, "
        f"WER {ours.rates.wer:.2f} vs {seed.rates.wer:.2f} -> {'PASS' if passed else 'FAIL'}"
    )
    return passed


def main() -> int:
    """Run the benchmark; exit status 0 on PASS, 1 on FAIL."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--minutes", type=float, default=10.0, help="source length (min)")
    parser.add_argument(
        "--subset",
        type=int,
        default=0,
        help="max chunks transcribed by the transformers configs (0 = all)",
    )
    parser.add_argument(
        "--model",
        type=Path,
        default=ROOT / "models" / "base",
        help="directory with hf/ and ct2/ (made from bundled:whisper-base "
        "in a temp dir when missing)",
    )
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    with tempfile.TemporaryDirectory(prefix="tubetune-label-bench-") as tmp:
        work = Path(tmp)
        model_dir = args.model
        if not (model_dir / "hf").is_dir() or not (model_dir / "ct2").is_dir():
            model_dir = work / "model"
            prepare_base_model("bundled:whisper-base", model_dir / "hf", model_dir / "ct2")
        source = build_source(work, args.minutes)
        log.info("source: %.1f s, %d gold cues", source.duration_s, len(source.gold))
        chunks = {method: segment(source, method, work / method) for method in ("vad", "fixed")}
        for method, c in chunks.items():
            log.info("%s: %d chunks in %.2f s", method, len(c.paths), c.segment_s)
        rows: list[Row] = []
        loads: dict[str, float] = {}
        vad = chunks["vad"]
        workers = ScaleParams().label_workers
        rows.append(project_labelling(OURS, model_dir, vad, source, DEFAULTS.beam_size, workers))
        rows.append(project_labelling(ONE_WORKER, model_dir, vad, source, DEFAULTS.beam_size, 1))
        rows.append(project_labelling(BEAM5, model_dir, vad, source, 5, workers))
        for engine_name, configs in (
            ("faster-whisper", ((ENGINE_ONLY, "fixed"),)),
            ("transformers", ((CHUNKING_ONLY, "vad"), (SEED, "fixed"))),
        ):
            engine, loads[engine_name] = load_engine(engine_name, model_dir)
            subset = args.subset if engine_name == "transformers" else 0
            rows.extend(
                label(name, engine, chunks[method], source, subset) for name, method in configs
            )
        spec = TeacherSpec("faster-whisper", model_dir / "ct2", model_dir / "hf", device="cpu")
        used = auto_workers(spec, len(vad.paths)) if workers == "auto" else int(workers)
        return 0 if report(rows, loads, source, used) else 1


if __name__ == "__main__":
    raise SystemExit(main())
