"""Stage export: the final round's model, in Hugging Face layout and as CTranslate2 float16."""

from pathlib import Path

from tubetune import stage
from tubetune.models import export_model
from tubetune.params import ROUNDS_DIR, load_params


def main(argv: list[str]) -> None:
    params = load_params()
    export_model(Path(ROUNDS_DIR) / params.final_round, Path("models/export"))


if __name__ == "__main__":
    stage.run(main)
