"""Stage evaluate-baseline: the base model's transcripts of every set that evaluate and the
guard score (test and validation splits, both held-out halves, whole test and validation
videos). Its own stage so that experiments changing only training reuse them from DVC's cache.
"""

from pathlib import Path

from tubetune import stage
from tubetune.evaluation import save_predictions, stage_sets, transcribe_sets
from tubetune.params import load_params


def main(argv: list[str]) -> None:
    params = load_params()
    sets = stage_sets(Path("data/split"), params.evaluate.heldout, params.language, "baseline")
    predictions = transcribe_sets(sets, Path("models/base/ct2"), params.language, params.task,
                                  params.evaluate)
    save_predictions(sets, predictions, Path("data/eval/baseline"))


if __name__ == "__main__":
    stage.run(main)
