"""Stage segment@SOURCE: cut resampled audio into training chunks: subtitled videos along
their cues, the others in fixed windows or at VAD pauses."""

from pathlib import Path

from tubetune import stage
from tubetune.params import load_params
from tubetune.segment import segment_source
from tubetune.subtitles import label_cues


def main(argv: list[str]) -> None:
    (name,) = argv
    params = load_params()
    params.source(name)
    seg = params.segment
    out_dir = Path("data/segments") / name
    segment_source(
        Path("data/resampled") / name, out_dir, name,
        method=seg.method, length_s=seg.length_s, overlap_s=seg.overlap_s,
        min_s=seg.min_s, max_s=seg.max_s, pad_ms=seg.pad_ms, path_prefix=out_dir,
        cues=label_cues(Path("data/raw") / name, params.language_of(name), params.labels.source),
        cue_snap_ms=seg.cue_snap_ms,
    )


if __name__ == "__main__":
    stage.run(main)
