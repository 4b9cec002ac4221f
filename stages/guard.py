"""Stage guard@ROUND: pick what the round hands on (final, checkpoint or interpolation)
by validation score within the held-out regression budget (tubetune/guard.py)."""

from pathlib import Path

from tubetune import stage
from tubetune.evaluation import stage_sets
from tubetune.guard import guard_round
from tubetune.params import BASE_MODEL_DIR, ROUNDS_DIR, TRAIN_DIR, load_params


def main(argv: list[str]) -> None:
    (name,) = argv
    params = load_params()
    init = params.rounds[name].init
    sets = stage_sets(Path("data/split"), params.evaluate.heldout, params.language, "guard")
    guard_round(
        name, train_dir=Path(TRAIN_DIR) / name, start_dir=Path(init),
        base_is_start=init == BASE_MODEL_DIR, sets=sets,
        baseline_dir=Path("data/eval/baseline"), out_dir=Path(ROUNDS_DIR) / name,
        metrics_path=Path("metrics/guard") / f"{name}.json",
        curve_path=Path("metrics/guard") / f"{name}.csv",
        language=params.language, task=params.task, params=params.export,
        evaluate=params.evaluate,
    )


if __name__ == "__main__":
    stage.run(main)
