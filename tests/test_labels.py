"""Label stage: subtitle labels of whole cues, the report, the data chain on the sample with
its subtitles, and the filters on real audio."""

import json
from itertools import pairwise
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from tubetune.audio import convert_source, load_audio, resample_source
from tubetune.engines import pick_beam_size
from tubetune.filters import teacher_rejection
from tubetune.labels import label_report, label_source
from tubetune.params import DownloadParams, LabelParams, SplitParams
from tubetune.segment import segment_source
from tubetune.sharding import TeacherSpec, gpu_count
from tubetune.sources import download_source
from tubetune.split import build_splits, load_videos
from tubetune.subtitles import (
    CoveredCue,
    Cue,
    cues_in_span,
    cut_fraction,
    join_texts,
    label_cues,
    load_covered,
    misplaced_fraction,
    read_vtt,
    text_in_span,
)
from tubetune.text import clean_target

ROOT = Path(__file__).resolve().parents[1]
SR = 16000


def test_subtitle_cutting_at_chunk_edges() -> None:
    cues = [Cue(0, 2000, "one"), Cue(2000, 4000, "two"), Cue(4000, 6000, "three")]
    assert text_in_span(cues, 0, 4000) == "one two"
    assert text_in_span(cues, 0, 4900) == "one two"  # "three" mostly outside
    assert text_in_span(cues, 0, 5100) == "one two three"  # "three" mostly inside
    assert cut_fraction(cues, 0, 4000) == 0.0
    assert cut_fraction(cues, 1000, 4000) == pytest.approx(1000 / 3000)


def test_cut_check_of_cue_chunks_forgives_trimmed_silence_not_misplaced_cues() -> None:
    cues = [Cue(0, 2000, "one"), Cue(2000, 5000, "two"), Cue(5000, 6000, "three")]
    covered = [CoveredCue(i, c.start_ms, c.end_ms, c.text) for i, c in enumerate(cues[:2])]
    # The chunk starts 300 ms after its first cue's (early) time: nothing misplaced, while
    # the check of chunks cut otherwise calls that whole cue cut.
    assert misplaced_fraction(cues, covered, 300, 5100) == 0.0
    assert cut_fraction(cues, 300, 5100) > 0.2
    # "three" lies mostly inside but is not covered; "one" lies mostly outside.
    assert misplaced_fraction(cues, covered, 1500, 6000) == pytest.approx((2000 + 1000) / 6000)


def test_cue_texts_join_without_spaces_only_between_chinese_or_japanese() -> None:
    assert join_texts(["Hello there.", "General Kenobi."]) == "Hello there. General Kenobi."
    assert join_texts(["你好，", "今天天气很好。"]) == "你好，今天天气很好。"
    assert join_texts(["こんにちは。", "元気ですか？"]) == "こんにちは。元気ですか？"
    assert join_texts(["안녕하세요.", "반갑습니다."]) == "안녕하세요. 반갑습니다."  # spaced
    assert join_texts(["我用", "iPhone 拍的"]) == "我用 iPhone 拍的"
    assert text_in_span([Cue(0, 1000, "你好"), Cue(1000, 2000, "世界")], 0, 2000) == "你好世界"


def _subtitled_source(tmp_path: Path, vtt: str, language: str, rows: list[dict]) -> tuple:
    """A download manifest with one subtitled item and a segments.csv of ``rows``."""
    raw, segments = tmp_path / "raw", tmp_path / "segments"
    raw.mkdir()
    segments.mkdir()
    (raw / f"talk.{language}.vtt").write_text(vtt, encoding="utf-8")
    pd.DataFrame([{"item": "talk", "language": language, "subtitles": f"talk.{language}.vtt"}]
                 ).to_csv(raw / "manifest.csv", index=False)
    pd.DataFrame([  # the chunk files need not exist: nothing reads the audio
        {"source": "s", "item": "talk", "duration_s": (r["end_ms"] - r["start_ms"]) / 1000,
         "path": f"talk_{r['start_ms']}.wav", **r} for r in rows
    ]).to_csv(segments / "segments.csv", index=False)
    return raw, segments


def test_chinese_label_joins_whole_cues_and_keeps_their_timings(tmp_path: Path) -> None:
    vtt = ("WEBVTT\n\n00:00:00.000 --> 00:00:01.500\n你好，\n\n"
           "00:00:01.500 --> 00:00:04.000\n今天天气很好。\n")
    cues = json.dumps([[0, 0, 1500, "你好，"], [1, 1500, 4000, "今天天气很好。"]])
    raw, segments = _subtitled_source(tmp_path, vtt, "zh-TW",
                                      [{"start_ms": 100, "end_ms": 4200, "cues": cues}])
    params = LabelParams(source="subtitles", max_subtitle_disagreement=None)
    label_source(segments, raw, tmp_path / "out", "s", model_dir=tmp_path / "no-model",
                 language="zh-TW", task="transcribe", params=params)
    (row,) = pd.read_csv(tmp_path / "out/labels.csv").itertuples()
    assert row.text == "你好，今天天氣很好。"  # no space between the cues; s2twp applied
    assert json.loads(row.timings) == [[0, 1400, "你好，"], [1400, 3900, "今天天氣很好。"]]


def test_beam_size_auto_is_greedy_on_cpu_and_beam_5_on_gpu() -> None:
    assert pick_beam_size("auto", "cpu") == 1
    assert pick_beam_size("auto", "cuda") == 5
    assert pick_beam_size(3, "cpu") == pick_beam_size(3, "cuda") == 3


def test_gpus_are_counted_by_the_engine_that_decodes(monkeypatch: pytest.MonkeyPatch) -> None:
    # A CUDA build of CTranslate2 next to a CPU build of torch (or the reverse): the
    # transformers teacher runs on CPU, so `auto` must not pick beam 5 or GPU workers for it.
    import ctranslate2
    import torch

    monkeypatch.setattr(ctranslate2, "get_cuda_device_count", lambda: 2)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 0)
    model = Path("models/base")
    assert gpu_count(TeacherSpec("faster-whisper", model / "ct2", model / "hf")) == 2
    assert gpu_count(TeacherSpec("transformers", model / "ct2", model / "hf")) == 0
    assert gpu_count(TeacherSpec("faster-whisper", model / "ct2", model / "hf", "cpu")) == 0


def test_label_report(tmp_path: Path) -> None:
    src = tmp_path / "labels" / "a"
    src.mkdir(parents=True)
    pd.DataFrame({"duration_s": [3600.0, 1800.0], "label_source": ["pseudo", "subtitles"]}
                 ).to_csv(src / "labels.csv", index=False)
    pd.DataFrame({"duration_s": [36.0, 72.0], "reason": ["no_speech", "no_speech"]}
                 ).to_csv(src / "rejects.csv", index=False)
    (src / "subtitles.json").write_text('{"subtitle_s": 3600.0, "kept_s": 2700.0}')
    out = label_report(tmp_path / "labels", ["a", "missing"], tmp_path / "m.json")
    assert out["total"]["kept"] == {"chunks": 2, "hours": 1.5}
    assert out["total"]["rejected"]["no_speech"] == {"chunks": 2, "hours": 0.03}
    assert out["sources"]["a"]["subtitle_time_kept"] == out["total"]["subtitle_time_kept"] == 0.75
    assert out["total"]["subtitle_hours"] == 1.0
    assert out["sources"]["missing"]["subtitle_time_kept"] is None  # no subtitles
    assert (tmp_path / "m.json").is_file()


def test_trusted_subtitles_need_no_teacher(tmp_path: Path) -> None:
    # Chunks that do not name their cues (cut otherwise): the cues mostly inside each.
    raw, segments = _subtitled_source(
        tmp_path, "WEBVTT\n\n00:00:00.000 --> 00:00:02.000\nHello there.\n\n"
        "00:00:02.000 --> 00:00:04.000\nGeneral Kenobi.\n", "en",
        [{"start_ms": a, "end_ms": a + 2000} for a in (0, 2000, 4000)])
    params = LabelParams(source="subtitles", max_subtitle_disagreement=None)
    report = label_source(segments, raw, tmp_path / "out", "s", model_dir=tmp_path / "no-model",
                          language="en", task="transcribe", params=params)
    labels = pd.read_csv(tmp_path / "out/labels.csv")
    assert labels["text"].tolist() == ["Hello there.", "General Kenobi."]
    assert labels["timings"].tolist() == ['[[0,2000,"Hello there."]]',
                                          '[[0,2000,"General Kenobi."]]']
    assert set(labels["label_source"]) == {"subtitles"}
    assert labels["avg_logprob"].isna().all() and labels["pseudo_text"].isna().all()
    rejects = pd.read_csv(tmp_path / "out/rejects.csv")
    assert rejects["reason"].tolist() == ["no_subtitle"]
    assert not report.failed


SNAP_MS = 300


@pytest.fixture(scope="module")
def sample_chain(tmp_path_factory: pytest.TempPathFactory) -> dict:
    """The data stages on the bundled sample, as one source, labelled by its subtitles
    alone (no teacher), then the label report and the split."""
    root = tmp_path_factory.mktemp("chain")
    d = {stage: root / stage / "s" for stage in ("raw", "converted", "resampled", "segments",
                                                 "labels")}
    media = sorted(str(p) for p in (ROOT / "data/sample").glob("*.*")
                   if p.suffix not in (".vtt", ".md"))
    download_source("s", media, d["raw"], "en", DownloadParams())
    convert_source(d["raw"], d["converted"], "s")
    resample_source(d["converted"], d["resampled"], "s")
    cues = label_cues(d["raw"], "en", "subtitles")
    segment_source(d["resampled"], d["segments"], "s", "vad", 10, 2, 1.0, 30, 200,
                   cues=cues, cue_snap_ms=SNAP_MS)
    params = LabelParams(source="subtitles", max_subtitle_disagreement=None)
    label_source(d["segments"], d["raw"], d["labels"], "s", model_dir=root / "no-model",
                 language="en", task="transcribe", params=params)
    report = label_report(root / "labels", ["s"], root / "labels.json")
    videos = load_videos({"s": "en"}, root / "raw", root / "resampled", root / "labels")
    splits = build_splits(videos, root / "split", root / "split.json", SplitParams())
    return {**d, "cues": cues, "report": report, "splits": splits}


def test_sample_subtitles_are_kept_as_whole_cues(sample_chain: dict) -> None:
    # The acceptance test of cue-aligned chunks: the sample's cues hold several phrases with
    # pauses inside and are early or late by up to 200 ms, as real uploads are.
    report = sample_chain["report"]
    assert "subtitle_cut" not in report["total"]["rejected"]
    assert report["total"]["subtitle_time_kept"] >= 0.95
    labels = pd.read_csv(sample_chain["labels"] / "labels.csv", dtype=str,
                         keep_default_na=False)
    segments = pd.read_csv(sample_chain["segments"] / "segments.csv", dtype=str,
                           keep_default_na=False).set_index("path")
    assert len(labels) == len(segments) and set(labels["label_source"]) == {"subtitles"}
    seen: set[tuple[str, int]] = set()
    for row in labels.itertuples():
        cues = sample_chain["cues"][row.item]
        start, end = int(row.start_ms), int(row.end_ms)
        covered = load_covered(segments.loc[row.path, "cues"])
        indices = [c.index for c in covered]
        assert indices == list(range(indices[0], indices[-1] + 1))  # consecutive, whole cues
        assert [(c.start_ms, c.end_ms, c.text) for c in covered] == [
            (cues[i].start_ms, cues[i].end_ms, cues[i].text) for i in indices]
        assert row.text == join_texts([cues[i].text for i in indices])
        assert set(cues_in_span(cues, start, end)) <= set(indices)  # no cue left out
        assert not seen & {(row.item, i) for i in indices}  # a cue is in one chunk only
        seen |= {(row.item, i) for i in indices}
        timings = json.loads(row.timings)
        assert join_texts([t for _, _, t in timings]) == row.text
        assert all(0 <= a < b <= end - start for a, b, _ in timings)
        for edge in (start, end):  # cuts between cues: inside one only by its timing error
            assert not [c for c in cues if c.start_ms + SNAP_MS < edge < c.end_ms - SNAP_MS]


def test_split_cuts_gold_utterances_per_multi_phrase_cue(sample_chain: dict) -> None:
    splits = sample_chain["splits"]
    assert not splits["train"].empty
    gold = pd.concat([splits["validation"], splits["test"]])
    assert not gold.empty and set(gold["reference"]) == {"subtitles"}
    for row in gold.itertuples():
        cues = sample_chain["cues"][row.item]
        # the cue's span, widened by up to split.gold_pad_ms into the pauses around it
        (cue,) = [c for c in cues if 0 <= c.start_ms - row.start_ms <= 200
                  and 0 <= row.end_ms - c.end_ms <= 200]
        assert row.text == clean_target(cue.text)
    assert any(". " in text for text in gold["text"])  # cues of several sentences stay whole
    assert all(a.end_ms <= b.start_ms for _, group in gold.groupby("item")
               for a, b in pairwise(group.itertuples()))


@pytest.fixture(scope="session")
def teacher(tmp_path_factory: pytest.TempPathFactory):
    from tubetune.engines import FasterWhisperTranscriber
    from tubetune.models import prepare_base_model

    root = tmp_path_factory.mktemp("model")
    prepare_base_model("bundled:whisper-base", root / "hf", root / "ct2")
    return FasterWhisperTranscriber(root / "ct2", "cpu", "int8", 2)


def _good_chunks() -> list[np.ndarray]:
    """Cue pairs (up to 29 s) cut from the bundled sample at its subtitle cue times."""
    chunks = []
    for media in sorted((ROOT / "data/sample").glob("*.*")):
        if media.suffix in (".vtt", ".md"):
            continue
        audio = load_audio(media)
        cues = read_vtt(media.with_name(media.stem + ".en.vtt"))
        for a, b in zip(cues[0::2][:4], cues[1::2][:4], strict=False):
            chunks.append(audio[a.start_ms * SR // 1000 : b.end_ms * SR // 1000])
    return chunks


def _bad_chunks(good: list[np.ndarray]) -> list[np.ndarray]:
    rng = np.random.default_rng(0)
    t = np.arange(6 * SR) / SR
    bad = [np.zeros(5 * SR), np.zeros(12 * SR)]  # silence
    for freqs in ([440.0], [261.6, 329.6, 392.0], [220.0, 277.2, 329.6, 440.0]):  # tones, chords
        bad.append(0.2 * sum(np.sin(2 * np.pi * f * t) for f in freqs) / len(freqs))
    melody = np.concatenate([0.3 * np.sin(2 * np.pi * f * t[: SR // 2])
                             for f in [262, 294, 330, 349, 392, 440, 494, 523] * 2])
    bad.append(melody)
    white = rng.normal(0, 0.1, 8 * SR)
    pink = np.cumsum(rng.normal(0, 0.02, 8 * SR))
    brown = np.cumsum(pink)
    bad += [white, 0.3 * pink / np.abs(pink).max(), rng.normal(0, 0.02, 4 * SR),
            0.3 * brown / np.abs(brown).max()]
    word = good[0][: int(0.45 * SR)]
    bad.append(np.tile(word, 15))  # looped speech: one short word 15 times
    bad.append(np.tile(good[1][: int(0.3 * SR)], 20))
    german = load_audio(ROOT / "tests/data/labels/german.wav")
    bad += [german, german[: 3 * SR]]
    bad.append(0.5 * np.sin(2 * np.pi * 110 * t) * (np.sin(2 * np.pi * 2 * t) > 0))  # beat
    return [b.astype(np.float32) for b in bad]


@pytest.mark.slow
def test_filters_reject_bad_keep_good(teacher) -> None:
    from tubetune.engines import DecodeOptions

    params = LabelParams()
    options = DecodeOptions("en", "transcribe", beam_size=1, temperatures=(0.0, 0.4, 0.8))
    good = _good_chunks()
    bad = _bad_chunks(good)

    def rejected(audio: np.ndarray) -> bool:
        tr = teacher.transcribe_batch([audio], options)[0]
        return teacher_rejection(tr, len(audio) / SR, "en", params) is not None

    good_rejected = sum(rejected(a) for a in good)
    bad_rejected = sum(rejected(a) for a in bad)
    assert len(good) >= 15 and len(bad) >= 15
    assert bad_rejected >= 0.9 * len(bad), f"{bad_rejected}/{len(bad)} bad chunks rejected"
    assert good_rejected <= 0.05 * len(good), f"{good_rejected}/{len(good)} good rejected"
