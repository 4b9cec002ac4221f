"""Metric normalisers, WER/CER and subtitle handling."""

from __future__ import annotations

import pytest

from tubetune.errors import StageError
from tubetune.metrics import (
    bootstrap_share_worse,
    error_rates,
    set_error_rates,
    utterance_edits,
    utterance_error_rate,
)
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


def test_a_set_of_several_languages_scores_each_utterance_in_its_own() -> None:
    refs = ["the cat sat", "今天天氣很好", "on the mat"]
    hyps = ["the bat sat", "今天天氣很", "on the mat"]
    rates = set_error_rates(refs, hyps, ["en", "zh-TW", "en"])
    assert rates.unit == "mixed"
    assert rates.by_language["en"].wer == pytest.approx(100 / 6)  # 1 of 6 words
    assert rates.by_language["zh-TW"].cer == pytest.approx(100 / 6)  # 1 of 6 characters
    assert rates.primary == rates.mer == pytest.approx(100 * 2 / 12)
    assert rates.reference_units == 12
    assert utterance_edits(refs, hyps, ["en", "zh-TW", "en"]) == [(1, 3), (1, 6), (0, 3)]
    data = rates.as_dict()
    assert data["mer"] == 16.67 and data["by_language"]["zh-TW"]["unit"] == "char"
    one = set_error_rates(refs[:1], hyps[:1], ["en"])  # one language: as error_rates
    assert one == error_rates(refs[:1], hyps[:1], "en") and "mer" not in one.as_dict()


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


def test_saved_baseline_predictions_are_scored_and_stale_ones_refused(tmp_path) -> None:
    import json

    import pandas as pd

    from tubetune.evaluation import (
        Predictions,
        evaluate_models,
        load_predictions,
        save_predictions,
    )

    test = pd.DataFrame({"path": ["a.wav", "b.wav"], "text": ["the cat sat", "on the mat"],
                         "source": "s", "item": "v", "start_ms": [0, 1000],
                         "end_ms": [1000, 2000], "duration_s": 1.0, "language": "en",
                         "reference": "subtitles"})
    whole = test.iloc[:1].assign(text="the cat sat on the mat", duration_s=2.0)
    sets = {"test": test, "longform_sequential": whole}
    saved = Predictions({"test": ["the cat sat", "on a mat"],
                         "longform_sequential": ["the cat sat on a mat"]},
                        {"test": 0.1, "longform_sequential": 0.15},
                        {"longform_sequential": [(4, 3)]})
    save_predictions(sets, saved, tmp_path / "baseline")
    baseline = load_predictions(sets, tmp_path / "baseline")
    assert baseline == saved
    assert baseline.timestamp_share("longform_sequential") == 0.75
    finetuned = Predictions({"test": ["the cat sat", "on the mat"],
                             "longform_sequential": ["the cat sat on the mat"]},
                            {"test": 0.2, "longform_sequential": 0.2},
                            {"longform_sequential": [(4, 4)]})
    metrics = evaluate_models(
        sets, {"baseline": baseline, "finetuned": finetuned},
        predictions_path=tmp_path / "predictions.csv", metrics_path=tmp_path / "eval.json",
        language="en",
    )
    assert metrics["baseline"]["wer"] == 16.67  # 1 of 6 words, rounded to 2 places
    assert metrics["finetuned"]["wer"] == 0 and metrics["finetuned"]["rtf"] == 0.2
    assert metrics["finetuned"]["relative_wer_change_pct"] == -100
    # 2 test utterances: a resample of only the first holds no error of either model (ratio
    # 1); the others 0. A set of one utterance (long-form) gets no interval.
    assert metrics["finetuned"]["vs_base"] == 0 and metrics["finetuned"]["vs_base_90"] == [0, 1]
    assert "vs_base_90" not in metrics["finetuned"]["longform_sequential"]
    from tubetune.evaluation import render_intervals

    assert render_intervals(metrics) == (
        "test: 0.00x the base's errors (90 % interval 0.00-1.00, 2 utterances)")
    assert metrics["baseline"]["longform_sequential"]["timestamp_share"] == 0.75
    assert metrics["finetuned"]["longform_sequential"]["timestamp_share"] == 1.0
    assert json.loads((tmp_path / "eval.json").read_text()) == metrics
    assert list(pd.read_csv(tmp_path / "predictions.csv").columns[-4:]) == [
        "baseline", "baseline_error", "finetuned", "finetuned_error"]

    with pytest.raises(StageError, match="other test utterances"):
        load_predictions({"test": test.iloc[:1]}, tmp_path / "baseline")

    from tubetune.evaluation import load_sets

    test.iloc[:0].to_csv(tmp_path / "test.csv", index=False)
    with pytest.raises(StageError, match="the test split has no utterances"):
        load_sets(tmp_path / "test.csv", None, "en")  # both evaluate stages stop here


def test_a_mixed_language_heldout_set_is_reported_per_language(tmp_path) -> None:
    import pandas as pd

    from tubetune.evaluation import Predictions, evaluate_models, headline

    rows = {"source": "s", "item": "v", "start_ms": 0, "end_ms": 1000, "duration_s": 1.0,
            "reference": "external"}
    test = pd.DataFrame({"path": ["t.wav"], "text": ["今天天氣很好"], "language": [""], **rows})
    heldout = pd.DataFrame({"path": ["a.wav", "b.wav"], "text": ["the cat sat", "今天天氣很好"],
                            "language": ["en", ""], **rows})  # "": the pipeline's (zh-TW)
    sets = {"test": test, "heldout": heldout}
    base = Predictions({"test": ["今天天氣很"], "heldout": ["the bat sat", "今天天氣很好"]},
                       {"test": 0.1, "heldout": 0.1})
    tuned = Predictions({"test": ["今天天氣很好"], "heldout": ["the cat sat", "今天天氣很"]},
                        {"test": 0.1, "heldout": 0.1})
    metrics = evaluate_models(sets, {"baseline": base, "finetuned": tuned},
                              tmp_path / "p.csv", tmp_path / "m.json", language="zh-TW")
    scores = metrics["finetuned"]["heldout"]
    assert scores["unit"] == "mixed" and scores["mer"] == 11.11  # 1 of 3 words + 6 chars
    assert scores["by_language"]["en"]["wer"] == 0
    assert scores["by_language"]["zh-TW"]["cer"] == 16.67
    assert metrics["baseline"]["heldout"]["mer"] == 11.11
    assert scores["relative_mer_change_pct"] == 0
    summary = headline(metrics, 0.1, None)
    assert summary["heldout_mer"] == summary["heldout_mer_base"] == 11.11
    assert summary["test_cer"] == 0


def test_chinese_cer_headline_and_script_insensitive_cer() -> None:
    # Whisper answered in Simplified with one real error (步 -> 布): the plain CER counts
    # the script as errors too, the folded one only the recognition error.
    rates = error_rates(["今天天氣很好，我們去公園散步。"], ["今天天气很好我们去公园散布"], "zh-TW")
    assert rates.unit == "char" and rates.primary == rates.cer
    assert rates.cer_script_insensitive == pytest.approx(100 / 13)
    assert rates.cer > 3 * rates.cer_script_insensitive
    assert "cer_script_insensitive" not in error_rates(["a b"], ["a c"], "en").as_dict()


def test_language_profiles() -> None:
    from tubetune.languages import profile

    assert (profile("zh-TW").metric, profile("zh-TW").whisper) == ("cer", "zh")
    assert profile("ko").metric == "cer" and profile("en").metric == "wer"
    assert profile("zh").chars_per_s == (1.0, 12.0) and profile(None).unit == "word"


def test_bootstrap_share_worse_reads_how_sure_a_difference_is() -> None:
    same = [(1, 10)] * 10
    assert bootstrap_share_worse(same, same) == 0.0  # never more errors than itself
    everywhere = [(2, 10)] * 10  # one more error in every utterance: always worse
    assert bootstrap_share_worse(everywhere, same) == 1.0
    one_bad = [(3, 10)] + [(1, 10)] * 9  # the difference rests on one utterance
    assert 0.5 < bootstrap_share_worse(one_bad, same) < 0.8
    assert bootstrap_share_worse(one_bad, same) == bootstrap_share_worse(one_bad, same)
