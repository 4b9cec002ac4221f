"""Training targets: Whisper's timestamp tokens from segment times, and the fallbacks."""

from __future__ import annotations

import json
from types import SimpleNamespace

import pytest
from transformers import WhisperProcessor

from helpers.tiny_whisper import make_tiny_whisper
from tubetune.dataset import WhisperCollator, parse_timings, timestamp_token, timestamped_ids


@pytest.fixture(scope="module")
def tokenizer(tmp_path_factory: pytest.TempPathFactory):
    model = make_tiny_whisper(tmp_path_factory.mktemp("tok") / "model")
    return WhisperProcessor.from_pretrained(model).tokenizer


def ids_of(tokenizer, *tokens: str) -> list[int]:
    return [tokenizer.convert_tokens_to_ids(t) for t in tokens]


@pytest.mark.parametrize(("ms", "token"), [
    (0, "<|0.00|>"), (9, "<|0.00|>"), (11, "<|0.02|>"), (2411, "<|2.42|>"), (2409, "<|2.40|>"),
    (29_999, "<|30.00|>"), (45_000, "<|30.00|>"), (-5, "<|0.00|>"),
])
def test_timestamp_tokens_round_to_the_nearest_20_ms(tokenizer, ms: int, token: str) -> None:
    assert timestamp_token(tokenizer, ms) == tokenizer.convert_tokens_to_ids(token)


def test_timestamped_target_has_whisper_layout(tokenizer) -> None:
    ids = timestamped_ids(tokenizer, [(0, 2400, "Hello there."), (2400, 5012, "Bye.")], "en",
                          "transcribe")
    hello = tokenizer(" Hello there.", add_special_tokens=False).input_ids
    bye = tokenizer(" Bye.", add_special_tokens=False).input_ids
    expected = [*ids_of(tokenizer, "<|startoftranscript|>", "<|en|>", "<|transcribe|>",
                        "<|0.00|>"), *hello, *ids_of(tokenizer, "<|2.40|>", "<|2.40|>"), *bye,
                *ids_of(tokenizer, "<|5.02|>", "<|endoftext|>")]
    assert ids == expected
    assert tokenizer.convert_tokens_to_ids("<|notimestamps|>") not in ids


def test_character_languages_get_no_leading_space(tokenizer) -> None:
    ids = timestamped_ids(tokenizer, [(100, 1500, "你好。")], "zh-TW", "transcribe")
    text = tokenizer("你好。", add_special_tokens=False).input_ids
    assert ids == [*ids_of(tokenizer, "<|startoftranscript|>", "<|zh|>", "<|transcribe|>",
                           "<|0.10|>"), *text, *ids_of(tokenizer, "<|1.50|>", "<|endoftext|>")]


@pytest.mark.parametrize("timings", [
    [],  # times unknown
    [(500, 400, "backwards")],
    [(0, 2000, "one"), (1500, 3000, "overlaps the one before")],
    [(29_000, 31_000, "past the 30 s window")],
])
def test_unusable_times_give_no_timestamped_target(tokenizer, timings) -> None:
    assert timestamped_ids(tokenizer, timings, "en", "transcribe") is None


def test_targets_over_448_positions_fall_back(tokenizer) -> None:
    long = [(i * 100, i * 100 + 90, "word " * 3) for i in range(120)]
    assert timestamped_ids(tokenizer, long, "en", "transcribe") is None
    assert len(timestamped_ids(tokenizer, long[:20], "en", "transcribe")) <= 448


def test_collator_mixes_timestamped_and_plain_targets(tokenizer) -> None:
    timed = {"text": "Hello there.", "language": "en",
             "timings": json.dumps([[0, 2400, "Hello there."]])}
    plain = {**timed, "timings": ""}
    processor = SimpleNamespace(tokenizer=tokenizer)  # targets need only the tokenizer
    notimestamps = tokenizer.convert_tokens_to_ids("<|notimestamps|>")
    always = WhisperCollator(processor, "transcribe", "en", timestamp_probability=1.0)
    never = WhisperCollator(processor, "transcribe", "en", timestamp_probability=0.0)
    assert notimestamps not in always.target_ids(timed)
    assert notimestamps in always.target_ids(plain)  # times unknown: plain target
    assert notimestamps in never.target_ids(timed)

    def draws(seed: int) -> list[bool]:
        collator = WhisperCollator(processor, "transcribe", "en", 0.5, seed=seed)
        return [notimestamps not in collator.target_ids(timed) for _ in range(200)]

    shares = draws(3)
    assert 0.35 < sum(shares) / 200 < 0.65
    assert shares == draws(3)  # reproducible for a seed
    assert parse_timings(timed["timings"]) == [(0, 2400, "Hello there.")]
