"""Stage download@SOURCE: fetch a source's media, metadata and subtitles with yt-dlp."""

import dataclasses
from pathlib import Path

from tubetune import stage
from tubetune.params import DownloadParams, load_params, parse_section
from tubetune.sources import DownloadOptions, download_source


def main(argv: list[str]) -> None:
    (name,) = argv
    params = load_params()
    source = params.source(name)
    merged = parse_section(
        DownloadParams,
        {**dataclasses.asdict(params.download), **source.options},
        f"sources.{name}.options",
    )
    options = DownloadOptions(**dataclasses.asdict(merged))
    download_source(name, source.urls, Path("data/raw") / name, params.language_of(name), options)


if __name__ == "__main__":
    stage.run(main)
