"""Stage pseudo-label@SOURCE: label every chunk (subtitles or the teacher); keep good labels."""

from pathlib import Path

from tubetune import stage
from tubetune.labels import label_source
from tubetune.models import teacher_dirs
from tubetune.params import load_params


def main(argv: list[str]) -> None:
    (name,) = argv
    params = load_params()
    ct2_dir, hf_dir = teacher_dirs(Path("models/teacher"))
    label_source(
        Path("data/segments") / name, Path("data/raw") / name, Path("data/labels") / name, name,
        model_dir=ct2_dir, hf_dir=hf_dir,
        language=params.language_of(name), task=params.task, params=params.labels,
        scale=params.scale,
    )


if __name__ == "__main__":
    stage.run(main)
