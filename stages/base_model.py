"""Stage base-model: the base model in Hugging Face (training) and CTranslate2 layouts."""

from pathlib import Path

from tubetune import stage
from tubetune.models import prepare_base_model
from tubetune.params import load_params


def main(argv: list[str]) -> None:
    params = load_params()
    prepare_base_model(params.base_model, Path("models/base/hf"), Path("models/base/ct2"))


if __name__ == "__main__":
    stage.run(main)
