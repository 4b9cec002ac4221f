"""Stage evaluate: baseline vs every round on the test split and the held-out set."""

import json
from pathlib import Path

import pandas as pd

from tubetune import stage
from tubetune.evaluation import (
    comparison_table,
    evaluate_models,
    headline,
    load_predictions,
    render_headline,
    stage_sets,
    transcribe_sets,
)
from tubetune.fsutil import atomic_write_text
from tubetune.params import ROUNDS_DIR, load_params


def main(argv: list[str]) -> None:
    params = load_params()
    sets = stage_sets(Path("data/split"), params.evaluate.heldout, params.language, "evaluate")
    models = {}
    for name in params.rounds:  # earlier rounds: did a later one forget what they learned?
        if name != params.final_round:
            models[name] = Path(ROUNDS_DIR) / name
    models["finetuned"] = Path("models/export/ct2")  # the final round, as it ships
    predictions = {"baseline": load_predictions(sets, Path("data/eval/baseline"))}
    for name, model_dir in models.items():
        predictions[name] = transcribe_sets(sets, model_dir, params.language, params.task,
                                            params.evaluate)
    metrics = evaluate_models(
        sets, predictions, predictions_path=Path("data/eval/predictions.csv"),
        metrics_path=Path("metrics/eval.json"), language=params.language,
    )
    comparison_table(metrics, Path("metrics/eval_by_model.csv"))
    hours = sum(pd.read_csv(path)["duration_s"].sum() / 3600
                for path in Path("data/split/rounds").glob("*/train.csv"))
    guard = Path("metrics/guard") / f"{params.final_round}.json"
    summary = headline(metrics, hours,
                       json.loads(guard.read_text()) if guard.is_file() else None)
    atomic_write_text(Path("metrics/headline.json"), json.dumps(summary, indent=2) + "\n")
    print(render_headline(summary))


if __name__ == "__main__":
    stage.run(main)
