"""Benchmark of DVC at scale: 20,000 chunks across 50 sources through the pipeline's stages.

A copy of the project gets ``--sources`` generated sources (the bundled samples looped to
``--chunks`` seconds each, re-encoded at a different gain per source so no two sources share
a chunk, each with its looped subtitles as a sidecar .vtt) and params that cut 1 s windows
and take the subtitles as labels without running the teacher (``labels.source: subtitles``,
``max_subtitle_disagreement: null``). Training is skipped by targeting the aggregate stages
(``dvc repro split label-report``). Prints one table:

- the first ``dvc repro`` (info);
- ``dvc status`` on the finished pipeline, a no-op; target <= 5 s;
- ``dvc push`` to a local remote and ``dvc pull`` into a fresh clone (info);
- adding one more source: ``dvc repro`` of the aggregate stages (only the new source's chain
  and the aggregates run) vs running the same stage scripts directly, without DVC, on the
  same workspace; target <= 1.2x.

    python benchmarks/dvc_scale.py [--sources 50] [--chunks 400] [--work DIR] [--keep]
"""

from __future__ import annotations

import argparse
import logging
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import yaml

from tubetune.audio import ffmpeg_exe
from tubetune.constants import SAMPLE_RATE
from tubetune.fsutil import atomic_write_text
from tubetune.subtitles import read_vtt
from tubetune.transcribe import Segment, render

ROOT = Path(__file__).resolve().parents[1]
SAMPLES = sorted((ROOT / "data" / "sample").glob("*.en.vtt"))
SOURCE_STAGES = ("download", "convert", "resample", "segment", "pseudo_label")
AGGREGATE_STAGES = ("split", "label_report")
TARGETS = ("split", "label-report")
"""What the benchmark reproduces: every per-source chain and the aggregates, no training."""
PARAMS = {
    "segment": {"method": "fixed", "length_s": 1.0, "overlap_s": 0.0, "min_s": 0.5},
    "labels": {"source": "subtitles", "max_subtitle_disagreement": None,
               "max_subtitle_cut": 1.0},
}
log = logging.getLogger("benchmarks.dvc_scale")


def sh(*cmd: str | Path, cwd: Path) -> float:
    """Run a command (the venv's tools first on PATH); its wall time. Raises on failure."""
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}",
           "DVC_NO_ANALYTICS": "1"}
    start = time.perf_counter()
    proc = subprocess.run([str(c) for c in cmd], cwd=cwd, env=env, capture_output=True,
                          text=True)
    if proc.returncode:
        raise RuntimeError(f"{' '.join(map(str, cmd))}: exit {proc.returncode}\n"
                           f"{proc.stdout[-2000:]}\n{proc.stderr[-3000:]}")
    return time.perf_counter() - start


def tool(name: str) -> str:
    """A console script of this interpreter's environment (dvc)."""
    return str(Path(sys.executable).with_name(name))


def copy_project(dest: Path) -> Path:
    """The project's files (tracked and untracked-but-not-ignored) as a fresh git repo."""
    out = subprocess.run(["git", "ls-files", "-co", "--exclude-standard", "-z"], cwd=ROOT,
                         capture_output=True, check=True).stdout.decode()
    for rel in filter(None, out.split("\0")):
        if rel != "dvc.lock" and (ROOT / rel).is_file():
            (dest / rel).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(ROOT / rel, dest / rel)
    for cmd in (["git", "init", "-q"], ["git", "config", "user.email", "bench@invalid"],
                ["git", "config", "user.name", "bench"]):
        sh(*cmd, cwd=dest)
    return dest


def make_source(index: int, seconds: int, media_dir: Path) -> Path:
    """Sample ``index % 5`` looped to ``seconds`` at its own gain, with one cue per second.

    The cues repeat the sample's subtitle lines, one per 1 s chunk (a real cue spans several
    chunks and would be cut), so every chunk gets a subtitle label.
    """
    vtt = SAMPLES[index % len(SAMPLES)]
    sample = next(p for p in vtt.parent.glob(vtt.name.removesuffix(".en.vtt") + ".*")
                  if p.suffix != ".vtt")
    out = media_dir / f"s{index:02d}.m4a"
    if not out.exists():
        gain = 0.5 + 0.01 * index
        subprocess.run(
            [ffmpeg_exe(), "-v", "error", "-nostdin", "-y", "-stream_loop", "-1", "-i",
             str(sample), "-t", str(seconds), "-af", f"volume={gain:.2f}", "-ac", "1",
             "-ar", str(SAMPLE_RATE), "-c:a", "aac", "-b:a", "32k", str(out)],
            check=True,
        )
    texts = [cue.text for cue in read_vtt(vtt)]
    cues = [Segment(k + 0.1, k + 0.9, texts[k % len(texts)]) for k in range(seconds)]
    atomic_write_text(out.with_suffix(".en.vtt"), render(cues, "vtt"))
    return out


def write_params(repo: Path, media: list[Path]) -> None:
    """The project's params with the generated sources and the benchmark's overrides."""
    path = repo / "params.yaml"
    params = yaml.safe_load(path.read_text())
    params["sources"] = {m.stem: {"url": str(m)} for m in media}
    for section, values in PARAMS.items():
        params[section].update(values)
    path.write_text(yaml.safe_dump(params, sort_keys=False, allow_unicode=True))


def add_source_direct(repo: Path, name: str) -> float:
    """Seconds to run one source's stage scripts and the aggregate stages without DVC."""
    python = sys.executable
    total = sum(sh(python, f"stages/{stage}.py", name, cwd=repo) for stage in SOURCE_STAGES)
    return total + sum(sh(python, f"stages/{stage}.py", cwd=repo) for stage in AGGREGATE_STAGES)


def _remove_source(repo: Path, name: str) -> None:
    """Delete one source's outputs from every per-source stage."""
    for stage in ("raw", "converted", "resampled", "segments", "labels"):
        shutil.rmtree(repo / "data" / stage / name, ignore_errors=True)


def _back_to_committed(repo: Path, extra: str) -> None:
    """Undo an earlier run's added source: committed params, lock and outputs."""
    sh("git", "reset", "-q", "--hard", cwd=repo)
    _remove_source(repo, extra)
    sh(tool("dvc"), "checkout", "-q", "--force", *TARGETS, cwd=repo)


def row(measure: str, value: str, target: str, ok: bool | None) -> str:
    """One Markdown table row; ``ok`` None means informational."""
    verdict = {True: "PASS", False: "FAIL", None: "info"}[ok]
    return f"| {measure} | {value} | {target} | {verdict} |"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sources", type=int, default=50)
    parser.add_argument("--chunks", type=int, default=400, help="1 s chunks per source")
    parser.add_argument("--repeats", type=int, default=3, help="best of N for dvc status")
    parser.add_argument("--work", type=Path, help="work dir (generated media reused)")
    parser.add_argument("--keep", action="store_true", help="keep the work dir")
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    work = args.work or Path(tempfile.mkdtemp(prefix="tubetune-dvc-scale-"))
    media_dir = work / "media"
    media_dir.mkdir(parents=True, exist_ok=True)
    ready = work / "repo.ready"  # the first repro finished: --work reruns only the measures
    for stale in ("clone", "remote") if ready.exists() else ("repo", "clone", "remote"):
        shutil.rmtree(work / stale, ignore_errors=True)
    dvc = tool("dvc")
    repo = work / "repo"
    try:
        log.info("generating %d sources of %d s", args.sources + 1, args.chunks)
        media = [make_source(i, args.chunks, media_dir) for i in range(args.sources + 1)]
        print("| measure | value | target | result |\n|---|---|---|---|", flush=True)
        if ready.exists():
            log.info("reusing the finished pipeline in %s", repo)
            _back_to_committed(repo, media[-1].stem)
        else:
            copy_project(repo)
            write_params(repo, media[:-1])
            sh(dvc, "remote", "add", "-d", "-f", "bench", work / "remote", cwd=repo)
            sh("git", "add", "-A", cwd=repo)
            sh("git", "commit", "-qm", "benchmark project", cwd=repo)
            log.info("first dvc repro (every source)")
            first = sh(dvc, "repro", *TARGETS, cwd=repo)
            sh("git", "add", "-A", cwd=repo)
            sh("git", "commit", "-qm", "pipeline ran", cwd=repo)
            ready.touch()
            n_chunks = sum(1 for _ in (repo / "data" / "segments").glob("*/*.wav"))
            print(row(f"first dvc repro: {args.sources} sources, {n_chunks} chunks",
                      f"{first:.0f} s", "", None), flush=True)

        # -q: exit 0 only when up to date, so a changed stage fails the benchmark
        status = min(sh(dvc, "status", "-q", *TARGETS, cwd=repo) for _ in range(args.repeats))
        print(row("dvc status, no-op", f"{status:.2f} s", "<= 5 s", status <= 5), flush=True)
        push = sh(dvc, "push", "-q", "--with-deps", *TARGETS, cwd=repo)
        print(row("dvc push to a local remote", f"{push:.1f} s", "", None), flush=True)
        sh("git", "clone", "-q", repo, work / "clone", cwd=work)
        pull = sh(dvc, "pull", "-q", "--with-deps", *TARGETS, cwd=work / "clone")
        print(row("dvc pull into a fresh clone", f"{pull:.1f} s", "", None), flush=True)
        shutil.rmtree(work / "clone")

        new = media[-1].stem
        write_params(repo, media)
        log.info("adding source %s: stage scripts without DVC", new)
        direct = add_source_direct(repo, new)
        _remove_source(repo, new)
        sh(dvc, "checkout", "-q", "--force", *TARGETS, cwd=repo)
        log.info("adding source %s: dvc repro", new)
        with_dvc = sh(dvc, "repro", *TARGETS, cwd=repo)
        ratio = with_dvc / direct
        print(row(f"add one source: dvc repro {with_dvc:.1f} s vs its scripts {direct:.1f} s",
                  f"{ratio:.2f}x", "<= 1.2x", ratio <= 1.2), flush=True)
    finally:
        if not args.keep:
            shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
