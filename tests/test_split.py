"""Grouped split: no video in two splits, deterministic, rounds get their own slices."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import soundfile as sf

from tubetune.errors import StageError
from tubetune.params import SplitParams
from tubetune.split import Video, assign_rounds, assign_splits, build_splits


def video(source: str, item: str, duration: float, tmp: Path | None = None) -> Video:
    labels = pd.DataFrame({
        "path": [f"{source}/{item}_{i}.wav" for i in range(3)], "text": ["a", "b", "c"],
        "label_source": ["pseudo"] * 3, "item": [item] * 3, "start_ms": [0, 1000, 2000],
        "end_ms": [1000, 2000, 3000], "duration_s": [1.0] * 3,
    })
    return Video(source, item, "en", duration, labels, None, Path(f"{source}/{item}.wav"))


def test_assignment_is_grouped_deterministic_and_covers_every_split() -> None:
    videos = [video(f"s{i % 3}", f"v{i}", 60.0 + i) for i in range(20)]
    params = SplitParams(seed=1, validation_fraction=0.2, test_fraction=0.2)
    first = assign_splits(videos, params)
    assert first == assign_splits(list(reversed(videos)), params)
    counts = {s: sum(1 for v in first.values() if v == s) for s in ("train", "validation", "test")}
    assert counts == {"train": 12, "validation": 4, "test": 4}
    assert assign_splits(videos, SplitParams(seed=2)) != first  # the seed matters


def test_tiny_corpora_still_train() -> None:
    two = [video("a", "x", 60.0), video("b", "y", 60.0)]
    assignment = assign_splits(two, SplitParams())
    assert sorted(assignment.values()) == ["test", "train"]
    assert list(assign_splits([video("a", "x", 60)], SplitParams()).values()) == ["train"]


def test_rounds_split_training_videos_without_overlap() -> None:
    train = [video(f"s{i % 2}", f"v{i}", 60.0) for i in range(6)]
    slices = assign_rounds(train, {"r1": [], "r2": [], "r3": ["s1"]}, seed=0)
    assert sorted(slices["r3"]) == ["s1/v1", "s1/v3", "s1/v5"]
    assert sorted(len(slices[r]) for r in ("r1", "r2")) == [1, 2]
    assert not set(slices["r1"]) & set(slices["r2"])
    assert set(slices["r1"]) | set(slices["r2"]) == {"s0/v0", "s0/v2", "s0/v4"}


def test_build_splits_has_no_leakage_and_uses_external_test(tmp_path: Path) -> None:
    videos = [video("a", f"v{i}", 60.0) for i in range(5)]
    frames = build_splits(videos, tmp_path / "split", tmp_path / "split.json", SplitParams(),
                          rounds={"round1": []})
    items = {name: set(frame["item"]) for name, frame in frames.items()}
    assert not items["train"] & items["test"] and not items["train"] & items["validation"]
    assert (tmp_path / "split/rounds/round1/train.csv").is_file()

    clip = tmp_path / "ext" / "one.wav"
    clip.parent.mkdir()
    sf.write(clip, np.zeros(16000, dtype=np.int16), 16000)
    (clip.parent / "eval_clean.csv").write_text("path,text\none.wav,hello there\n")
    params = SplitParams(external_test=str(clip.parent / "eval_clean.csv"))
    frames = build_splits(videos, tmp_path / "s2", tmp_path / "s2.json", params)
    assert frames["test"]["text"].tolist() == ["hello there"]
    assert frames["test"]["duration_s"].tolist() == [1.0]
    assert set(frames["train"]["item"]) | set(frames["validation"]["item"]) == {
        f"v{i}" for i in range(5)
    }


def test_more_rounds_than_videos_is_a_clear_error(tmp_path: Path) -> None:
    videos = [video("a", f"v{i}", 60.0) for i in range(3)]
    with pytest.raises(StageError, match="has no training videos"):
        build_splits(videos, tmp_path / "split", tmp_path / "m.json", SplitParams(),
                     rounds={"r1": [], "r2": [], "r3": []})


def test_a_video_in_several_sources_is_split_once_and_reported(tmp_path: Path) -> None:
    import dataclasses
    import json

    # A channel and two playlists sharing videos (same site id), plus one local file listed
    # twice (same bytes, generic extractor: its name-derived id alone would prove nothing).
    channel = [dataclasses.replace(video("channel", f"youtube-v{i}", 60.0),
                                   identities=(f"youtube:v{i}",)) for i in range(6)]
    playlist = [dataclasses.replace(video("playlist", f"youtube-v{i}", 60.0),
                                    identities=(f"youtube:v{i}",)) for i in (1, 3, 5)]
    local = [dataclasses.replace(video(name, "generic-talk", 60.0), identities=("sha256:ab",))
             for name in ("local-a", "local-b")]
    frames = build_splits(channel + local + playlist, tmp_path / "split", tmp_path / "s.json",
                          SplitParams(), left_out={"dead": "gone.mp4: no such file"})
    keys = {name: set(frame["source"] + "/" + frame["item"]) for name, frame in frames.items()}
    all_keys = [k for ks in keys.values() for k in ks]
    assert len(all_keys) == len(set(all_keys)) == 7  # every video exactly once
    assert not any(k.startswith(("playlist/", "local-b/")) for k in all_keys)
    report = json.loads((tmp_path / "s.json").read_text())
    assert {(d["video"], d["kept_as"]) for d in report["duplicates"]} == {
        *((f"playlist/youtube-v{i}", f"channel/youtube-v{i}") for i in (1, 3, 5)),
        ("local-b/generic-talk", "local-a/generic-talk")}
    assert report["left_out_sources"] == {"dead": "gone.mp4: no such file"}
