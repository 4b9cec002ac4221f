"""Stage evaluate-baseline: the base model's transcripts of the test and validation splits and
of both halves of the held-out set (the guard compares candidates with them).

Its own stage so that experiments changing only training reuse them from DVC's cache.
"""

from pathlib import Path

from tubetune import stage
from tubetune.evaluation import load_sets, save_predictions, transcribe_sets
from tubetune.params import load_params


def main(argv: list[str]) -> None:
    params = load_params()
    sets = load_sets(Path("data/split/test.csv"), params.evaluate.heldout, params.language,
                     validation_csv=Path("data/split/validation.csv"))
    predictions = transcribe_sets(sets, Path("models/base/ct2"), params.language, params.task,
                                  params.evaluate)
    save_predictions(sets, predictions, Path("data/eval/baseline"))


if __name__ == "__main__":
    stage.run(main)
