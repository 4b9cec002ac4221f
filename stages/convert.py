"""Stage convert@SOURCE: each item's audio track, lossless at the source rate."""

from pathlib import Path

from tubetune import stage
from tubetune.audio import convert_source
from tubetune.params import load_params


def main(argv: list[str]) -> None:
    (name,) = argv
    load_params().source(name)
    convert_source(Path("data/raw") / name, Path("data/converted") / name, name)


if __name__ == "__main__":
    stage.run(main)
