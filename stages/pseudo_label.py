"""Stage pseudo-label@SOURCE: label every chunk (subtitles or the teacher); keep good labels."""

from pathlib import Path

from tubetune import stage
from tubetune.labels import label_source
from tubetune.params import load_params


def main(argv: list[str]) -> None:
    (name,) = argv
    params = load_params()
    label_source(
        Path("data/segments") / name, Path("data/raw") / name, Path("data/labels") / name, name,
        model_dir=Path("models/base/ct2"), hf_dir=Path("models/base/hf"),
        language=params.language_of(name), task=params.task, params=params.labels,
    )


if __name__ == "__main__":
    stage.run(main)
