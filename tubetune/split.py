"""Grouped train/validation/test split: a video never appears in two splits.

The seed split overlapping chunks at random, so nearly every test chunk shared audio with a
training chunk. Here whole videos (source items) are assigned to splits, in an order fixed
by a hash of the seed and the item name, until each split holds its fraction of the hours.
Validation and test utterances come from the video's subtitles when it has them (gold
text, cut at cue times); otherwise they fall back to the labels, and the ``reference``
column says which (``corpus`` for a labelled corpus: gold too). ``split.test_sources``
fixes the test set instead: every video of those sources (a corpus such as KsponSpeech's
eval_clean) is test, the others train or validate.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd
import soundfile as sf

from tubetune.errors import StageError
from tubetune.fsutil import atomic_path, atomic_write_text
from tubetune.params import NormalizeParams, SplitParams
from tubetune.segment import Span, write_chunks
from tubetune.subtitles import pick_subtitle, read_vtt
from tubetune.text import clean_target, normalize_target, uses_characters

log = logging.getLogger(__name__)

SPLITS = ("train", "validation", "test")
COLUMNS = ["path", "text", "source", "item", "start_ms", "end_ms", "duration_s", "language",
           "reference", "timings"]


@dataclass(frozen=True)
class Video:
    """One source item with what the split needs to know about it."""

    source: str
    item: str
    language: str
    duration_s: float
    labels: pd.DataFrame
    subtitle: Path | None
    audio: Path
    identities: tuple[str, ...] = ()  # media sha256, extractor:id: equal ones are one video

    @property
    def key(self) -> str:
        """Unique name across sources."""
        return f"{self.source}/{self.item}"


def assign_splits(videos: list[Video], params: SplitParams) -> dict[str, str]:
    """Map each video key to a split; deterministic from ``params.seed``."""
    order = sorted(
        videos, key=lambda v: hashlib.sha256(f"{params.seed}:{v.key}".encode()).hexdigest()
    )
    total = sum(v.duration_s for v in videos)
    wanted = {"test": params.test_fraction, "validation": params.validation_fraction}
    # Each evaluation split with a non-zero fraction gets at least one video while at least
    # one video is left for training.
    assignment: dict[str, str] = {}
    hours = {"test": 0.0, "validation": 0.0}
    remaining = list(order)
    for split in ("test", "validation"):
        target = wanted[split] * total
        while len(remaining) > 1 and target > 0:
            video = remaining[0]
            # Take the next video while that brings the split closer to its share of hours.
            if hours[split] and abs(hours[split] + video.duration_s - target) >= abs(
                hours[split] - target
            ):
                break
            remaining.pop(0)
            assignment[video.key] = split
            hours[split] += video.duration_s
    for video in remaining:
        assignment[video.key] = "train"
    return assignment


def _gold_rows(video: Video, tmp_audio: Path, final_audio: Path,
               params: SplitParams, normalize: NormalizeParams) -> list[dict]:
    """Utterances cut at subtitle cue times, each written as its own WAV file.

    Each cue is widened by up to ``params.gold_pad_ms`` on both sides (never past half the
    gap to its neighbour): uploaded cue times are often early or late by a few hundred ms,
    and a clipped word would count as the model's error. Files are written under
    ``tmp_audio``; the CSV rows name them under ``final_audio``.
    """
    all_cues = read_vtt(video.subtitle)
    end = int(video.duration_s * 1000)
    spans_by_cue = _padded_spans(all_cues, end, params.gold_pad_ms)
    kept = [
        i for i, c in enumerate(all_cues)
        if params.min_duration_s <= c.duration_ms / 1000 <= params.max_duration_s
        and c.end_ms <= video.duration_s * 1000 + 500
    ]
    cues = [all_cues[i] for i in kept]
    spans = [spans_by_cue[i] for i in kept]
    paths = write_chunks(video.audio, spans, tmp_audio / video.source, video.item)
    return [
        {"path": (final_audio / p.relative_to(tmp_audio)).as_posix(),
         "text": normalize_target(c.text, video.language, normalize),
         "source": video.source, "item": video.item,
         "start_ms": s.start_ms, "end_ms": s.end_ms,
         "duration_s": round((s.end_ms - s.start_ms) / 1000, 3), "language": video.language,
         "reference": "subtitles"}
        for c, s, p in zip(cues, spans, paths, strict=True)
    ]


def _padded_spans(cues: list, end_ms: int, pad_ms: int) -> list[Span]:
    """Each cue's span widened by ``pad_ms``, at most half-way to the neighbouring cues and
    within ``[0, end_ms]``."""
    spans = []
    for i, cue in enumerate(cues):
        before = cues[i - 1].end_ms if i else -2 * pad_ms
        after = cues[i + 1].start_ms if i + 1 < len(cues) else end_ms + 2 * pad_ms
        start = cue.start_ms - max(min(pad_ms, (cue.start_ms - before) // 2), 0)
        stop = cue.end_ms + max(min(pad_ms, (after - cue.end_ms) // 2), 0)
        spans.append(Span(max(start, 0), min(stop, end_ms)))
    return spans


def _pseudo_rows(video: Video, params: SplitParams) -> list[dict]:
    labels = video.labels
    keep = labels["duration_s"].between(params.min_duration_s, params.max_duration_s)
    rows = labels[keep]
    return [
        {"path": r.path, "text": r.text, "source": video.source, "item": video.item,
         "start_ms": r.start_ms, "end_ms": r.end_ms, "duration_s": r.duration_s,
         "language": video.language, "reference": r.label_source,
         "timings": getattr(r, "timings", "")}
        for r in rows.itertuples(index=False)
    ]


def assign_rounds(train_videos: list[Video], rounds: dict[str, list[str]],
                  seed: int) -> dict[str, list[str]]:
    """Video keys per round: a round naming sources takes their training videos; rounds
    that name none share the other training videos evenly (deterministic order)."""
    claimed: dict[str, list[str]] = {}
    for name, sources in rounds.items():
        if sources:
            claimed[name] = sorted(v.key for v in train_videos if v.source in sources)
    taken = {key for keys in claimed.values() for key in keys}
    free = sorted((v for v in train_videos if v.key not in taken),
                  key=lambda v: hashlib.sha256(f"{seed}:{v.key}".encode()).hexdigest())
    open_rounds = [name for name, sources in rounds.items() if not sources]
    for i, name in enumerate(open_rounds):
        claimed[name] = sorted(v.key for v in free[i :: len(open_rounds)])
    return {name: claimed[name] for name in rounds}


def external_rows(csv_path: Path, language: str) -> list[dict]:
    """A fixed set given as a CSV of ``path,text[,language][,kind]`` (used as is; ``kind`` names
    the voice family, e.g. ``flite:slt``, so held-out halves hold every kind)."""
    frame = pd.read_csv(csv_path, dtype=str, keep_default_na=False)
    missing = {"path", "text"} - set(frame.columns)
    if missing:
        raise StageError(f"split.external_test: {csv_path} lacks column(s) {sorted(missing)}")
    base = csv_path.parent
    rows = []
    for r in frame.itertuples(index=False):
        path = Path(r.path) if Path(r.path).is_absolute() else base / r.path
        if not path.is_file():
            raise StageError(f"split.external_test: {csv_path}: audio file {r.path!r} not found")
        duration = sf.info(path).duration if path.suffix.lower() in (".wav", ".flac") else 0.0
        rows.append({"path": path.as_posix(), "text": clean_target(r.text),
                     "source": "external", "item": path.stem, "start_ms": 0,
                     "end_ms": round(duration * 1000), "duration_s": round(duration, 3),
                     "language": getattr(r, "language", "") or language,
                     "reference": "external", "kind": getattr(r, "kind", "")})
    return rows


def build_splits(videos: list[Video], out_dir: Path, metrics_path: Path, params: SplitParams,
                 rounds: dict[str, list[str]] | None = None,
                 language: str = "en",
                 left_out: dict[str, str] | None = None,
                 normalize: NormalizeParams | None = None) -> dict[str, pd.DataFrame]:
    """Write ``train/validation/test.csv`` (+ gold utterance audio), the per-round training
    slices ``rounds/<name>/train.csv`` and a split report. Gold text is normalised like the
    training targets (``normalize``: zh-TW subtitles in Simplified are scored as Traditional).

    A video found in several sources is split once (:func:`drop_duplicates`); ``left_out``
    (source -> why it has no usable video) goes into the report. With
    ``params.external_test`` the test split is that fixed CSV, with ``params.test_sources``
    every video of those sources; either way every other video goes to train or validation.
    """
    normalize = normalize or NormalizeParams()
    videos, duplicates = drop_duplicates(videos)
    for source, why in sorted((left_out or {}).items()):
        log.warning("split: source %s has no usable video and is left out: %s", source, why)
    if not videos:
        raise StageError("no labelled videos to split")
    external = Path(params.external_test) if params.external_test else None
    fixed = set(params.test_sources)
    if external is not None or fixed:
        params = dataclasses.replace(params, test_fraction=0.0)
    assignment = assign_splits([v for v in videos if v.source not in fixed], params)
    assignment.update({v.key: "test" for v in videos if v.source in fixed})
    rows: dict[str, list[dict]] = {s: [] for s in SPLITS}
    if external is not None:
        rows["test"] = external_rows(external, language)
    with atomic_path(out_dir / "audio") as audio_dir:
        audio_dir.mkdir()
        for video in videos:
            split = assignment[video.key]
            use_gold = split != "train" and video.subtitle is not None
            rows[split] += (
                _gold_rows(video, audio_dir, out_dir / "audio", params, normalize)
                if use_gold
                else _pseudo_rows(video, params)
            )
    frames = {}
    for split in SPLITS:
        frame = pd.DataFrame(rows[split], columns=COLUMNS)
        frame = frame.sort_values(["source", "item", "start_ms"], kind="stable")
        with atomic_path(out_dir / f"{split}.csv") as tmp:
            frame.to_csv(tmp, index=False, lineterminator="\n")
        frames[split] = frame
    rounds = rounds or {"round1": []}
    train_videos = [v for v in videos if assignment[v.key] == "train"]
    per_round = assign_rounds(train_videos, rounds, params.seed)
    with atomic_path(out_dir / "rounds") as rounds_dir:
        for name, keys in per_round.items():
            frame = frames["train"]
            frame = frame[(frame["source"] + "/" + frame["item"]).isin(keys)]
            (rounds_dir / name).mkdir(parents=True)
            frame.to_csv(rounds_dir / name / "train.csv", index=False, lineterminator="\n")
    report = {
        split: {
            "utterances": len(frames[split]),
            "hours": round(float(frames[split]["duration_s"].sum()) / 3600, 4),
            "videos": sorted(k for k, s in assignment.items() if s == split),
            "reference": sorted(set(frames[split]["reference"])),
        }
        for split in SPLITS
    }
    report["rounds"] = {name: {"videos": keys} for name, keys in per_round.items()}
    report["duplicates"] = duplicates
    report["left_out_sources"] = dict(sorted((left_out or {}).items()))
    report["longform"] = _write_longform(
        [v for v in videos if assignment[v.key] != "train" and v.subtitle is not None],
        assignment, out_dir / "longform", normalize)
    atomic_write_text(metrics_path, json.dumps(report, indent=2) + "\n")
    for split in SPLITS:
        log.info("split %s: %d utterances, %.3f h, videos %s", split,
                 report[split]["utterances"], report[split]["hours"], report[split]["videos"])
    if frames["train"].empty:
        raise StageError("the train split is empty (no kept labels in train videos)")
    if fixed and frames["test"].empty:
        raise StageError(f"split.test_sources ({', '.join(sorted(fixed))}) hold no kept "
                         "utterance for the test set")
    empty = [name for name, keys in per_round.items() if not keys]
    if empty:
        raise StageError(f"round {empty[0]!r} has no training videos (more rounds "
                         "than training videos?)")
    return frames



LONGFORM_CSV = "longform.csv"
LONGFORM_COLUMNS = ["set", "path", "text", "source", "item", "duration_s", "language"]


def _write_longform(videos: list[Video], assignment: dict[str, str], out_dir: Path,
                    normalize: NormalizeParams) -> int:
    """Whole validation/test videos with subtitles for long-form scoring: each video's 16 kHz
    audio (copied, so evaluation depends on the split alone) and its whole subtitle text."""
    rows = []
    with atomic_path(out_dir) as tmp:
        tmp.mkdir(parents=True)
        for video in videos:
            name = f"{video.source}--{video.item}.wav"
            shutil.copyfile(video.audio, tmp / name)
            joiner = "" if uses_characters(video.language) else " "
            text = joiner.join(normalize_target(c.text, video.language, normalize)
                               for c in read_vtt(video.subtitle))
            rows.append({"set": assignment[video.key], "path": (out_dir / name).as_posix(),
                         "text": text, "source": video.source, "item": video.item,
                         "duration_s": round(video.duration_s, 3), "language": video.language})
        frame = pd.DataFrame(rows, columns=LONGFORM_COLUMNS).sort_values(
            ["set", "source", "item"], kind="stable")
        frame.to_csv(tmp / LONGFORM_CSV, index=False, lineterminator="\n")
    return len(rows)


def load_videos(
    languages: dict[str, str], raw_root: Path, resampled_root: Path, labels_root: Path
) -> list[Video]:
    """Every video of the named sources that made it through resampling and labelling."""
    videos = []
    for source, language in sorted(languages.items()):
        manifest = pd.read_csv(raw_root / source / "manifest.csv", dtype=str, keep_default_na=False)
        audio = pd.read_csv(resampled_root / source / "audio.csv", dtype={"item": str})
        labels = pd.read_csv(labels_root / source / "labels.csv", dtype={"item": str, "text": str},
                             keep_default_na=False)
        durations = dict(zip(audio["item"], audio["duration_s"], strict=True))
        by_item = dict(iter(labels.groupby("item", sort=False)))  # a corpus has many items
        for row in manifest.itertuples(index=False):
            if row.item not in durations:
                log.warning("split: %s/%s has no resampled audio; left out", source, row.item)
                continue
            videos.append(Video(
                source=source, item=row.item, language=row.language or language,
                duration_s=float(durations[row.item]),
                labels=by_item.get(row.item, labels.iloc[:0]),
                subtitle=pick_subtitle(raw_root / source, row.subtitles, row.language or language),
                audio=resampled_root / source / f"{row.item}.wav",
                identities=_identities(row),
            ))
    return videos


def sources_left_out(sources: list[str], videos: list[Video], raw_root: Path) -> dict[str, str]:
    """Sources without a single usable video, each with the first reason its download
    report gives (or why the later stages dropped everything)."""
    have = {v.source for v in videos}
    left = {}
    for source in sorted(set(sources) - have):
        report = raw_root / source / "report.json"
        failed = json.loads(report.read_text()).get("failed", []) if report.is_file() else []
        left[source] = (f"{failed[0]['item']}: {failed[0]['reason']}" if failed
                        else "no item survived conversion, labelling and filtering")
    return left


# Extractors whose ids are file or URL basenames: equal ids do not make equal videos.
_NAME_IDS = frozenset({"generic", "html5", ""})


def _identities(row: Any) -> tuple[str, ...]:
    """What makes two manifest rows the same video: the media bytes, or a site's own id."""
    found = []
    if getattr(row, "sha256", ""):
        found.append(f"sha256:{row.sha256}")
    extractor = str(getattr(row, "extractor", "")).lower()
    if extractor not in _NAME_IDS and getattr(row, "id", ""):
        found.append(f"{extractor}:{row.id}")
    return tuple(found)


def drop_duplicates(videos: list[Video]) -> tuple[list[Video], list[dict[str, str]]]:
    """The videos with each one kept once, and the duplicates found.

    The same video is often in two sources (a channel and one of its playlists, two playlists,
    one local file listed twice); were both kept it could land in train under one source and
    in test under the other. The first in ``videos``' order (sources sorted by name) keeps it.
    """
    owner: dict[str, str] = {}
    kept, duplicates = [], []
    for video in videos:
        same = next((owner[i] for i in video.identities if i in owner), None)
        if same is not None:
            duplicates.append({"video": video.key, "kept_as": same,
                               "by": next(i for i in video.identities if i in owner)})
            log.warning("split: %s is the same video as %s; kept once, as %s", video.key, same,
                        same)
            continue
        for identity in video.identities:
            owner[identity] = video.key
        kept.append(video)
    return kept, duplicates
