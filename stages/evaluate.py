"""Stage evaluate: baseline vs every round on the test split and the held-out set."""

from pathlib import Path

import pandas as pd

from tubetune import stage
from tubetune.evaluation import comparison_table, evaluate_models
from tubetune.params import ROUNDS_DIR, load_params
from tubetune.split import external_rows


def main(argv: list[str]) -> None:
    params = load_params()
    sets = {"test": pd.read_csv("data/split/test.csv", dtype={"text": str, "language": str},
                                keep_default_na=False)}
    if params.evaluate.heldout:
        sets["heldout"] = pd.DataFrame(external_rows(Path(params.evaluate.heldout),
                                                     params.language))
    models = {"baseline": Path("models/base/ct2")}
    for name in params.rounds:  # earlier rounds: did a later one forget what they learned?
        if name != params.final_round:
            models[name] = Path(ROUNDS_DIR) / name
    models["finetuned"] = Path("models/export/ct2")  # the final round, as it ships
    metrics = evaluate_models(
        sets, models, predictions_path=Path("data/eval/predictions.csv"),
        metrics_path=Path("metrics/eval.json"), language=params.language, task=params.task,
        params=params.evaluate,
    )
    comparison_table(metrics, Path("metrics/eval_by_model.csv"))


if __name__ == "__main__":
    stage.run(main)
