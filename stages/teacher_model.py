"""Stage teacher-model: the pseudo-labelling teacher (`labels.model`; `base` reuses models/base)."""

from pathlib import Path

from tubetune import stage
from tubetune.models import prepare_teacher_model
from tubetune.params import BASE_MODEL_DIR, load_params


def main(argv: list[str]) -> None:
    params = load_params()
    prepare_teacher_model(params.labels.model, Path("models/teacher"), Path(BASE_MODEL_DIR),
                          Path("models/base/ct2"))


if __name__ == "__main__":
    stage.run(main)
