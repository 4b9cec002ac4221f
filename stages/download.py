"""Stage download@SOURCE: fetch a source's media, metadata and subtitles with yt-dlp, or
index a labelled corpus in place (tubetune/corpus.py)."""

from pathlib import Path

from tubetune import stage
from tubetune.corpus import drop_index, index_corpus
from tubetune.params import load_params
from tubetune.sources import download_source


def main(argv: list[str]) -> None:
    (name,) = argv
    params = load_params()
    source = params.source(name)
    options = params.download_of(name)  # the global download section with the source's options
    out_dir = Path("data/raw") / name
    if source.corpus is not None:
        index_corpus(name, source.corpus, out_dir, params.language_of(name), options.strict)
        return
    drop_index(out_dir)  # the source may have been a corpus before
    download_source(name, source.urls, out_dir, params.language_of(name), options)


if __name__ == "__main__":
    stage.run(main)
