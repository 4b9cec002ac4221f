"""Run the teacher over many batches: in this process, in worker processes, or on Ray.

``scale.label_runner`` picks the runner, ``scale.label_workers`` how many teachers decode at
once. ``local`` on CPU with faster-whisper loads the model once, with that many CTranslate2
replicas sharing its weights, and decodes from as many threads (CTranslate2 releases the GIL);
otherwise it starts that many processes (one teacher each; on CUDA worker ``i`` takes GPU
``i % GPUs``), each with a contiguous shard of the batches. ``ray`` runs the same code as a
pool of Ray Data actors (one GPU each when the cluster has GPUs). ``auto``
(:func:`auto_workers`) is one worker per GPU, or on CPU one single-threaded worker per core:
decoding one chunk is memory-bound and gains little from a second thread. On 2 cores and
benchmarks/label.py's 22 chunks (greedy): one 2-thread teacher 52.8 s, two 1-thread teacher
processes 46.1 s (with ~3 s of start-up: spawn, imports, model load), two 1-thread replicas in
one process 40.7 s (nothing to start, one copy of the weights in the caches).

Whatever the runner and worker count, the result is the same, byte for byte:

1. Batches (``labels.batch_size`` chunks) are formed before sharding and are the unit of
   work, so every chunk is decoded in the same batch as in one process (batch composition
   can change floating-point results).
2. The first pass uses no random numbers: temperature 0 is a beam search; the transformers
   engine reseeds torch per batch (:mod:`tubetune.engines`).
3. The sampled temperature fallback (rare: chunks whose first decode looks like a
   hallucination) draws from CTranslate2's generator, which lives in the model's thread and
   cannot be reseeded. Those retries are therefore replayed afterwards, in chunk order, by
   one freshly loaded (seeded) teacher: its draws then match a single process's one for one,
   since temperature 0 never consumed any.

Output order is the input order; labels.py writes the CSVs from it exactly as before.
"The same" assumes the same kind of device: int8 or fp16 kernels round differently on
another CPU or GPU model, as they would for a single process there.
"""

from __future__ import annotations

import json
import logging
import multiprocessing
import os
import queue
import time
from collections.abc import Callable, Sequence
from concurrent.futures import Future, ProcessPoolExecutor, ThreadPoolExecutor, as_completed
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from tubetune.audio import load_audio
from tubetune.engines import (
    DecodeOptions,
    FirstPass,
    Teacher,
    Transcript,
    finish_batch,
    load_teacher,
)

log = logging.getLogger(__name__)

RUNNERS = ("local", "ray")
Outcome = list[Transcript] | str
"""A batch's transcripts in chunk order, or why the whole batch failed."""
First = list[FirstPass] | str
Progress = Callable[[int], None]


@dataclass(frozen=True)
class TeacherSpec:
    """Everything a worker needs to load the teacher (picklable, sent to every worker)."""

    engine: str
    ct2_dir: Path
    hf_dir: Path
    device: str = "auto"
    compute_type: str = "auto"
    cpu_threads: int = 0

    def load(
        self, device_index: int = 0, cpu_threads: int | None = None, replicas: int = 1
    ) -> Teacher:
        """A fresh teacher (a new model, hence a freshly seeded random stream)."""
        threads = self.cpu_threads if cpu_threads is None else cpu_threads
        return load_teacher(self.engine, self.ct2_dir, self.hf_dir, self.device,
                            self.compute_type, threads, device_index, replicas)


def shard_bounds(n: int, workers: int) -> list[tuple[int, int]]:
    """``workers`` contiguous ``(start, end)`` ranges covering ``range(n)``, sizes within 1.

    Earlier shards get the extra items; empty shards are left out.
    """
    if workers < 1:
        raise ValueError(f"workers must be >= 1, got {workers}")
    size, extra = divmod(n, workers)
    bounds, start = [], 0
    for i in range(workers):
        end = start + size + (1 if i < extra else 0)
        if end > start:
            bounds.append((start, end))
        start = end
    return bounds


MIN_CHUNKS_PER_WORKER = 8
"""``auto`` starts no more worker processes than this many chunks each can keep busy: each
pays a few seconds of start-up (a process, the imports and a model load). Replicas in one
process (CPU, faster-whisper) cost nothing to start."""
_WORKER_OVERHEAD_BYTES = 600 * 2**20
"""Memory of one worker besides its model (python, CTranslate2/torch, audio, activations)."""


def auto_workers(spec: TeacherSpec, chunks: int) -> int:
    """Workers for ``scale.label_workers: auto`` on this machine (local runner).

    One per GPU; on CPU one per core, as many as the available memory holds (model files
    twice, plus :data:`_WORKER_OVERHEAD_BYTES`); never more than one when the teacher is
    pinned to ``labels.cpu_threads`` > 1, nor more than there are chunks, nor (for worker
    processes) more than ``chunks`` / :data:`MIN_CHUNKS_PER_WORKER`.
    """
    import psutil

    gpus = gpu_count(spec)
    min_chunks = 1 if _use_replicas(spec, gpus) else MIN_CHUNKS_PER_WORKER
    if gpus:
        slots = gpus
    elif spec.cpu_threads > 1:
        slots = 1
    else:
        model_dir = spec.ct2_dir if spec.engine == "faster-whisper" else spec.hf_dir
        size = sum(f.stat().st_size for f in Path(model_dir).rglob("*") if f.is_file())
        per_worker = 2 * size + _WORKER_OVERHEAD_BYTES
        slots = min(os.cpu_count() or 1, psutil.virtual_memory().available // per_worker)
    return max(1, min(slots, chunks // min_chunks))


def _use_replicas(spec: TeacherSpec, gpus: int) -> bool:
    """Whether the local runner decodes with replicas in this process (CPU, faster-whisper)."""
    return spec.engine == "faster-whisper" and not gpus


def transcribe_batches(
    spec: TeacherSpec,
    batches: Sequence[Sequence[Path]],
    options: DecodeOptions,
    runner: str = "local",
    workers: int | str = 1,
    ray_address: str | None = None,
    progress: Progress | None = None,
) -> list[Outcome]:
    """Decode every batch of chunk files; one outcome per batch, in order.

    ``workers`` may be ``auto`` (:func:`auto_workers`; on Ray: one actor per cluster GPU, or
    per CPU). ``progress`` is called with the number of chunks done as the work advances.
    """
    batches = [[Path(p) for p in batch] for batch in batches]
    report = progress or (lambda _n: None)
    if runner not in RUNNERS:
        raise ValueError(f"scale.label_runner: expected local or ray, got {runner!r}")
    if workers == "auto" and runner == "local":
        workers = auto_workers(spec, sum(len(b) for b in batches))
    start = time.monotonic()
    if runner == "ray":
        outcomes = _run_ray(spec, batches, options, workers, ray_address, report)
    elif workers == 1 or len(batches) <= 1:
        teacher = spec.load()
        outcomes = []
        for paths in batches:
            outcomes.append(_finish(teacher, paths, _first(teacher, paths, options), options))
            report(len(paths))
    else:
        outcomes = _run_local(spec, batches, options, workers, report)
    chunks = sum(len(b) for b in batches)
    log.info("decoded %d chunks in %d batches (%s, %s worker(s)) in %.1f s", chunks,
             len(batches), runner, workers, time.monotonic() - start)
    return outcomes


# ----------------------------------------------------------------------------- per batch


def _error(exc: BaseException) -> str:
    return f"{type(exc).__name__}: {exc}"


def _first(teacher: Teacher, paths: Sequence[Path], options: DecodeOptions) -> First:
    """A batch's first pass, or why it failed (one bad batch must not sink the source)."""
    try:
        return teacher.first_pass([load_audio(p) for p in paths], options)
    except Exception as exc:
        return _error(exc)


def _finish(
    teacher: Teacher, paths: Sequence[Path], first: First, options: DecodeOptions
) -> Outcome:
    """A batch's final transcripts: its first pass with the sampled retries done, in order."""
    if isinstance(first, str):
        return first
    if not any(f.retry for f in first):
        return [f.transcript for f in first]
    try:
        return finish_batch(teacher, [load_audio(p) for p in paths], first, options)
    except Exception as exc:
        return _error(exc)


def _replay(
    spec: TeacherSpec, batches: list[list[Path]], firsts: list[First], options: DecodeOptions,
    device_index: int = 0, cpu_threads: int | None = None,
) -> list[Outcome]:
    """Finish batches whose first pass asked for retries, in order, with one fresh teacher."""
    teacher = spec.load(device_index, cpu_threads)
    return [_finish(teacher, p, f, options) for p, f in zip(batches, firsts, strict=True)]


def _merge(
    batches: list[list[Path]], firsts: list[First],
    replay: Callable[[list[list[Path]], list[First]], list[Outcome]],
) -> list[Outcome]:
    """Outcomes from first passes; batches needing retries go through ``replay`` in order."""
    todo = [i for i, f in enumerate(firsts) if not isinstance(f, str) and any(x.retry for x in f)]
    outcomes: list[Outcome] = [
        f if isinstance(f, str) else [x.transcript for x in f] for f in firsts
    ]
    if todo:
        retries = sum(1 for i in todo for x in firsts[i] if x.retry)  # type: ignore[union-attr]
        log.info("replaying the sampled fallback of %d chunk(s) in one process", retries)
        done = replay([batches[i] for i in todo], [firsts[i] for i in todo])
        for i, outcome in zip(todo, done, strict=True):
            outcomes[i] = outcome
    return outcomes


# ----------------------------------------------------------------------------- local


_progress_queue: Any = None


def _init_worker(progress_queue: Any) -> None:
    """Pool initializer: logging like a stage, and the queue progress goes to."""
    from tubetune.stage import setup_logging

    global _progress_queue
    _progress_queue = progress_queue
    setup_logging()


def _shard_task(
    spec: TeacherSpec, batches: list[list[Path]], options: DecodeOptions, device_index: int,
    cpu_threads: int,
) -> list[First]:
    """Worker: load one teacher, first-pass a contiguous shard of batches."""
    teacher = spec.load(device_index, cpu_threads)
    firsts = []
    for paths in batches:
        firsts.append(_first(teacher, paths, options))
        if _progress_queue is not None:
            _progress_queue.put(len(paths))
    return firsts


def gpu_count(spec: TeacherSpec) -> int:
    """CUDA devices the teacher's engine would use (0 on CPU): CTranslate2's count for
    faster-whisper, torch's for transformers (either may be a CPU-only build)."""
    if spec.device == "cpu":
        return 0
    if spec.engine == "faster-whisper":
        import ctranslate2

        return int(ctranslate2.get_cuda_device_count())
    import torch

    return torch.cuda.device_count()


def _run_replicas(
    spec: TeacherSpec, batches: list[list[Path]], options: DecodeOptions, workers: int,
    report: Progress,
) -> list[Outcome]:
    """First passes on ``workers`` threads sharing one model's replicas, then the retries
    in one fresh teacher. The threads take batches as they come free."""
    threads = spec.cpu_threads or max(1, (os.cpu_count() or 1) // workers)
    teacher = spec.load(cpu_threads=threads, replicas=workers)
    with ThreadPoolExecutor(workers) as pool:
        futures = {pool.submit(_first, teacher, paths, options): len(paths) for paths in batches}
        for future in as_completed(futures):
            report(futures[future])
        firsts = [future.result() for future in futures]
    del teacher

    def replay(todo: list[list[Path]], todo_firsts: list[First]) -> list[Outcome]:
        return _replay(spec, todo, todo_firsts, options)

    return _merge(batches, firsts, replay)


def _run_local(
    spec: TeacherSpec, batches: list[list[Path]], options: DecodeOptions, workers: int,
    report: Progress,
) -> list[Outcome]:
    """Replicas in this process (CPU, faster-whisper), else shards over ``workers`` spawned
    processes; then the retries in one fresh teacher."""
    gpus = gpu_count(spec)
    if _use_replicas(spec, gpus):
        return _run_replicas(spec, batches, options, workers, report)
    if gpus and workers > gpus:
        log.warning("%d label workers share %d GPU(s)", workers, gpus)
    # CPU: split the cores unless labels.cpu_threads says otherwise (results do not depend
    # on the thread count). GPU: each worker has a device of its own.
    threads = spec.cpu_threads or (0 if gpus else max(1, (os.cpu_count() or 1) // workers))
    bounds = shard_bounds(len(batches), workers)
    context = multiprocessing.get_context("spawn")  # CUDA cannot be forked
    progress_queue = context.Queue()
    with ProcessPoolExecutor(len(bounds), mp_context=context, initializer=_init_worker,
                             initargs=(progress_queue,)) as pool:
        futures = [
            pool.submit(_shard_task, spec, batches[a:b], options, i % gpus if gpus else 0,
                        threads)
            for i, (a, b) in enumerate(bounds)
        ]
        _drain(futures, progress_queue, report)
        firsts = [f for future in futures for f in future.result()]

        def replay(todo: list[list[Path]], todo_firsts: list[First]) -> list[Outcome]:
            return pool.submit(_replay, spec, todo, todo_firsts, options, 0, threads).result()

        return _merge(batches, firsts, replay)


def _drain(futures: list[Future], progress_queue: Any, report: Progress) -> None:
    """Forward workers' progress until every shard is done (or one failed)."""
    while not all(f.done() for f in futures):
        try:
            report(progress_queue.get(timeout=0.2))
        except queue.Empty:
            continue
    while True:
        try:
            report(progress_queue.get_nowait())
        except queue.Empty:
            break


# ----------------------------------------------------------------------------- ray


def import_ray() -> Any:
    """The ``ray`` module with Ray Data, or a clear error saying how to install it."""
    try:
        import ray
        import ray.data
    except ImportError as exc:
        raise ValueError(
            "scale.label_runner: ray needs Ray Data; install it with "
            "`pip install -r requirements-scale.txt`"
        ) from exc
    return ray


def _first_to_json(first: First) -> str:
    if isinstance(first, str):
        return json.dumps({"error": first})
    return json.dumps([{"transcript": asdict(f.transcript), "retry": list(f.retry)}
                       for f in first])


def _first_from_json(text: str) -> First:
    """Inverse of _first_to_json (JSON keeps Python floats exactly)."""
    data = json.loads(text)
    if isinstance(data, dict):
        return str(data["error"])
    return [FirstPass(Transcript(**f["transcript"]), tuple(f["retry"])) for f in data]


def _enter(cwd: str) -> None:
    """Work in the driver's directory: stage paths are relative to the repository root,
    which every node of a cluster must see at the same path (a shared filesystem)."""
    from tubetune.stage import setup_logging

    setup_logging()
    os.chdir(cwd)


def _ray_replay(cwd: str, *args: Any) -> list[Outcome]:
    _enter(cwd)
    return _replay(*args)


class RayFirstPass:
    """Ray Data actor: one teacher, first passes of the batches it is handed."""

    def __init__(
        self, cwd: str, spec: TeacherSpec, options: DecodeOptions, cpu_threads: int
    ) -> None:
        _enter(cwd)
        self.options = options
        # Ray shows an actor only its own GPU, as device 0.
        self.teacher = spec.load(0, cpu_threads)

    def __call__(self, rows: dict[str, Any]) -> dict[str, Any]:
        """First-pass each row's batch of chunk paths; results as JSON strings."""
        import numpy as np

        results = [
            _first_to_json(_first(self.teacher, [Path(p) for p in json.loads(paths)],
                                  self.options))
            for paths in rows["paths"]
        ]
        return {"index": np.asarray(rows["index"]), "result": np.asarray(results, dtype=object)}


def _run_ray(
    spec: TeacherSpec, batches: list[list[Path]], options: DecodeOptions, workers: int | str,
    address: str | None, report: Progress,
) -> list[Outcome]:
    """First passes on a pool of Ray Data actors, then the retries in one Ray task."""
    ray = import_ray()
    started = not ray.is_initialized()
    if started:
        ray.init(address=address, include_dashboard=False, logging_level=logging.WARNING)
    try:
        gpus = int(ray.cluster_resources().get("GPU", 0)) if spec.device != "cpu" else 0
        threads = spec.cpu_threads or 1
        if workers == "auto":
            cpus = int(ray.cluster_resources().get("CPU", 1)) // threads
            chunks = sum(len(b) for b in batches)
            workers = max(1, min(gpus or cpus, chunks // MIN_CHUNKS_PER_WORKER))
        resources: dict[str, Any] = {"num_gpus": 1} if gpus else {"num_cpus": threads}
        log.info("ray: %d actor(s), each %s", workers, resources)
        # Ray sets OMP_NUM_THREADS to an actor's CPUs; at 1, CTranslate2's int8 kernels take
        # another path and round differently. Give the actors this process's setting (any
        # value from 2 up computes alike); CTranslate2 still uses ``threads`` threads.
        omp = os.environ.get("OMP_NUM_THREADS") or str(max(os.cpu_count() or 2, 2))
        resources["runtime_env"] = {"env_vars": {"OMP_NUM_THREADS": omp}}
        cwd = os.getcwd()
        items = [{"index": i, "paths": json.dumps([str(p) for p in paths])}
                 for i, paths in enumerate(batches)]
        dataset = ray.data.from_items(items).map_batches(
            RayFirstPass,
            fn_constructor_kwargs={"cwd": cwd, "spec": spec, "options": options,
                                   "cpu_threads": threads},
            batch_size=1, concurrency=workers, **resources,
        )
        firsts: list[First | None] = [None] * len(batches)
        for row in dataset.iter_rows():
            index = int(row["index"])
            firsts[index] = _first_from_json(str(row["result"]))
            report(len(batches[index]))
        missing = [i for i, f in enumerate(firsts) if f is None]
        if missing:
            raise RuntimeError(f"ray returned no result for {len(missing)} batch(es)")
        remote_replay = ray.remote(**resources)(_ray_replay)

        def replay(todo: list[list[Path]], todo_firsts: list[First]) -> list[Outcome]:
            return ray.get(remote_replay.remote(cwd, spec, todo, todo_firsts, options, 0, threads))

        return _merge(batches, firsts, replay)  # type: ignore[arg-type]
    finally:
        if started:
            ray.shutdown()
