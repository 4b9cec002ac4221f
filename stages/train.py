"""Stage train: fine-tune the base model on the train split with Seq2SeqTrainer."""

from pathlib import Path

from tubetune import stage
from tubetune.params import load_params
from tubetune.train import train_stage


def main(argv: list[str]) -> None:
    params = load_params()
    train_stage(
        train_csv=Path("data/split/train.csv"),
        validation_csv=Path("data/split/validation.csv"),
        base_model_dir=Path("models/base/hf"),
        output_dir=Path("models/finetuned"),
        checkpoints_dir=Path("models/checkpoints"),
        live_dir=Path("metrics/train_live"),
        metrics_path=Path("metrics/train.json"),
        language=params.language, task=params.task, params=params.train,
    )


if __name__ == "__main__":
    stage.run(main)
