"""Benchmark of evaluation decoding: one model in order vs single-threaded replicas per core.

Every evaluation stage (evaluate-baseline, guard, evaluate) transcribes its utterance sets
through :func:`tubetune.evaluation.transcribe_sets`. With ``workers=1`` that is one
CTranslate2 model with its default threads decoding the clips in order (what it did before);
with ``auto`` (the default) the clips' first passes run on one single-threaded replica per
core, and only what may sample (Whisper's temperature fallback) is re-decoded in order by a
seeded single-replica model (:class:`tubetune.evaluation.Decoder`). The transcripts must be
the same; the benchmark checks that and prints the wall times and their ratio, both measured
in this run, alternating the two configurations ``--repeats`` times.

Scored: the held-out set (``evaluate.heldout``, both halves) with the pipeline's base model.

    python benchmarks/evaluate.py [--repeats 2] [--model models/base/ct2]
"""

from __future__ import annotations

import argparse
import logging
import os
import time
from pathlib import Path

import pandas as pd

from tubetune.evaluation import Decoder, transcribe_sets
from tubetune.params import load_params
from tubetune.split import external_rows


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--model", type=Path, default=Path("models/base/ct2"))
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    params = load_params()
    if not params.evaluate.heldout:
        raise SystemExit("evaluate.heldout is null: nothing to decode")
    sets = {"heldout": pd.DataFrame(external_rows(Path(params.evaluate.heldout),
                                                  params.language))}
    seconds = sets["heldout"]["duration_s"].sum()
    workers = Decoder(args.model, params.evaluate).workers
    times: dict[str, list[float]] = {"one model": [], f"{workers} replicas": []}
    texts = {}
    for _ in range(args.repeats):
        for name, setting in zip(times, (1, "auto"), strict=True):
            started = time.perf_counter()
            predictions = transcribe_sets(sets, args.model, params.language, params.task,
                                          params.evaluate, workers=setting)
            times[name].append(time.perf_counter() - started)
            texts[name] = predictions.texts["heldout"]
    same = len({tuple(t) for t in texts.values()}) == 1
    print(f"{len(sets['heldout'])} clips, {seconds:.0f} s of audio, {os.cpu_count()} cores, "
          f"best of {args.repeats}:")
    best = {name: min(values) for name, values in times.items()}
    baseline = best["one model"]
    for name, value in best.items():
        print(f"  {name:<12} {value:7.1f} s  {baseline / value:5.2f}x")
    print(f"transcripts identical: {same}")
    return 0 if same else 1


if __name__ == "__main__":
    raise SystemExit(main())
