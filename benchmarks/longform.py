"""Does long-form transcription survive fine-tuning? Timestamped targets vs none (issue 17).

Fine-tunes the base model on the pipeline's training slice twice, with the pipeline's train
params except ``max_steps`` (``--steps``, default 60: on the sample's ~3 minutes of training
audio that is ~25 epochs, far past the 10-step CPU default, so damage that grows with
training has time to show) and ``timestamp_probability``: ``0`` (every target
``<|notimestamps|>``, what most fine-tuning scripts do) and the pipeline's value. The
decoder alone trains by default (``--full`` trains everything, ~2x slower on CPU): timestamp
prediction is the decoder's, and this keeps the run within ~20 minutes on 2 cores.

Each model (and the base) is scored with the shipping engine on the test split's chunks and
on whole test and validation videos through ``tubetune.transcribe.transcribe_long``: window
by window (sequential, no VAD) and cut at pauses (VAD, what serve does), plus the share of
30 s windows closed by a timestamp token. Prints the table and the check

    long-form WER <= 1.05 x base long-form WER x (chunked WER / base chunked WER)
    timestamp share >= 0.95 x base's

Needs the pipeline's base model and split (``dvc repro split base-model``):

    python benchmarks/longform.py [--steps 60] [--full]
"""

from __future__ import annotations

import argparse
import dataclasses
import logging
import tempfile
import time
from pathlib import Path

import pandas as pd

from tubetune.evaluation import load_longform, load_sets, row_languages, transcribe_sets
from tubetune.metrics import set_error_rates
from tubetune.params import BASE_MODEL_DIR, load_params
from tubetune.train import train_stage

MODES = ("longform_sequential", "longform_vad")


def evaluation_sets(split: Path, heldout: str | None, language: str) -> dict[str, pd.DataFrame]:
    """The test chunks and the whole test and validation videos, per long-form mode."""
    sets = {"test": load_sets(split / "test.csv", heldout, language)["test"]}
    for mode in MODES:
        videos = [load_longform(split, s, (mode,)).get(mode) for s in ("test", "validation")]
        sets[mode] = pd.concat([v for v in videos if v is not None], ignore_index=True)
    return sets


def score(model_dir: Path, sets: dict[str, pd.DataFrame], params) -> dict[str, float]:
    """Headline error per set and the sequential long-form timestamp share."""
    predictions = transcribe_sets(sets, model_dir, params.language, params.task, params.evaluate)
    scores = {name: set_error_rates(frame["text"].tolist(), predictions.texts[name],
                                    row_languages(frame, params.language)).primary
              for name, frame in sets.items()}
    scores["share"] = predictions.timestamp_share("longform_sequential")
    return scores


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=60)
    parser.add_argument("--full", action="store_true", help="train the encoder too")
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    params = load_params()
    split = Path("data/split")
    sets = evaluation_sets(split, params.evaluate.heldout, params.language)
    started = time.monotonic()
    results = {"base": score(Path("models/base/ct2"), sets, params)}
    configs = {"no timestamps (p=0)": 0.0,
               f"default (p={params.train.timestamp_probability:g})":
                   params.train.timestamp_probability}
    with tempfile.TemporaryDirectory(prefix="tubetune-longform-") as tmp:
        for name, probability in configs.items():
            train = dataclasses.replace(params.train, max_steps=args.steps,
                                        timestamp_probability=probability,
                                        freeze_encoder=not args.full,
                                        save_steps=args.steps)
            out = Path(tmp) / name.split()[0]
            train_stage(split / "rounds" / params.final_round / "train.csv",
                        split / "validation.csv", Path(BASE_MODEL_DIR), out, Path(tmp) / "ckpt",
                        Path(tmp) / "live", Path(tmp) / "train.json", params.language,
                        params.task, train)
            results[name] = score(out, sets, params)
    base = results["base"]
    print(f"{args.steps} steps, {'whole model' if args.full else 'decoder only'}; "
          f"{len(sets['test'])} test chunks, {len(sets[MODES[0]])} whole videos")
    print(f"{'model':<22}{'chunked':>9}{'sequential':>12}{'VAD':>8}{'ts share':>10}  check")
    for name, s in results.items():
        limit = 1.05 * base["longform_sequential"] * (s["test"] / base["test"]
                                                      if base["test"] else 1.0)
        ok = s["longform_sequential"] <= limit + 1e-9 and s["share"] >= 0.95 * base["share"]
        check = "" if name == "base" else (
            f"{'PASS' if ok else 'FAIL'} (sequential limit {limit:.2f})")
        print(f"{name:<22}{s['test']:>9.2f}{s['longform_sequential']:>12.2f}"
              f"{s['longform_vad']:>8.2f}{s['share']:>10.3f}  {check}")
    print(f"total {time.monotonic() - started:.0f} s")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
