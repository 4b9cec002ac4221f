"""Stage train@ROUND: fine-tune the round's starting model on its slice with Seq2SeqTrainer.

With ``train.num_gpus`` > 1 (or ``num_nodes`` > 1) the script re-executes itself under
torchrun, one process per GPU; under torchrun or ``accelerate launch`` it trains as launched.
The result goes to ``models/train/ROUND``; the guard@ROUND stage decides what the round hands on.
"""

from pathlib import Path

from tubetune import stage
from tubetune.params import TRAIN_DIR, load_params
from tubetune.train import relaunch, train_stage


def main(argv: list[str]) -> None:
    (name,) = argv
    params = load_params()
    relaunch(params.round_train(name), __file__, argv)
    train_stage(
        train_csv=Path("data/split/rounds") / name / "train.csv",
        validation_csv=Path("data/split/validation.csv"),
        base_model_dir=Path(params.rounds[name].init),
        output_dir=Path(TRAIN_DIR) / name,
        checkpoints_dir=Path("models/checkpoints") / name,
        live_dir=Path("metrics/train_live") / name,
        metrics_path=Path("metrics/train") / f"{name}.json",
        language=params.language, task=params.task, params=params.round_train(name),
    )


if __name__ == "__main__":
    stage.run(main)
