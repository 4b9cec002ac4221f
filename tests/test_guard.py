"""The forgetting guard: candidates, interpolated weights and the budgeted choice."""

from __future__ import annotations

import json
import shutil
from dataclasses import replace
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import soundfile as sf
import torch
from transformers import WhisperForConditionalGeneration

from helpers.tiny_whisper import make_tiny_whisper
from tubetune.evaluation import Predictions, heldout_halves, save_predictions
from tubetune.guard import Candidate, Scored, candidates, choose, guard_round, write_candidate
from tubetune.params import EvaluateParams, ExportParams

BASE = {"validation": 20.0, "heldout_select": 10.0}


def scored(name: str, a: float, validation: float, heldout: float) -> Scored:
    return Scored(name, a, validation, heldout)


def test_best_validation_within_the_budget_wins() -> None:
    marked, winner = choose(
        [scored("start", 0, 20, 10), scored("a=0.5", 0.5, 12, 10.4),
         scored("a=1", 1, 8, 12), scored("step-10", 1, 15, 9)],
        BASE, BASE, budget=0.05)
    assert winner.name == "a=0.5"  # a=1 is better in-domain but 20 % worse held out
    assert [m.within_budget for m in marked] == [True, True, False, True]
    assert marked[2].vs_base == 1.2


def test_held_out_scored_on_demand_gives_the_same_choice() -> None:
    full = [scored("start", 0, 20, 10), scored("a=0.5", 0.5, 12, 10.4),
            scored("a=1", 1, 8, 12), scored("step-10", 1, 15, 9)]
    heldout = {s.name: s.heldout_select for s in full}
    asked: list[str] = []

    def fill(s: Scored) -> Scored:
        asked.append(s.name)
        return Scored(s.name, s.a, s.validation, heldout[s.name])

    lazy = [full[0], *(Scored(s.name, s.a, s.validation, None) for s in full[1:])]
    marked, winner = choose(lazy, BASE, BASE, budget=0.05, fill_heldout=fill)
    assert winner == choose(full, BASE, BASE, budget=0.05)[1]
    assert asked == ["a=1", "a=0.5"]  # in the winner's order, up to the first within budget
    assert [m.within_budget for m in marked] == [True, True, False, None]  # step-10 unchecked


def test_a_candidate_vetoed_part_way_is_out_of_budget_and_the_next_one_is_scored() -> None:
    lazy = [scored("start", 0, 20, 10), Scored("a=0.5", 0.5, 12, None),
            Scored("a=1", 1, 8, None)]

    def fill(s: Scored) -> Scored:
        if s.name == "a=1":  # one language alone already shows a loss
            return replace(s, within_budget=False, by_language_lower="ru 1.300 (vetoed)")
        return replace(s, heldout_select=10.0)

    marked, winner = choose(lazy, BASE, BASE, budget=0.05, fill_heldout=fill)
    assert winner.name == "a=0.5"
    assert marked[2].within_budget is False and marked[2].heldout_select is None


def test_ties_go_to_the_candidate_closer_to_the_start() -> None:
    _, winner = choose([scored("start", 0, 20, 10), scored("a=0.5", 0.5, 12, 10),
                        scored("a=1", 1, 12, 10)], BASE, BASE, budget=0.05)
    assert winner.name == "a=0.5"


def test_nothing_within_budget_keeps_the_start_model() -> None:
    _, winner = choose([scored("start", 0, 20, 10), scored("a=1", 1, 5, 11)], BASE, BASE,
                       budget=0.05)
    assert winner.name == "start" and winner.a == 0


def test_later_rounds_are_held_to_the_round_before_too() -> None:
    start = {"validation": 12.0, "heldout_select": 8.0}  # round 1 improved held-out
    _, winner = choose([scored("start", 0, 12, 8), scored("a=1", 1, 6, 9)], BASE, start,
                       budget=0.05)
    assert winner.name == "start"  # within 5 % of the base, but 12.5 % worse than round 1


def test_without_a_heldout_set_validation_decides() -> None:
    base = {"validation": 20.0}
    _, winner = choose([Scored("start", 0, 20, None), Scored("a=1", 1, 5, None)], base, base,
                       budget=0.05)
    assert winner.name == "a=1"


def test_heldout_halves_alternate_within_each_kind() -> None:
    frame = pd.DataFrame({"path": [f"{i:02d}.flac" for i in range(6)], "text": "x",
                          "kind": ["a", "a", "a", "b", "b", "b"]})
    select, report = heldout_halves(frame)
    assert select["path"].tolist() == ["00.flac", "02.flac", "03.flac", "05.flac"]
    assert report["path"].tolist() == ["01.flac", "04.flac"]
    assert set(select["kind"]) == set(report["kind"]) == {"a", "b"}


@pytest.fixture(scope="module")
def models(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("guard")
    start = make_tiny_whisper(root / "start", seed=0)
    tuned = make_tiny_whisper(root / "tuned", seed=1)
    (tuned / "snapshots" / "step-5").mkdir(parents=True)
    shutil.copyfile(start / "model.safetensors", tuned / "snapshots/step-5/model.safetensors")
    return {"root": root, "start": start, "tuned": tuned}


def test_interpolated_weights_lie_between_start_and_tuned(models: dict[str, Path]) -> None:
    out = models["root"] / "half"
    write_candidate(Candidate("a=0.5", 0.5, models["tuned"]), models["start"], models["tuned"],
                    out)
    half, start, tuned = (WhisperForConditionalGeneration.from_pretrained(p).state_dict()
                          for p in (out, models["start"], models["tuned"]))
    for name in ("model.decoder.layers.0.fc1.weight", "model.encoder.conv1.weight"):
        assert torch.allclose(half[name], (start[name] + tuned[name]) / 2, atol=1e-6)
    assert (out / "generation_config.json").is_file() and (out / "tokenizer.json").is_file()
    listed = candidates(models["tuned"], ExportParams(interpolation=[0.5, 1.0]))
    assert [(c.name, c.a) for c in listed] == [("start", 0), ("a=0.5", 0.5), ("a=1", 1.0),
                                               ("step-5", 1.0)]
    assert len(candidates(models["tuned"], ExportParams(checkpoints=False))) == 5  # start + 4 a


@pytest.mark.parametrize("base_validation", ["perfect", "junk"])
def test_guard_round_writes_the_choice_and_the_curve(models: dict[str, Path],
                                                     base_validation: str) -> None:
    root = models["root"] / base_validation
    rng = np.random.default_rng(0)
    rows = []
    for i in range(2):
        path = root / f"clip{i}.wav"
        path.parent.mkdir(parents=True, exist_ok=True)
        sf.write(path, (0.1 * rng.standard_normal(16000)).astype(np.float32), 16000)
        rows.append({"path": str(path), "text": "hello there", "language": "en",
                     "duration_s": 1.0})
    sets = {"validation": pd.DataFrame(rows), "heldout_select": pd.DataFrame(rows)}
    # The base (= start) model's transcripts, as evaluate-baseline saves them: perfect held
    # out, so no random candidate can stay within the budget; on validation either perfect
    # (the start ranks first) or worse than any decode (the candidate ranks first, fails).
    junk = " ".join(["junk"] * 1000)
    texts = {"heldout_select": ["hello there"] * 2,
             "validation": ["hello there"] * 2 if base_validation == "perfect" else [junk] * 2}
    save_predictions(sets, Predictions(texts, dict.fromkeys(sets, 0.1)), root / "baseline")
    record = guard_round(
        "round1", train_dir=models["tuned"], start_dir=models["start"], base_is_start=True,
        sets=sets, baseline_dir=root / "baseline", out_dir=root / "chosen",
        metrics_path=root / "guard.json", curve_path=root / "guard.csv", language="en",
        task="transcribe", params=ExportParams(interpolation=[1.0], checkpoints=False),
        evaluate=EvaluateParams(beam_size=1),
    )
    assert record["chosen"] == "start" and record["kept_start_model"]
    assert json.loads((root / "guard.json").read_text()) == record
    curve = pd.read_csv(root / "guard.csv")
    assert curve["name"].tolist() == ["start", "a=1"]
    assert curve.loc[0, "within_budget"]  # marked even where it was not the first checked
    if base_validation == "perfect":
        # The start ranks first, so the candidate's held-out half is never decoded: not
        # checked (empty), not "within budget".
        assert pd.isna(curve.loc[1, "within_budget"]) and pd.isna(curve.loc[1, "heldout_select"])
    else:  # checked first, out of budget: the start model is handed on
        assert curve.loc[1, "heldout_select"] > 0 and not curve.loc[1, "within_budget"]
        assert curve.loc[1, "validation"] < curve.loc[0, "validation"]
    chosen = WhisperForConditionalGeneration.from_pretrained(root / "chosen").state_dict()
    start = WhisperForConditionalGeneration.from_pretrained(models["start"]).state_dict()
    assert all(torch.equal(chosen[k], start[k]) for k in start)


def test_a_regression_the_held_out_set_cannot_rule_out_is_not_within_budget() -> None:
    # On 20 utterances the candidate is 10 % better on average, but one of them carries
    # all its gain: resampling the utterances, it is worse than the budget far too often.
    base_edits = [(1, 10)] * 20
    lucky = [(0, 10)] * 10 + [(2, 10)] * 9 + [(0, 10)]
    steady = [(1, 10)] * 19 + [(0, 10)]
    edits = {"base": base_edits, "start": base_edits, "lucky": lucky, "steady": steady}
    point = {"validation": 20.0, "heldout_select": 10.0}
    scored = [Scored("start", 0, 20, 10), Scored("lucky", 1, 5, 9.0), Scored("steady", 0.5, 8,
                                                                             9.5)]
    marked, winner = choose(scored, point, point, budget=0.05, edits=edits, confidence=0.9)
    assert [m.within_budget for m in marked][1:] == [False, True]
    assert marked[1].vs_base == 0.9 and marked[1].vs_base_upper > 1.05
    assert winner.name == "steady"
    _, plain = choose(scored, point, point, budget=0.05)  # point ratios alone: lucky wins
    assert plain.name == "lucky"


def test_a_gain_in_one_language_does_not_buy_a_loss_in_another() -> None:
    # 20 English utterances, the candidate fixes half the base's errors; 5 Mandarin ones,
    # it doubles them. Pooled it is far better than the base; in Mandarin it is worse.
    base_edits = [(2, 10)] * 20 + [(1, 10)] * 5
    tuned = [(1, 10)] * 20 + [(2, 10)] * 5
    edits = {"base": base_edits, "start": base_edits, "a=1": tuned}
    point = {"validation": 20.0, "heldout_select": 18.0}
    scored = [Scored("start", 0, 20, 18.0), Scored("a=1", 1, 5, 12.0)]
    languages = {"en": list(range(20)), "zh": list(range(20, 25))}
    pooled, winner = choose(scored, point, point, budget=0.05, edits=edits, confidence=0.9)
    assert winner.name == "a=1" and pooled[1].by_language_lower is None
    marked, winner = choose(scored, point, point, budget=0.05, edits=edits, confidence=0.9,
                            languages=languages)
    assert winner.name == "start" and marked[1].within_budget is False
    assert marked[1].by_language_lower == "en 0.500, zh 2.000"


def test_a_language_too_small_to_show_a_loss_does_not_veto() -> None:
    # 4 Russian clips, 15 base errors; the candidate makes one more (7 % on one draw): four
    # clips cannot show that it is really worse, and pooled it is clearly better.
    base_edits = [(2, 10)] * 20 + [(4, 30), (4, 30), (4, 30), (3, 30)]
    tuned = [(1, 10)] * 20 + [(5, 30), (4, 30), (4, 30), (3, 30)]
    edits = {"base": base_edits, "start": base_edits, "a=1": tuned}
    point = {"validation": 20.0, "heldout_select": 17.5}
    scored = [Scored("start", 0, 20, 17.5), Scored("a=1", 1, 5, 11.7)]
    languages = {"en": list(range(20)), "ru": list(range(20, 24))}
    marked, winner = choose(scored, point, point, budget=0.05, edits=edits, confidence=0.9,
                            languages=languages)
    assert winner.name == "a=1", marked
    assert float(marked[1].by_language_lower.split("ru ")[1]) <= 1.05


def test_a_validation_score_not_really_worse_than_the_best_goes_to_the_smaller_a() -> None:
    # 12 validation utterances: a=1 makes 1 error, a=0.5 makes 3 (two in one utterance): on
    # resamples of the utterances a=0.5 is often no worse. The start model makes 12: worse.
    val = {"start": [(1, 10)] * 12, "a=0.5": [(2, 10), (1, 10)] + [(0, 10)] * 10,
           "a=1": [(1, 10)] + [(0, 10)] * 11}
    scored = [Scored("start", 0, 10.0, 10), Scored("a=0.5", 0.5, 2.5, 10),
              Scored("a=1", 1, 0.83, 10)]
    marked, winner = choose(scored, BASE, BASE, budget=0.05, validation_edits=val,
                            validation_confidence=0.9)
    assert winner.name == "a=0.5"
    assert [m.ties_best for m in marked] == [False, True, True]
    _, outright = choose(scored, BASE, BASE, budget=0.05, validation_edits=val,
                         validation_confidence=0)
    assert outright.name == "a=1"  # 0: the best validation score wins, as before
    # The start model is never a tie, even when no fine-tuned candidate is really better.
    close = [Scored("start", 0, 1.0, 10), scored[2]]
    _, winner = choose(close, BASE, BASE, budget=0.05, validation_confidence=0.9,
                       validation_edits={"start": [(1, 10)] + [(0, 10)] * 11, "a=1": val["a=1"]})
    assert winner.name == "a=1"
    # A tie out of the held-out budget does not win: the next tie (the best) does.
    over = [scored[0], replace(scored[1], heldout_select=12.0), scored[2]]
    _, winner = choose(over, BASE, BASE, budget=0.05, validation_edits=val,
                       validation_confidence=0.9)
    assert winner.name == "a=1"
