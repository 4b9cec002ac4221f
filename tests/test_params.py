"""params.yaml validation: every mistake is caught up front, naming the key."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from tubetune.params import ParamsError, SegmentParams, load_params, parse_params

ROOT = Path(__file__).resolve().parents[1]


def base() -> dict:
    return yaml.safe_load((ROOT / "params.yaml").read_text())


def test_project_params_are_valid() -> None:
    params = load_params(ROOT / "params.yaml")
    assert params.base_model == "bundled:whisper-base"
    assert len(params.sources) == 5
    assert params.train.learning_rate == 3e-5
    assert params.language_of("cooking-tips") == "en"
    assert params.segment.cue_snap_ms == SegmentParams().cue_snap_ms == 300  # code default


@pytest.mark.parametrize(
    ("change", "key"),
    [
        ({"trian": {}}, "trian: unknown key"),
        ({"train": {"max_steps": "many"}}, "train.max_steps: expected an integer"),
        ({"train": {"learning_rate": "fast"}}, "train.learning_rate: expected a number"),
        ({"train": {"freeze_encoder": "yes"}}, "train.freeze_encoder: expected true or false"),
        ({"train": {"lr": 1}}, "train.lr: unknown key"),
        ({"segment": {"overlap_s": 10}}, "segment.overlap_s"),
        ({"segment": {"method": "magic"}}, "segment.method"),
        ({"segment": {"max_s": 45}}, "segment.max_s"),
        ({"segment": {"cue_snap_ms": -1}}, "segment.cue_snap_ms: must be >= 0"),
        ({"segment": {"cue_snap_ms": 0.3}}, "segment.cue_snap_ms: expected an integer"),
        ({"split": {"test_fraction": 0.6, "validation_fraction": 0.5}}, "split.test_fraction"),
        ({"language": "English"}, "language: expected a language code"),
        ({"sources": {"a": {"url": "gopher://x"}}}, "sources.a.url: unsupported URL scheme"),
        ({"sources": {"a": {"url": "x.mp4", "lang": "en"}}}, "sources.a.lang: unknown key"),
        ({"sources": {"bad name!": {"url": "x.mp4"}}}, "sources.bad name!"),
        ({"sources": {}}, "sources: expected a non-empty mapping"),
        ({"train": {"precision": "fp8"}}, "train.precision"),
        ({"train": {"num_gpus": -1}}, "train.num_gpus: must be >= 0"),
        ({"train": {"num_gpus": "all"}}, "train.num_gpus: expected an integer"),
        ({"train": {"num_nodes": 0}}, "train.num_nodes: must be >= 1"),
        ({"train": {"num_nodes": 2}}, "train.rdzv_endpoint: needed when num_nodes > 1"),
        ({"train": {"num_nodes": 2, "rdzv_endpoint": "head"}}, "train.rdzv_endpoint: expected"),
        ({"train": {"rdzv_endpoint": "head:70000"}}, "train.rdzv_endpoint: expected host:port"),
        ({"scale": {"label_runner": "dask"}}, "scale.label_runner: expected local or ray"),
        ({"scale": {"label_workers": 0}}, "scale.label_workers: expected auto or an integer"),
        ({"scale": {"label_workers": "all"}}, "scale.label_workers: expected auto or"),
        ({"labels": {"beam_size": 0}}, "labels.beam_size: expected auto or an integer >= 1"),
        ({"labels": {"beam_size": "wide"}}, "labels.beam_size: expected auto"),
        ({"scale": {"workers": 2}}, "scale.workers: unknown key"),
    ],
)
def test_bad_values_name_the_key(change: dict, key: str) -> None:
    raw = base()
    for section, value in change.items():
        if isinstance(value, dict) and isinstance(raw.get(section), dict) and section != "sources":
            raw[section] = {**raw[section], **value}
        else:
            raw[section] = value
    with pytest.raises(ParamsError, ) as info:
        parse_params(raw)
    assert key in str(info.value)


def test_source_shorthand_and_lists() -> None:
    raw = base()
    raw["sources"] = {"one": "a.mp4", "many": ["https://x.invalid/a", "b.mp4"]}
    params = parse_params(raw)
    assert params.sources["one"].urls == ["a.mp4"]
    assert params.sources["many"].urls == ["https://x.invalid/a", "b.mp4"]


def test_unknown_source_is_a_clear_error() -> None:
    params = load_params(ROOT / "params.yaml")
    with pytest.raises(ParamsError, match=r"sources\.nope: no such source"):
        params.source("nope")


def test_missing_file_is_named(tmp_path: Path) -> None:
    with pytest.raises(ParamsError, match="file not found"):
        load_params(tmp_path / "params.yaml")


def test_rounds_chain_from_base_or_earlier_rounds() -> None:
    raw = base()
    raw["rounds"] = {
        "r1": {"init": "models/base/hf"},
        "r2": {"init": "models/rounds/r1", "train": {"learning_rate": 5e-6}},
    }
    params = parse_params(raw)
    assert params.final_round == "r2"
    assert params.round_train("r2").learning_rate == 5e-6
    assert params.round_train("r1").learning_rate == params.train.learning_rate
    raw["rounds"] = {"r1": {"init": "models/rounds/r2"}, "r2": {}}
    with pytest.raises(ParamsError, match=r"rounds\.r1\.init"):
        parse_params(raw)
    raw["rounds"] = {"r1": {"train": {"max_steps": "x"}}}
    with pytest.raises(ParamsError, match=r"rounds\.r1\.train\.max_steps"):
        parse_params(raw)
    raw["rounds"] = {"r1": {"train": {"learning_rate": -1.0}}}  # ranges checked per round too
    with pytest.raises(ParamsError, match=r"rounds\.r1\.train\.learning_rate: must be > 0"):
        parse_params(raw)
    raw["rounds"] = {"r1": {"sources": ["nope"]}}
    with pytest.raises(ParamsError, match=r"rounds\.r1\.sources"):
        parse_params(raw)


def test_scale_and_multi_gpu_keys() -> None:
    params = load_params(ROOT / "params.yaml")
    assert (params.scale.label_runner, params.scale.label_workers) == ("local", "auto")
    assert params.labels.beam_size == "auto"
    assert (params.train.num_gpus, params.train.num_nodes) == (0, 1)
    raw = base()
    raw["scale"] = {"label_runner": "ray", "label_workers": 4, "ray_address": "auto"}
    raw["train"] = {**raw["train"], "num_gpus": 8, "num_nodes": 2,
                    "rdzv_endpoint": "[fd00::1]:29500"}
    params = parse_params(raw)
    assert params.scale.ray_address == "auto"
    assert params.train.rdzv_endpoint == "[fd00::1]:29500"
    raw["rounds"] = {"round1": {"train": {"num_nodes": 3, "rdzv_endpoint": "x:0"}}}
    with pytest.raises(ParamsError, match=r"rounds\.round1\.train\.rdzv_endpoint"):
        parse_params(raw)
