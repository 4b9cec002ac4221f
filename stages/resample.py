"""Stage resample@SOURCE: 16 kHz mono 16-bit WAV (one ffmpeg pass, soxr) + VAD scores."""

from pathlib import Path

from tubetune import stage
from tubetune.audio import resample_source
from tubetune.params import load_params


def main(argv: list[str]) -> None:
    (name,) = argv
    params = load_params()
    params.source(name)
    resample_source(Path("data/converted") / name, Path("data/resampled") / name, name,
                    score_speech=params.segment.method == "vad")


if __name__ == "__main__":
    stage.run(main)
