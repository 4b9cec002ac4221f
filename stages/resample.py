"""Stage resample@SOURCE: 16 kHz mono 16-bit WAV, one ffmpeg pass with soxr."""

from pathlib import Path

from tubetune import stage
from tubetune.audio import resample_source
from tubetune.params import load_params


def main(argv: list[str]) -> None:
    (name,) = argv
    load_params().source(name)
    resample_source(Path("data/converted") / name, Path("data/resampled") / name, name)


if __name__ == "__main__":
    stage.run(main)
