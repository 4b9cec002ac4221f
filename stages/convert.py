"""Stage convert@SOURCE: each item's audio track, lossless at the source rate; for a corpus,
each utterance's audio probed (tubetune/corpus.py)."""

from pathlib import Path

from tubetune import stage
from tubetune.audio import convert_source
from tubetune.corpus import convert_corpus, is_corpus
from tubetune.params import load_params


def main(argv: list[str]) -> None:
    (name,) = argv
    load_params().source(name)
    raw_dir, out_dir = Path("data/raw") / name, Path("data/converted") / name
    convert = convert_corpus if is_corpus(raw_dir) else convert_source
    convert(raw_dir, out_dir, name)


if __name__ == "__main__":
    stage.run(main)
