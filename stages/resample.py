"""Stage resample@SOURCE: 16 kHz mono 16-bit WAV (one ffmpeg pass, soxr) + VAD scores; a
corpus's utterances decoded in-process, one WAV per group (tubetune/corpus.py)."""

from pathlib import Path

from tubetune import stage
from tubetune.audio import resample_source
from tubetune.corpus import is_corpus, resample_corpus
from tubetune.params import load_params


def main(argv: list[str]) -> None:
    (name,) = argv
    params = load_params()
    params.source(name)
    converted_dir = Path("data/converted") / name
    resample = resample_corpus if is_corpus(converted_dir) else resample_source
    resample(converted_dir, Path("data/resampled") / name, name,
             score_speech=params.segment.method == "vad")


if __name__ == "__main__":
    stage.run(main)
