"""Stage evaluate: baseline vs fine-tuned model on the test split (WER, CER, RTF)."""

from pathlib import Path

from tubetune import stage
from tubetune.evaluation import evaluate_models
from tubetune.params import load_params


def main(argv: list[str]) -> None:
    params = load_params()
    evaluate_models(
        Path("data/split/test.csv"),
        {"baseline": Path("models/base/ct2"), "finetuned": Path("models/export/ct2")},
        predictions_path=Path("data/eval/predictions.csv"),
        metrics_path=Path("metrics/eval.json"),
        language=params.language, task=params.task, params=params.evaluate,
    )


if __name__ == "__main__":
    stage.run(main)
