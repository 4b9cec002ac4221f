"""Stage split: train/validation/test CSVs, whole videos per split, gold text for evaluation."""

from pathlib import Path

from tubetune import stage
from tubetune.params import load_params
from tubetune.split import build_splits, load_videos, sources_left_out


def main(argv: list[str]) -> None:
    params = load_params()
    videos = load_videos(
        {name: params.language_of(name) for name in params.sources},
        raw_root=Path("data/raw"), resampled_root=Path("data/resampled"),
        labels_root=Path("data/labels"),
    )
    build_splits(
        videos, Path("data/split"), Path("metrics/split.json"), params.split,
        rounds={name: r.sources for name, r in params.rounds.items()}, language=params.language,
        left_out=sources_left_out(list(params.sources), videos, Path("data/raw")),
        normalize=params.labels.normalize,
    )


if __name__ == "__main__":
    stage.run(main)
