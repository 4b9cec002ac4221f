"""Stage evaluate-baseline: the base model's transcripts of every set that evaluate and the
guard score (test and validation splits, both held-out halves, whole test and validation
videos). Its own stage so that experiments changing only training reuse them from DVC's cache.

The base is scored from its Hugging Face weights through the same CTranslate2 conversion as every
guard candidate and the exported model: a round that hands on its start model then exports
exactly the model scored here, and base-vs-exported differences are training, never
quantization noise.
"""

from pathlib import Path

from tubetune import stage
from tubetune.evaluation import save_predictions, stage_sets, transcribe_sets
from tubetune.params import load_params


def main(argv: list[str]) -> None:
    params = load_params()
    sets = stage_sets(Path("data/split"), params.evaluate.heldout, params.language, "baseline")
    predictions = transcribe_sets(sets, Path("models/base/hf"), params.language, params.task,
                                  params.evaluate)
    save_predictions(sets, predictions, Path("data/eval/baseline"))


if __name__ == "__main__":
    stage.run(main)
