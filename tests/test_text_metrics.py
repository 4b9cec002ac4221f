"""Metric normalisers, WER/CER and subtitle handling."""

from __future__ import annotations

import pytest

from tubetune.metrics import error_rates, utterance_error_rate
from tubetune.subtitles import Cue, cut_fraction, parse_vtt, text_in_span
from tubetune.text import clean_target, normalize_for_metric, uses_characters


def test_english_normaliser_ignores_case_punctuation_and_number_style() -> None:
    assert normalize_for_metric("Hello, World!", "en") == "hello world"
    rates = error_rates(["It costs twenty five dollars."], ["it costs $25"], "en")
    assert rates.wer == 0.0


def test_character_languages_use_cer() -> None:
    assert uses_characters("zh-TW") and uses_characters("ko") and not uses_characters("en")
    rates = error_rates(["今天天氣很好"], ["今天天气很好"], "zh-TW")
    assert rates.unit == "char"
    assert rates.primary == pytest.approx(100 / 6)
    assert rates.wer == 100.0  # why WER on unsegmented Chinese is meaningless


def test_error_rates_count_edits_and_skip_empty_references() -> None:
    rates = error_rates(["the cat sat", ""], ["the bat sat down", "noise"], "en")
    assert (rates.substitutions, rates.insertions, rates.deletions) == (1, 1, 0)
    assert rates.reference_units == 3
    assert utterance_error_rate("", "x", "en") is None
    with pytest.raises(ValueError, match="hypotheses"):
        error_rates(["a"], [], "en")


def test_clean_target_keeps_case_and_punctuation() -> None:
    assert clean_target("  Hello,\u200b  world!\n") == "Hello, world!"


VTT = """WEBVTT
Kind: captions

1
00:00:00.500 --> 00:00:02.000 align:start
<c>Hello</c> &amp; welcome

00:00:02.500 --> 00:00:05.000
to the show.

01:00:00.000 --> 01:00:01.250
Late line
"""


def test_parse_vtt_strips_tags_and_reads_hours() -> None:
    cues = parse_vtt(VTT)
    assert cues == [
        Cue(500, 2000, "Hello & welcome"),
        Cue(2500, 5000, "to the show."),
        Cue(3_600_000, 3_601_250, "Late line"),
    ]


def test_rolling_captions_are_deduplicated() -> None:
    rolling = (
        "WEBVTT\n\n00:00:01.000 --> 00:00:02.000\nhello\n\n"
        "00:00:02.000 --> 00:00:03.000\nhello there\n"
    )
    assert [c.text for c in parse_vtt(rolling)] == ["hello", "there"]


def test_text_in_span_keeps_cues_mostly_inside() -> None:
    cues = parse_vtt(VTT)
    assert text_in_span(cues, 0, 3000) == "Hello & welcome"
    assert text_in_span(cues, 0, 4000) == "Hello & welcome to the show."
    assert cut_fraction(cues, 0, 2000) == 0.0
    assert 0 < cut_fraction(cues, 0, 3000) < 1
