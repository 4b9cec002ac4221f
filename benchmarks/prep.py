"""Benchmark of audio preparation (convert + resample + segment) against its targets.

Prints one table, every ratio measured in this run:

- our convert+resample+segment wall time vs the floor (one ffmpeg pass decoding the input
  straight to 16 kHz mono WAV); target <= 1.5x. Best of ``--repeats`` runs, interleaved.
  With ``segment.method: vad`` the resample stage also scores speech with Silero VAD (long
  files in 5-minute pieces on every core); with ``fixed`` it does not.
- the seed's way (the input to WAV, then one ffmpeg process per 10 s window every 8 s) vs
  ours; target >= 5x faster. ``--seed-chunks`` windows spread over the file are timed and the
  per-window mean extrapolated to all windows.
- peak RSS of each stage on a ``--long-hours`` input, each stage in its own process as DVC
  runs it, ffmpeg children included; target <= 500 MB.
- ``dvc status`` on a no-op pipeline of 50 per-source folders x 400 chunk files (the
  layout of data/segments) plus one aggregate stage; target <= 5 s.

Input: the bundled synthetic speech sample ``cooking-tips.mp4`` (espeak speech with pauses;
H.264 + AAC stereo 44.1 kHz) looped by stream copy to the requested length, so making hours
of realistic speech takes seconds and no Python memory.

    python benchmarks/prep.py [--hours 1] [--long-hours 3] [--skip-rss] [--skip-dvc]
"""

from __future__ import annotations

import argparse
import logging
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pandas as pd

from tubetune.audio import convert_source, ffmpeg_exe, resample_source
from tubetune.constants import SAMPLE_RATE
from tubetune.segment import segment_source

ROOT = Path(__file__).resolve().parents[1]
SAMPLE = ROOT / "data" / "sample" / "cooking-tips.mp4"
SEGMENT = {"length_s": 10.0, "overlap_s": 2.0, "min_s": 1.0, "max_s": 30.0, "pad_ms": 200}
STAGES = ("convert", "resample", "segment")
log = logging.getLogger("benchmarks.prep")


def ffmpeg(*args: str | Path) -> None:
    """Run the pipeline's ffmpeg quietly; raise if it fails."""
    cmd = [ffmpeg_exe(), "-hide_banner", "-nostdin", "-v", "error", "-y", *map(str, args)]
    subprocess.run(cmd, check=True)


def make_input(path: Path, hours: float) -> Path:
    """Loop the sample to ``hours`` by stream copy (streamed by ffmpeg, reused if present)."""
    if not path.exists():
        tmp = path.with_suffix(".part.mp4")
        ffmpeg("-stream_loop", "-1", "-i", SAMPLE, "-t", hours * 3600, "-c", "copy", tmp)
        tmp.rename(path)
    return path


def timed(fn: Callable[[], object]) -> float:
    """Wall time of one call."""
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def project(root: Path, media: Path) -> Path:
    """A download-stage output for one source: the media (symlinked) and manifest.csv."""
    raw = root / "raw" / "bench"
    raw.mkdir(parents=True, exist_ok=True)
    link = raw / f"talk{media.suffix}"
    if not link.exists():
        link.symlink_to(media)
    manifest = pd.DataFrame([{"item": "talk", "media": link.name, "language": "en"}])
    manifest.to_csv(raw / "manifest.csv", index=False)
    return root


def run_stage(root: Path, stage: str, method: str = "vad") -> None:
    """Run one stage of the pipeline library on the project at ``root``."""
    d = {name: root / name / "bench" for name in ("raw", "converted", "resampled", "segments")}
    if stage == "convert":
        convert_source(d["raw"], d["converted"], "bench")
    elif stage == "resample":
        resample_source(d["converted"], d["resampled"], "bench", score_speech=method == "vad")
    else:
        segment_source(d["resampled"], d["segments"], "bench", method=method, **SEGMENT)


def seed_way(media: Path, work: Path, duration_s: float, n_chunks: int) -> tuple[float, int]:
    """Seed recipe: media -> WAV, then one ffmpeg per 10 s window (8 s step) to 16 kHz mono.

    Returns (estimated total seconds, number of windows); ``n_chunks`` evenly spread windows
    are run and their mean time scaled to all windows.
    """
    work.mkdir(parents=True, exist_ok=True)
    full = work / "full.wav"
    start = time.perf_counter()
    ffmpeg("-i", media, "-vn", full)
    to_wav = time.perf_counter() - start
    starts = list(range(0, int(duration_s), 8))
    picked = starts[:: max(1, len(starts) // n_chunks)][:n_chunks]
    start = time.perf_counter()
    for s in picked:
        ffmpeg("-ss", s, "-t", 10, "-i", full, "-ac", 1, "-ar", SAMPLE_RATE, work / f"c{s}.wav")
    per_chunk = (time.perf_counter() - start) / len(picked)
    full.unlink()
    return to_wav + per_chunk * len(starts), len(starts)


def peak_rss_mb(root: Path, stage: str) -> tuple[float, float]:
    """Peak RSS (MB) of one stage run in a fresh process: (python, largest ffmpeg child).

    Python's peak is VmHWM: ``ru_maxrss`` survives exec on Linux, so it would report this
    benchmark's own peak. The children's ``ru_maxrss`` is an upper bound for ffmpeg (it
    includes the stage process's size when ffmpeg was forked).
    """
    code = (
        "import resource, sys; sys.path.insert(0, sys.argv[1]);"
        "from benchmarks.prep import run_stage; from pathlib import Path;"
        "run_stage(Path(sys.argv[2]), sys.argv[3]);"
        "hwm = [l for l in open('/proc/self/status') if l.startswith('VmHWM')][0].split()[1];"
        "print(hwm, resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss)"
    )
    cmd = [sys.executable, "-c", code, str(ROOT), str(root), stage]
    out = subprocess.run(cmd, check=True, capture_output=True, text=True).stdout.split()
    return int(out[-2]) / 1024, int(out[-1]) / 1024


MAKE_CHUNKS = """import os, sys
out = os.path.join("chunks", sys.argv[1])
os.makedirs(out, exist_ok=True)
for i in range(400):
    with open(os.path.join(out, f"{sys.argv[1]}_{i * 8000:09d}_{i * 8000 + 10000:09d}.wav"),
              "wb") as fh:
        fh.write(os.urandom(2048))
"""


def dvc_status_s(work: Path, repeats: int) -> float:
    """Best ``dvc status`` time on a no-op 20,000-chunk pipeline in per-source folders."""
    dvc = str(Path(sys.executable).with_name("dvc"))
    if work.exists():
        shutil.rmtree(work)
    work.mkdir(parents=True)
    sources = "\n".join(f"      - s{i:02d}" for i in range(50))
    (work / "make_chunks.py").write_text(MAKE_CHUNKS)
    (work / "dvc.yaml").write_text(
        "stages:\n  segment:\n    foreach:\n" + sources + "\n"
        "    do:\n      cmd: python make_chunks.py ${item}\n"
        "      deps:\n        - make_chunks.py\n      outs:\n        - chunks/${item}\n"
        "  aggregate:\n    cmd: python -c \"import os; open('n.txt', 'w').write("
        "str(sum(len(f) for _, _, f in os.walk('chunks'))))\"\n"
        "    deps: [chunks]\n    outs: [n.txt]\n"
    )

    def run(*args: str) -> None:
        subprocess.run(args, cwd=work, check=True, capture_output=True)

    run("git", "init", "-q")
    run(dvc, "init", "-q")
    log.info("dvc repro of 50 x 400 chunks (once)")
    run(dvc, "repro", "-q")
    return min(timed(lambda: run(dvc, "status", "-q")) for _ in range(repeats))


def row(measure: str, value: str, target: str, ok: bool | None) -> str:
    """One Markdown table row; ``ok`` None means informational."""
    verdict = {True: "PASS", False: "FAIL", None: "info"}[ok]
    return f"| {measure} | {value} | {target} | {verdict} |"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--hours", type=float, default=1.0, help="length of the timed input")
    parser.add_argument("--long-hours", type=float, default=3.0, help="input for peak RSS")
    parser.add_argument("--repeats", type=int, default=3, help="best of N, interleaved")
    parser.add_argument("--seed-chunks", type=int, default=60, help="seed windows to time")
    parser.add_argument("--skip-rss", action="store_true")
    parser.add_argument("--skip-dvc", action="store_true")
    parser.add_argument("--work", type=Path, help="work dir (kept; inputs reused)")
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    logging.getLogger("tubetune").setLevel(logging.WARNING)
    work = args.work or Path(tempfile.mkdtemp(prefix="tubetune-bench-"))
    work.mkdir(parents=True, exist_ok=True)
    print("| measure | value | target | result |\n|---|---|---|---|", flush=True)
    try:
        for line in measure(args, work):
            print(line, flush=True)
    finally:
        if args.work is None:
            shutil.rmtree(work, ignore_errors=True)


def measure(args: argparse.Namespace, work: Path) -> Iterator[str]:
    """Run every measure, yielding table rows as they are known."""
    media = make_input(work / f"input-{args.hours:g}h.mp4", args.hours)
    duration_s = args.hours * 3600
    root = project(work / "project", media)
    floor_wav = work / "floor.wav"
    times: dict[str, list[float]] = {
        k: [] for k in ("floor", *STAGES, "resample-fixed", "segment-fixed")
    }
    log.info("timing %g h: floor and ours, interleaved, best of %d", args.hours, args.repeats)
    for _ in range(args.repeats):
        times["floor"].append(
            timed(lambda: ffmpeg("-i", media, "-vn", "-ac", 1, "-ar", SAMPLE_RATE, floor_wav))
        )
        for stage in STAGES:
            times[stage].append(timed(lambda s=stage: run_stage(root, s)))
        times["segment-fixed"].append(timed(lambda: run_stage(root, "segment", "fixed")))
        times["resample-fixed"].append(timed(lambda: run_stage(root, "resample", "fixed")))
        run_stage(root, "resample")  # the VAD scores back, for the next segment run
    t = {k: min(v) for k, v in times.items()}
    prep = t["convert"] + t["resample"]
    total_vad = prep + t["segment"]
    total_fixed = t["convert"] + t["resample-fixed"] + t["segment-fixed"]
    log.info("seed way: %d windows timed", args.seed_chunks)
    seed_s, n_windows = seed_way(media, work / "seed", duration_s, args.seed_chunks)
    floor = t["floor"]
    yield from [
        row(
            f"floor: 1 ffmpeg pass to 16 kHz mono, {args.hours:g} h",
            f"{floor:.2f} s ({duration_s / floor:.0f}x real time)",
            "",
            None,
        ),
        row(
            "convert / resample+VAD scores / segment vad / resample / segment fixed",
            " / ".join(f"{t[k]:.2f} s" for k in (*STAGES, "resample-fixed", "segment-fixed")),
            "",
            None,
        ),
        row("convert+resample (VAD scoring included) vs floor", f"{prep / floor:.2f}x", "",
            None),
        row(
            "convert+resample+segment (fixed) vs floor",
            f"{total_fixed / floor:.2f}x",
            "<= 1.5x",
            total_fixed <= 1.5 * floor,
        ),
        row(
            "convert+resample+segment (vad, default) vs floor",
            f"{total_vad / floor:.2f}x",
            "<= 1.5x",
            total_vad <= 1.5 * floor,
        ),
        row(
            f"seed way ({n_windows} windows, {args.seed_chunks} timed)",
            f"{seed_s:.1f} s ({seed_s / floor:.1f}x the floor)",
            "",
            None,
        ),
        row(
            "seed way / ours (fixed)",
            f"{seed_s / total_fixed:.1f}x faster",
            ">= 5x",
            seed_s >= 5 * total_fixed,
        ),
        row(
            "seed way / ours (vad, default)",
            f"{seed_s / total_vad:.1f}x faster",
            ">= 5x",
            seed_s >= 5 * total_vad,
        ),
    ]
    if not args.skip_rss:
        long_media = make_input(work / f"input-{args.long_hours:g}h.mp4", args.long_hours)
        long_root = project(work / "long", long_media)
        for stage in STAGES:
            log.info("peak RSS: %s on %g h", stage, args.long_hours)
            py, child = peak_rss_mb(long_root, stage)
            yield row(
                f"peak RSS {stage}, {args.long_hours:g} h input (python / ffmpeg)",
                f"{py:.0f} / {child:.0f} MB",
                "<= 500 MB",
                max(py, child) <= 500,
            )
    if not args.skip_dvc:
        status_s = dvc_status_s(work / "dvc", args.repeats)
        yield row(
            "dvc status, no-op, 50 folders x 400 chunks",
            f"{status_s:.2f} s",
            "<= 5 s",
            status_s <= 5,
        )
    self_rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    yield row("peak RSS of this benchmark process", f"{self_rss:.0f} MB", "", None)


if __name__ == "__main__":
    main()
