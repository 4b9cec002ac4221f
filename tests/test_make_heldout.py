"""The rules that choose the telephone prompts of data/evalsets/phone (scripts/make_heldout.py)."""

from __future__ import annotations

import gzip
import importlib.util
import sys
from pathlib import Path

import numpy as np
import soundfile as sf

ROOT = Path(__file__).resolve().parent.parent


def _script():
    spec = importlib.util.spec_from_file_location("make_heldout", ROOT / "scripts/make_heldout.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules["make_heldout"] = module  # dataclasses look their module up
    spec.loader.exec_module(module)
    return module


mh = _script()


def _wav(path: Path, seconds: float) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    sf.write(path, np.zeros(round(seconds * mh.PROMPT_RATE), dtype=np.int16), mh.PROMPT_RATE,
             subtype="PCM_16")


def test_transcripts_skip_comments_and_drop_keys_given_two_texts(tmp_path: Path) -> None:
    text = ("\ufeff; Core Asterisk Sounds\n\nactivated: Attivato.\n"
            "conf-full: La conferenza ? piena.\nconf-full: La conferenza è piena.\n")
    path = tmp_path / "core-sounds-it.txt.gz"
    path.write_bytes(gzip.compress(text.encode("utf-8")))
    assert mh.prompt_transcripts(path) == {"activated": "Attivato."}


def test_only_whole_spoken_sentences_are_eligible(tmp_path: Path) -> None:
    transcripts = {
        "ok-one": "Please hold while I connect you.",
        "ok-again": "Please hold, while I connect you!",  # the same text again: one take
        "digits/1": "one two three",  # a folder of single tokens
        "short": "Goodbye now",  # under three words
        "number": "Press 1 for sales and more.",
        "fragment": "You are caller number ...",
        "spelled": "The I A X channel is down.",
        "too-long": "This prompt is far too long to keep.",
        "missing": "No recording exists for this one.",
    }
    for key in transcripts:
        if key != "missing":
            _wav(tmp_path / f"{key}.wav", 12.0 if key == "too-long" else 2.0)
    keys = [p.key for p in mh.eligible_prompts("en", transcripts, tmp_path)]
    assert keys == ["ok-again"]  # sorted keys: "ok-again" comes before "ok-one"
    ru = {"a": "Введите ваш номер телефона.", "b": "Please enter your number now."}
    for key in ru:
        _wav(tmp_path / "ru" / f"{key}.wav", 2.0)
    assert [p.key for p in mh.eligible_prompts("ru", ru, tmp_path / "ru")] == ["a"]


def test_prompts_pack_into_bounded_clips_in_a_fixed_order() -> None:
    prompts = [mh.Prompt(f"p{i:02d}", "three word text", 2.0 + (i % 5)) for i in range(60)]
    clips = mh.pack_prompts(prompts)
    assert len(clips) == mh.PROMPT_CLIPS
    for clip in clips:
        length = sum(p.seconds for p in clip) + mh.PROMPT_GAP_S * (len(clip) - 1)
        assert length <= mh.PROMPT_MAX_S
    assert clips == mh.pack_prompts(list(reversed(prompts)))  # the order is the keys' hash
    used = [p.key for clip in clips for p in clip]
    assert len(used) == len(set(used))


def test_clips_pair_within_their_kind_in_path_order() -> None:
    rows = [{"path": f"c-{i}.flac", "kind": "b" if i % 2 else "a"} for i in range(7)]
    pairs = [[r["path"] for r in pair] for pair in mh.pair_rows(rows)]
    assert pairs == [["c-0.flac", "c-2.flac"], ["c-4.flac", "c-6.flac"],
                     ["c-1.flac", "c-3.flac"], ["c-5.flac"]]


def test_the_general_set_is_what_the_other_two_derive(tmp_path: Path) -> None:
    # data/evalsets/general is built from heldout and phone without a download: rebuilding
    # it gives the committed files byte for byte, and every English sentence is in it once.
    evalsets = ROOT / "data/evalsets"
    (tmp_path / "phone").symlink_to(evalsets / "phone")  # the phone rows point to ../phone
    built = tmp_path / "general"
    rows = mh.build_general(evalsets / "heldout", tmp_path / "phone", built)
    committed = evalsets / "general"
    assert sorted(p.name for p in built.iterdir()) == sorted(
        p.name for p in committed.iterdir() if p.name != "README.md")
    for path in built.iterdir():
        assert path.read_bytes() == (committed / path.name).read_bytes(), path.name
    english = mh.read_rows(evalsets / "heldout/heldout.csv")
    joined = " ".join(r["text"] for r in rows if r["language"] == "en")
    assert all(r["text"] in joined for r in english)
    assert {r["language"] for r in rows} == {"en", "fr", "it", "ru"}
