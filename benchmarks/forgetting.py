"""Training levers against forgetting, all from one run on the pipeline's own split (issue 16).

Trains the base model on the split's training slice with each configuration below (the
pipeline's ``train`` params otherwise), then scores, with the shipping engine (CTranslate2
int8, the ``evaluate`` params), on the **test split** (in-domain, never trained or tuned on)
and the **selection half of the held-out set of another kind** (``evaluate.heldout``: other
synthesis engines and recorded human speech; the half the guard chooses on, so the half that
``evaluate`` reports stays unused for choosing defaults too). Besides WER it prints the
held-out **likelihood**: the mean negative log-likelihood per target token of the held-out
references, teacher-forced (lower is better). It is continuous where a few hundred words of
WER are not, but it also rewards the punctuation and casing the training targets teach: on
the sample it fell where the held-out WER rose (docs/results.md), so read it beside the WER,
never instead of it. The configurations:

- ``full``: every weight at the default learning rate (SpecAugment on, as by default, and
  off), plus a lower and a higher one;
- ``decoder``: ``freeze_encoder: true``;
- ``lora``: ``method: lora`` (PEFT adapters merged into plain weights before export);
- ``distill``: ``distill_weight`` (learning without forgetting: a share of the loss is the KL
  to the base model's predictions).

For the default configuration it also prints the interpolation curve: the weights
``(1 - a) * base + a * fine-tuned`` for each ``a`` (what the forgetting guard chooses from).
Ratios are against the base model scored in the same run.

Needs the pipeline's base model and split (``dvc repro split base-model``):

    python benchmarks/forgetting.py [--steps 10] [--curve 0,0.25,0.5,0.75,1] [--only NAME]
"""

from __future__ import annotations

import argparse
import dataclasses
import logging
import shutil
import tempfile
import time
from pathlib import Path

import pandas as pd
import torch
from transformers import WhisperForConditionalGeneration, WhisperProcessor

from tubetune.dataset import WhisperCollator
from tubetune.evaluation import load_sets, row_languages, transcribe_sets
from tubetune.guard import Candidate, write_candidate
from tubetune.metrics import set_error_rates
from tubetune.params import BASE_MODEL_DIR, load_params
from tubetune.train import train_stage

log = logging.getLogger("benchmarks.forgetting")


def configurations(steps: int, base_lr: float) -> dict[str, dict]:
    """Name -> overrides of the pipeline's train params."""
    return {
        "full (default)": {"max_steps": steps},
        "full, no SpecAugment": {"max_steps": steps, "spec_augment": False},
        f"full lr {base_lr / 3:.0e}": {"max_steps": steps, "learning_rate": base_lr / 3},
        f"full lr {base_lr * 3:.0e}": {"max_steps": steps, "learning_rate": base_lr * 3},
        "decoder only": {"max_steps": steps, "freeze_encoder": True},
        "lora r32": {"max_steps": steps, "method": "lora", "learning_rate": base_lr * 10},
        "distill 0.8": {"max_steps": steps, "distill_weight": 0.8},
    }


def score(model_dir: Path, sets: dict, params) -> dict[str, float]:
    """Headline error (percent) of ``model_dir`` on each set."""
    predictions = transcribe_sets(sets, model_dir, params.language, params.task, params.evaluate)
    return {name: set_error_rates(frame["text"].tolist(), predictions.texts[name],
                                  row_languages(frame, params.language)).primary
            for name, frame in sets.items()}


@torch.no_grad()
def likelihood(model_dir: Path, frame: pd.DataFrame, params) -> float:
    """Mean negative log-likelihood per target token of ``frame``'s references, teacher-forced
    (plain targets, the task prefix included) under the Hugging Face model in ``model_dir``."""
    model = WhisperForConditionalGeneration.from_pretrained(model_dir).eval()
    collator = WhisperCollator(WhisperProcessor.from_pretrained(model_dir), params.task,
                               params.language)
    rows = frame.to_dict("records")
    total = count = 0.0
    for i in range(0, len(rows), 8):
        batch = collator(rows[i:i + 8])
        kept = batch["labels"] != -100
        logits = model(**batch).logits
        total += torch.nn.functional.cross_entropy(logits[kept], batch["labels"][kept],
                                                   reduction="sum").item()
        count += kept.sum().item()
    return total / count


def row(name: str, scores: dict[str, float], base: dict[str, float], extra: str = "") -> str:
    cells = "".join(f"{scores[s]:>9.2f} {scores[s] / base[s]:>5.2f}x" for s in ("test", "heldout"))
    nll = f"{scores['nll']:>8.4f} {scores['nll'] / base['nll']:>6.3f}x"
    return f"{name:<22}{cells}{nll}  {extra}"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=None, help="default: train.max_steps")
    parser.add_argument("--curve", default="0.25,0.5,0.75,1")
    parser.add_argument("--only", default=None, help="run one configuration (name prefix)")
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    params = load_params()
    steps = args.steps or params.train.max_steps
    split = Path("data/split")
    sets = load_sets(split / "test.csv", params.evaluate.heldout, params.language)
    sets = {"test": sets["test"], "heldout": sets["heldout_select"]}
    base_dir = Path(BASE_MODEL_DIR)
    started = time.monotonic()
    base = score(Path("models/base/ct2"), sets, params)
    base["nll"] = likelihood(base_dir, sets["heldout"], params)
    print(f"{'model':<22}{'test':>9} {'':>6}{'held-out':>9} {'':>6}{'held-out NLL':>15}  "
          f"(WER, NLL per token, x base; {steps} steps, {params.language})")
    print(row("base", base, base))
    results = {}
    with tempfile.TemporaryDirectory(prefix="tubetune-forgetting-") as tmp:
        for name, overrides in configurations(steps, params.train.learning_rate).items():
            if args.only and not name.startswith(args.only):
                continue
            train = dataclasses.replace(params.train, **overrides)
            out = Path(tmp) / "model"
            t0 = time.monotonic()
            train_stage(split / "rounds" / params.final_round / "train.csv",
                        split / "validation.csv", base_dir, out, Path(tmp) / "ckpt",
                        Path(tmp) / "live", Path(tmp) / "train.json", params.language,
                        params.task, train)
            seconds = time.monotonic() - t0
            curve = [float(a) for a in args.curve.split(",")] if name == "full (default)" \
                else [0.5, 1.0]
            for a in curve:
                candidate = Path(tmp) / f"a{a}"
                write_candidate(Candidate(f"a={a:g}", a, out), base_dir, out, candidate)
                results[(name, a)] = score(candidate, sets, params)
                results[(name, a)]["nll"] = likelihood(candidate, sets["heldout"], params)
                shutil.rmtree(candidate)
                print(row(f"{name} a={a:g}", results[(name, a)], base,
                          f"train {seconds:.0f} s" if a == 1 else ""), flush=True)
            shutil.rmtree(out)
    print(f"total {time.monotonic() - started:.0f} s")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
