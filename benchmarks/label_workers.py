"""Benchmark of pseudo-labelling throughput: one teacher vs ``--workers`` local workers.

The bundled samples are resampled and cut into VAD chunks with the project's own functions
(``resample_to_wav``, ``vad_spans``, ``write_chunks``), taking whole files until at least
``--minutes`` of audio, as one source. ``label_source`` (the pseudo-label stage's code) then
labels them with the project's label params (``labels.source: pseudo``: every chunk goes
through the teacher), once with ``scale.label_workers: 1`` and once with ``--workers``,
``--repeats`` times interleaved; the best wall time of each is compared. Model loading is
included (worker processes each load their own teacher: that is the cost of sharding). The
outputs of every run must be byte-identical, and the script checks it.

On CPU, one teacher already uses every core through CTranslate2's threads; workers (replicas
of one model, decoding from as many threads) split the cores (``cores // workers`` threads
each), so the gain is what decoding several chunks at once adds over threads inside one.

    python benchmarks/label_workers.py [--minutes 2.5] [--workers 2] [--repeats 1]
"""

from __future__ import annotations

import argparse
import logging
import os
import tempfile
import time
from dataclasses import replace
from pathlib import Path

import pandas as pd

from tubetune import models
from tubetune.audio import resample_to_wav
from tubetune.labels import label_source
from tubetune.params import ScaleParams, load_params
from tubetune.segment import SEGMENT_COLUMNS, vad_spans, write_chunks

ROOT = Path(__file__).resolve().parents[1]
SAMPLE_DIR = ROOT / "data" / "sample"
OUTPUTS = ("labels.csv", "rejects.csv", "report.json")
log = logging.getLogger("benchmarks.label_workers")


def make_chunks(work: Path, minutes: float) -> tuple[Path, float]:
    """Chunks of whole sample files (at least ``minutes`` of audio) and their total seconds."""
    params = load_params(ROOT / "params.yaml").segment
    segments = work / "segments"
    segments.mkdir()
    rows: list[dict] = []
    total_s = 0.0
    media = sorted(p for p in SAMPLE_DIR.iterdir()
                   if p.is_file() and p.suffix not in (".vtt", ".md"))
    for path in media:
        wav = work / f"{path.stem}.wav"
        resample_to_wav(path, wav)
        spans = vad_spans(wav, params.min_s, params.max_s, params.pad_ms)
        for span, chunk in zip(spans, write_chunks(wav, spans, segments, path.stem),
                               strict=True):
            rows.append({"source": "bench", "item": path.stem, "start_ms": span.start_ms,
                         "end_ms": span.end_ms,
                         "duration_s": (span.end_ms - span.start_ms) / 1000,
                         "path": str(chunk)})
            total_s += (span.end_ms - span.start_ms) / 1000
        if total_s >= minutes * 60:
            break
    pd.DataFrame(rows, columns=SEGMENT_COLUMNS).to_csv(segments / "segments.csv", index=False)
    return segments, total_s


def teacher_dir(work: Path) -> Path:
    """The pipeline's base model when built (``models/base/ct2``), else the bundled one."""
    built = ROOT / "models" / "base" / "ct2"
    if (built / "model.bin").is_file():
        return built
    out = work / "ct2"
    models._assemble_bundled(models.BUNDLED_MODELS[models.DEFAULT_MODEL], out)
    return out


def run(segments: Path, out: Path, model: Path, workers: int) -> float:
    """Wall seconds of one label_source run with ``workers`` local workers."""
    params = replace(load_params(ROOT / "params.yaml").labels, source="pseudo")
    start = time.perf_counter()
    label_source(segments, segments.parent / "no-raw", out, "bench", model, "en", "transcribe",
                 params, scale=ScaleParams(label_workers=workers))
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--minutes", type=float, default=2.5)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=1)
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        segments, audio_s = make_chunks(work, args.minutes)
        chunks = len(pd.read_csv(segments / "segments.csv"))
        model = teacher_dir(work)
        times: dict[int, list[float]] = {1: [], args.workers: []}
        reference: dict[str, bytes] | None = None
        for repeat in range(args.repeats):
            for workers in times:
                out = work / f"labels-{workers}-{repeat}"
                times[workers].append(run(segments, out, model, workers))
                produced = {name: (out / name).read_bytes() for name in OUTPUTS}
                reference = reference or produced
                if produced != reference:
                    raise SystemExit(f"outputs of {workers} worker(s) differ from the first run")
                print(f"repeat {repeat + 1}: {workers} worker(s) {times[workers][-1]:.1f} s",
                      flush=True)
        kept = len(pd.read_csv(work / "labels-1-0" / "labels.csv"))
    one, many = min(times[1]), min(times[args.workers])
    beam = load_params(ROOT / "params.yaml").labels.beam_size
    print(f"\n{chunks} chunks, {audio_s / 60:.1f} min of audio ({kept} labels kept), "
          f"{os.cpu_count()} CPU cores, faster-whisper int8, beam {beam}")
    print(f"{'workers':>8} {'wall s':>8} {'audio s / wall s':>17}")
    for workers, wall in ((1, one), (args.workers, many)):
        print(f"{workers:>8} {wall:>8.1f} {audio_s / wall:>17.2f}")
    print(f"ratio ({args.workers} vs 1 worker): {one / many:.2f}x; outputs byte-identical")


if __name__ == "__main__":
    main()
