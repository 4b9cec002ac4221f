"""Benchmark of the train stage's throughput against a bare Seq2SeqTrainer loop (issue 7).

Both train the same model on the same manifest with the same batch size, steps, learning
rate, frozen-or-not encoder and precision, in this process, interleaved ``--repeats`` times:

- ``ours``: ``tubetune.train.train_stage`` as the ``train@R`` stage runs it (FineTuner's
  Seq2SeqTrainer, WhisperCollator computing log-mel features on the fly, language/task
  prefix, checkpoints every ``save_steps``, dvclive logging, final model saved), without the
  end-of-run validation (``--validation`` adds it to both sides).
- ``bare``: the shortest correct loop a user would write from the Hugging Face fine-tuning
  blog: soundfile + feature extractor + tokenizer in a minimal collator, Seq2SeqTrainer with
  no checkpoints, no logging callbacks, nothing saved.

Throughput is training samples per wall second of ``trainer.train()`` (steps x batch size /
seconds, as Trainer's ``train_samples_per_second``); the best run of each side is compared.
Target: ours >= 0.95x bare.

Needs the pipeline's base model and split (``dvc repro split base-model``):

    python benchmarks/train.py [--steps 10] [--batch 4] [--repeats 2] [--train-encoder]
"""

from __future__ import annotations

import argparse
import logging
import tempfile
from dataclasses import replace
from pathlib import Path
from typing import Any

import pandas as pd
import soundfile as sf
import torch
from transformers import (
    Seq2SeqTrainer,
    Seq2SeqTrainingArguments,
    WhisperForConditionalGeneration,
    WhisperProcessor,
)

from tubetune.constants import SAMPLE_RATE
from tubetune.dataset import load_manifest
from tubetune.params import load_params
from tubetune.train import train_stage

ROOT = Path(__file__).resolve().parents[1]
log = logging.getLogger("benchmarks.train")


class BareCollator:
    """Features and labels the way the fine-tuning blog builds them, nothing more."""

    def __init__(self, processor: WhisperProcessor, language: str) -> None:
        self.processor = processor
        processor.tokenizer.set_prefix_tokens(language=language, task="transcribe")

    def __call__(self, rows: list[dict[str, Any]]) -> dict[str, torch.Tensor]:
        audio = [sf.read(r["path"], dtype="float32")[0] for r in rows]
        features = self.processor.feature_extractor(
            audio, sampling_rate=SAMPLE_RATE, return_tensors="pt").input_features
        labels = self.processor.tokenizer.pad(
            {"input_ids": [self.processor.tokenizer(r["text"]).input_ids for r in rows]},
            return_tensors="pt")
        ids = labels["input_ids"].masked_fill(labels["attention_mask"].ne(1), -100)
        if (ids[:, 0] == self.processor.tokenizer.convert_tokens_to_ids(
                "<|startoftranscript|>")).all():
            ids = ids[:, 1:]
        return {"input_features": features, "labels": ids}


def bare_run(model_dir: Path, train_csv: Path, language: str, steps: int, batch: int,
             learning_rate: float, freeze_encoder: bool, seed: int) -> float:
    """Samples/s of a bare Seq2SeqTrainer run."""
    processor = WhisperProcessor.from_pretrained(model_dir)
    model = WhisperForConditionalGeneration.from_pretrained(model_dir)
    if freeze_encoder:
        model.freeze_encoder()
    with tempfile.TemporaryDirectory() as out:
        args = Seq2SeqTrainingArguments(
            output_dir=out, per_device_train_batch_size=batch, max_steps=steps,
            learning_rate=learning_rate, save_strategy="no", report_to=[], seed=seed,
            remove_unused_columns=False, logging_steps=steps, disable_tqdm=True)
        trainer = Seq2SeqTrainer(model=model, args=args, train_dataset=load_manifest(train_csv),
                                 data_collator=BareCollator(processor, language))
        result = trainer.train()
    return float(result.metrics["train_samples_per_second"])


def ours_run(model_dir: Path, train_csv: Path, validation_csv: Path | None, language: str,
             params: Any) -> float:
    """Samples/s of the train stage's own run (checkpoints, dvclive, final save)."""
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        empty = root / "empty.csv"
        pd.DataFrame(columns=["path", "text", "language"]).to_csv(empty, index=False)
        summary = train_stage(train_csv, validation_csv or empty, model_dir, root / "model",
                              root / "ckpt", root / "live", root / "train.json", language,
                              "transcribe", params)
    return float(summary["train_samples_per_second"])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--batch", type=int, default=4)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--train-encoder", action="store_true",
                        help="train the whole model (default: params.yaml freeze_encoder)")
    parser.add_argument("--validation", action="store_true",
                        help="include the train stage's end-of-run validation")
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)

    params = load_params(ROOT / "params.yaml")
    model_dir = ROOT / "models/base/hf"
    train_csv = ROOT / "data/split/rounds" / params.final_round / "train.csv"
    if not model_dir.is_dir() or not train_csv.is_file():
        raise SystemExit("run `dvc repro split base-model` first")
    # Manifest paths are repository-relative; make them absolute for both sides.
    with tempfile.TemporaryDirectory() as tmp:
        frame = pd.read_csv(train_csv, dtype=str, keep_default_na=False)
        frame["path"] = [str(ROOT / p) for p in frame["path"]]
        train_abs = Path(tmp) / "train.csv"
        frame.to_csv(train_abs, index=False)
        validation = None
        if args.validation:
            val = pd.read_csv(ROOT / "data/split/validation.csv", dtype=str,
                              keep_default_na=False)
            val["path"] = [str(ROOT / p) for p in val["path"]]
            validation = Path(tmp) / "validation.csv"
            val.to_csv(validation, index=False)
        train = replace(params.round_train(params.final_round), max_steps=args.steps,
                        per_device_batch_size=args.batch, logging_steps=1,
                        freeze_encoder=not args.train_encoder and params.train.freeze_encoder)
        runs: dict[str, list[float]] = {"bare": [], "ours": []}
        for i in range(args.repeats):
            runs["bare"].append(bare_run(model_dir, train_abs, params.language, args.steps,
                                         args.batch, train.learning_rate, train.freeze_encoder,
                                         train.seed))
            runs["ours"].append(ours_run(model_dir, train_abs, validation, params.language,
                                         train))
            print(f"repeat {i + 1}: bare {runs['bare'][-1]:.3f}, ours {runs['ours'][-1]:.3f}"
                  " samples/s", flush=True)
    bare, ours = max(runs["bare"]), max(runs["ours"])
    print(f"\n{len(frame)} training chunks, {args.steps} steps x batch {args.batch}, "
          f"encoder {'frozen' if train.freeze_encoder else 'trained'}, "
          f"checkpoint every {train.save_steps} steps")
    print(f"{'':6} {'samples/s (best)':>17} {'runs':>24}")
    for name, value in (("bare", bare), ("ours", ours)):
        print(f"{name:6} {value:17.3f} {', '.join(f'{v:.3f}' for v in runs[name]):>24}")
    ratio = ours / bare
    print(f"ours / bare = {ratio:.3f}x (target >= 0.95x): {'PASS' if ratio >= 0.95 else 'FAIL'}")


if __name__ == "__main__":
    main()
