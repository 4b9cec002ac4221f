"""Stage segment@SOURCE: cut resampled audio into training chunks: subtitled videos along
their cues, a corpus into its utterances, the others in fixed windows or at VAD pauses."""

from pathlib import Path

from tubetune import stage
from tubetune.corpus import utterance_cues
from tubetune.params import load_params
from tubetune.segment import segment_source
from tubetune.subtitles import label_cues


def main(argv: list[str]) -> None:
    (name,) = argv
    params = load_params()
    params.source(name)
    seg = params.segment
    resampled_dir, out_dir = Path("data/resampled") / name, Path("data/segments") / name
    utterances = utterance_cues(resampled_dir)  # None: not a corpus
    cues = {} if utterances is not None else label_cues(
        Path("data/raw") / name, params.language_of(name), params.labels.source)
    segment_source(
        resampled_dir, out_dir, name,
        method=seg.method, length_s=seg.length_s, overlap_s=seg.overlap_s,
        min_s=seg.min_s, max_s=seg.max_s, pad_ms=seg.pad_ms, path_prefix=out_dir,
        cues=cues, cue_snap_ms=seg.cue_snap_ms, utterances=utterances,
    )


if __name__ == "__main__":
    stage.run(main)
