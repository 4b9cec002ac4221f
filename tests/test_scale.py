"""Scaling out: the torchrun command, DDP training on two CPU processes, and sharded
labelling (worker processes, Ray) that writes the same bytes as one process."""

from __future__ import annotations

import importlib.util
import itertools
import json
import logging
import os
import subprocess
import textwrap
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import soundfile as sf

from tubetune import sharding
from tubetune.params import LabelParams, ScaleParams, TrainParams
from tubetune.sharding import TeacherSpec, shard_bounds
from tubetune.train import launcher_command, node_rank, relaunch, under_launcher

ROOT = Path(__file__).resolve().parents[1]
SR = 16000
OUTPUTS = ("labels.csv", "rejects.csv", "report.json")

# ----------------------------------------------------------------------------- launcher


@pytest.mark.parametrize("gpus", [0, 1])
def test_one_gpu_needs_no_launcher(gpus: int) -> None:
    assert launcher_command(gpus, "stages/train.py", ["round1"], python="py") == [
        "py", "stages/train.py", "round1"]


@pytest.mark.parametrize("gpus", [2, 8])
def test_several_gpus_run_under_torchrun_standalone(gpus: int) -> None:
    assert launcher_command(gpus, "stages/train.py", ["round1"], python="py") == [
        "py", "-m", "torch.distributed.run", f"--nproc_per_node={gpus}", "--standalone",
        "--nnodes=1", "stages/train.py", "round1"]


def test_several_nodes_meet_at_the_rendezvous_endpoint() -> None:
    command = launcher_command(8, "stages/train.py", ["round1"], nnodes=2, node_rank=1,
                               rdzv_endpoint="10.0.0.1:29500", python="py")
    assert command == [
        "py", "-m", "torch.distributed.run", "--nproc_per_node=8", "--nnodes=2",
        "--node_rank=1", "--master_addr=10.0.0.1", "--master_port=29500", "stages/train.py",
        "round1"]
    ipv6 = launcher_command(1, "s.py", [], nnodes=3, node_rank=2,
                            rdzv_endpoint="[fd00::1]:29400", python="py")
    assert ipv6[3:] == ["--nproc_per_node=1", "--nnodes=3", "--node_rank=2",
                        "--master_addr=fd00::1", "--master_port=29400", "s.py"]
    with pytest.raises(ValueError, match="rdzv_endpoint"):
        launcher_command(2, "s.py", [], nnodes=2)
    with pytest.raises(ValueError, match="node rank 2"):
        launcher_command(2, "s.py", [], nnodes=2, node_rank=2, rdzv_endpoint="h:1")


def test_launcher_environment_is_honoured(monkeypatch: pytest.MonkeyPatch) -> None:
    assert under_launcher({"WORLD_SIZE": "2", "LOCAL_RANK": "0"})
    assert under_launcher({"LOCAL_RANK": "0"})
    assert not under_launcher({})
    assert node_rank({}) == 0
    assert node_rank({"TUBETUNE_NODE_RANK": "3", "NODE_RANK": "1"}) == 3
    assert node_rank({"NODE_RANK": "1"}) == 1

    calls: list[list[str]] = []
    monkeypatch.setattr(os, "execv", lambda exe, argv: calls.append(argv))
    for name in ("WORLD_SIZE", "LOCAL_RANK", "TUBETUNE_NODE_RANK", "NODE_RANK"):
        monkeypatch.delenv(name, raising=False)
    relaunch(TrainParams(num_gpus=1), "stages/train.py", ["r1"])
    assert calls == []  # one GPU: trains in this process
    if not __import__("torch").cuda.is_available():
        with pytest.raises(ValueError, match=r"train\.num_gpus: 2, but this machine has 0"):
            relaunch(TrainParams(num_gpus=2), "stages/train.py", ["r1"])
    monkeypatch.setenv("TUBETUNE_NODE_RANK", "1")
    relaunch(TrainParams(num_nodes=2, rdzv_endpoint="head:29500"), "stages/train.py", ["r1"])
    assert calls[-1][1:] == ["-m", "torch.distributed.run", "--nproc_per_node=1", "--nnodes=2",
                             "--node_rank=1", "--master_addr=head", "--master_port=29500",
                             "stages/train.py", "r1"]
    monkeypatch.setenv("WORLD_SIZE", "2")  # already launched (torchrun, accelerate launch)
    relaunch(TrainParams(num_gpus=8), "stages/train.py", ["r1"])
    assert len(calls) == 1


DDP_SCRIPT = textwrap.dedent("""
    import json, os, sys
    from pathlib import Path
    from tubetune.params import TrainParams
    from tubetune.train import train_stage

    root = Path(sys.argv[1])
    params = TrainParams(**json.loads(sys.argv[2]))
    summary = train_stage(root / "train.csv", root / "validation.csv", root / "model",
                          root / "out", root / "ckpt", root / "live", root / "train.json",
                          "en", "transcribe", params)
    (root / f"rank{os.environ['RANK']}.json").write_text(json.dumps(summary))
""")


@pytest.mark.slow
def test_ddp_on_two_cpu_processes_writes_once_from_rank_zero(tmp_path: Path) -> None:
    """torchrun (the command launcher_command builds) with 2 CPU processes (gloo)."""
    from helpers.tiny_whisper import make_tiny_whisper

    make_tiny_whisper(tmp_path / "model")
    rows = []
    for i, text in enumerate(["the cat sat", "a bird sings", "rain falls", "open the door"]):
        path = tmp_path / f"clip{i}.wav"
        audio = 0.3 * np.sin(np.arange(16000 + 2000 * i) * (0.05 + 0.01 * i))
        sf.write(path, (audio * 32767).astype(np.int16), SR, subtype="PCM_16")
        rows.append({"path": str(path), "text": text, "language": "en"})
    pd.DataFrame(rows).to_csv(tmp_path / "train.csv", index=False)
    pd.DataFrame(columns=["path", "text", "language"]).to_csv(tmp_path / "validation.csv",
                                                          index=False)  # no evaluation
    (tmp_path / "ddp.py").write_text(DDP_SCRIPT)
    settings = {"max_steps": 2, "save_steps": 1, "per_device_batch_size": 2,
                "gradient_accumulation_steps": 2, "warmup_steps": 0, "logging_steps": 1,
                "generation_max_length": 8, "num_gpus": 2}
    command = launcher_command(2, str(tmp_path / "ddp.py"),
                               [str(tmp_path), json.dumps(settings)])
    env = {k: v for k, v in os.environ.items() if k not in ("WORLD_SIZE", "LOCAL_RANK")}
    env.update(OMP_NUM_THREADS="1", PYTHONPATH=str(ROOT / "tests"))
    proc = subprocess.run(command, capture_output=True, text=True, timeout=300, env=env,
                          cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    summaries = [json.loads((tmp_path / f"rank{r}.json").read_text()) for r in (0, 1)]
    timing = ("train_runtime_s", "train_samples_per_second")
    assert [{k: v for k, v in s.items() if k not in timing} for s in summaries] == [
        {k: v for k, v in summaries[0].items() if k not in timing}] * 2  # loss averaged
    assert summaries[0]["steps"] == 2
    assert summaries[0]["effective_batch_size"] == 2 * 2 * 2  # per device x accumulation x 2
    assert json.loads((tmp_path / "train.json").read_text()) == summaries[0]
    assert (tmp_path / "out" / "model.safetensors").is_file()
    assert not (tmp_path / "ckpt").exists()  # removed by rank 0 after both finished
    assert (tmp_path / "live" / "metrics.json").is_file()


# ----------------------------------------------------------------------------- labelling


def test_shards_are_contiguous_and_balanced() -> None:
    assert shard_bounds(10, 3) == [(0, 4), (4, 7), (7, 10)]
    assert shard_bounds(2, 4) == [(0, 1), (1, 2)]
    assert shard_bounds(0, 2) == []
    bounds = shard_bounds(1001, 8)
    assert bounds[0][0] == 0 and bounds[-1][1] == 1001
    assert all(a[1] == b[0] for a, b in itertools.pairwise(bounds))
    with pytest.raises(ValueError):
        shard_bounds(3, 0)


@pytest.fixture(scope="module")
def corpus(tmp_path_factory: pytest.TempPathFactory) -> dict:
    """Four chunks cut by the segment code (three sentences and noise) and two teachers.

    ``tiny``: a random Whisper (CTranslate2) whose decodes never satisfy the fallback
    thresholds, so every chunk is re-decoded with sampling: each label depends on the
    seeded random stream, the hardest case for sharding. ``base``: the bundled whisper-base,
    real labels and real kernels (an environment that rounds differently shows up here).
    """
    from helpers.tiny_whisper import make_tiny_whisper
    from tubetune import conversion, models
    from tubetune.audio import load_audio
    from tubetune.segment import SEGMENT_COLUMNS, Span, write_chunks
    from tubetune.subtitles import read_vtt

    root = tmp_path_factory.mktemp("scale")
    conversion.convert_hf_to_ct2(make_tiny_whisper(root / "tiny-hf"), root / "tiny")
    models._assemble_bundled(models.BUNDLED_MODELS[models.DEFAULT_MODEL], root / "base")
    speech = load_audio(ROOT / "data/sample/cooking-tips.mp4")
    cues = read_vtt(ROOT / "data/sample/cooking-tips.en.vtt")[:3]
    noise = np.random.default_rng(0).normal(0, 0.1, 3 * SR)
    wav = root / "item.wav"
    sf.write(wav, (np.clip(np.concatenate([speech, noise]), -1, 1) * 32767).astype(np.int16),
             SR, subtype="PCM_16")
    end_ms = len(speech) * 1000 // SR
    spans = [*(Span(c.start_ms, c.end_ms) for c in cues), Span(end_ms, end_ms + 3000)]
    segments = root / "segments"
    segments.mkdir()
    paths = write_chunks(wav, spans, segments, "item")
    pd.DataFrame(
        [{"source": "s", "item": "item", "start_ms": s.start_ms, "end_ms": s.end_ms,
          "duration_s": (s.end_ms - s.start_ms) / 1000, "path": str(p)}
         for s, p in zip(spans, paths, strict=True)],
        columns=SEGMENT_COLUMNS,
    ).to_csv(segments / "segments.csv", index=False)
    return {"root": root, "segments": segments}


def test_auto_workers_one_per_core_as_work_and_memory_allow(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import psutil

    (tmp_path / "ct2").mkdir()
    (tmp_path / "ct2" / "model.bin").write_bytes(b"0" * 1000)
    spec = TeacherSpec("faster-whisper", tmp_path / "ct2", tmp_path / "hf", device="cpu")
    monkeypatch.setattr(os, "cpu_count", lambda: 4)
    gib = 2**30
    memory = {"available": 64 * gib}
    monkeypatch.setattr(psutil, "virtual_memory", lambda: type("M", (), memory)())
    assert sharding.auto_workers(spec, 1000) == 4  # one per core
    assert sharding.auto_workers(spec, 3) == 3  # replicas in one process cost no start-up
    processes = TeacherSpec("transformers", tmp_path / "ct2", tmp_path / "ct2", device="cpu")
    assert sharding.auto_workers(processes, 20) == 2  # worker processes: 8+ chunks each
    assert sharding.auto_workers(processes, 3) == 1
    memory["available"] = gib + 1  # room for one worker (600 MiB each besides the model)
    assert sharding.auto_workers(spec, 1000) == 1
    memory["available"] = 0
    assert sharding.auto_workers(spec, 1000) == 1  # never fewer than one
    memory["available"] = 64 * gib
    pinned = TeacherSpec("faster-whisper", tmp_path / "ct2", tmp_path / "hf", device="cpu",
                         cpu_threads=4)
    assert sharding.auto_workers(pinned, 1000) == 1  # labels.cpu_threads asks for one teacher


# Lenient filters but a token cap, so that both CSVs usually get rows (the random decodes
# ran to 98-224 tokens here); two temperatures keep the sampling short.
TINY = LabelParams(source="pseudo", beam_size=2, temperatures=[0.0, 1.0],
                   min_avg_logprob=-20.0, min_language_probability=0.0,
                   max_no_speech_prob=1.0, min_unique_word_ratio=0.0, max_ngram_repeats=100,
                   max_char_run=100, max_chars_per_s=1000.0, max_label_tokens=200)
BASE = LabelParams(source="pseudo")


def _label(corpus: dict, model: str, out: str, scale: ScaleParams) -> dict[str, bytes]:
    from tubetune.labels import label_source

    out_dir = corpus["root"] / model / out
    label_source(corpus["segments"], corpus["root"] / "no-raw", out_dir, "s",
                 corpus["root"] / model, "en", "transcribe",
                 TINY if model == "tiny" else BASE, scale=scale)
    return {name: (out_dir / name).read_bytes() for name in OUTPUTS}


@pytest.fixture(scope="module")
def single(corpus: dict) -> dict[str, dict[str, bytes]]:
    """One process's outputs, per teacher."""
    one = ScaleParams(label_workers=1)
    return {model: _label(corpus, model, "single", one) for model in ("tiny", "base")}


@pytest.mark.slow
def test_two_local_workers_write_the_same_bytes(
    corpus: dict, single: dict, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.INFO, logger="tubetune.sharding"):
        sharded = _label(corpus, "tiny", "local2", ScaleParams(label_workers=2))
    assert sharded == single["tiny"]
    assert any("replaying the sampled fallback of 4 chunk" in r.message for r in caplog.records)
    rows = {model: [len(pd.read_csv(corpus["root"] / model / "single" / name))
                    for name in ("labels.csv", "rejects.csv")] for model in ("tiny", "base")}
    # Every chunk is accounted for; which random decode passes the token cap depends on the
    # CPU's kernels, so only the real teacher is sure to fill both CSVs (noise is rejected).
    assert sum(rows["tiny"]) == 4 and all(rows["base"]), rows


@pytest.mark.slow
def test_two_worker_processes_write_the_same_bytes(
    corpus: dict, single: dict, monkeypatch: pytest.MonkeyPatch
) -> None:
    # On CPU the local runner decodes with replicas in one process (the test above); worker
    # processes are what it starts on GPUs and for the transformers engine.
    monkeypatch.setattr(sharding, "_use_replicas", lambda spec, gpus: False)
    assert _label(corpus, "tiny", "processes2", ScaleParams(label_workers=2)) == single["tiny"]


def test_transformers_teacher_is_reseeded_per_batch(tmp_path: Path) -> None:
    # The transformers engine keeps the teacher interface: every field a filter reads, and
    # sampled fallbacks that draw the same numbers whatever was decoded before.
    from helpers.tiny_whisper import make_tiny_whisper
    from tubetune.engines import DecodeOptions, TransformersTranscriber

    teacher = TransformersTranscriber(make_tiny_whisper(tmp_path, positions=48), "cpu")
    rng = np.random.default_rng(0)
    a, b = (rng.normal(0, 0.1, 2 * SR).astype(np.float32) for _ in range(2))
    options = DecodeOptions("en", "transcribe", beam_size=2, temperatures=(0.0, 1.0))
    first = teacher.transcribe_batch([a], options)
    teacher.transcribe_batch([b], options)
    assert teacher.transcribe_batch([a], options) == first
    (t,) = first
    assert t.language == "en" and t.language_probability == 1.0
    assert 0 < t.num_tokens <= 48 and t.avg_logprob < 0 and 0 <= t.no_speech_prob <= 1
    assert t.compression_ratio > 0


@pytest.fixture(scope="module")
def ray_cluster():
    if importlib.util.find_spec("ray") is None:
        if os.environ.get("CI"):  # CI installs requirements-scale.txt: never skip there
            raise AssertionError("Ray is missing: scripts/setup.sh installs it")
        pytest.skip("Ray is not installed: pip install -r requirements-scale.txt")
    # Keep this machine-local Ray on the loopback interface (by default it uses the address
    # other machines would reach it at); read when ray is imported.
    old = os.environ.get("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER")
    os.environ["RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"] = "0"
    import ray

    ray.init(address="local", num_cpus=2, include_dashboard=False, logging_level=logging.WARNING)
    yield ray
    ray.shutdown()
    if old is None:
        del os.environ["RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"]
    else:
        os.environ["RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"] = old


@pytest.mark.slow
@pytest.mark.parametrize("model", ["tiny", "base"])
def test_ray_actors_write_the_same_bytes(
    corpus: dict, single: dict, ray_cluster, model: str
) -> None:
    scale = ScaleParams(label_runner="ray", label_workers=2)
    assert _label(corpus, model, "ray2", scale) == single[model]
