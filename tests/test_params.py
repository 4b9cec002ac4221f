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
        ({"train": {"distill_weight": 1}}, "train.distill_weight: must be in [0, 1)"),
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


def _parse(**sections: dict) -> None:
    """parse_params on the project's params with ``sections`` merged into theirs."""
    raw = base()
    for section, value in sections.items():
        raw[section] = {**(raw.get(section) or {}), **value}
    parse_params(raw)


@pytest.mark.parametrize(
    ("segment", "message"),
    [
        ({"length_s": 10, "overlap_s": 10}, "segment.overlap_s: must be >= 0 and smaller"),
        ({"length_s": 10, "overlap_s": -1}, "segment.overlap_s: must be >= 0"),
        ({"length_s": 10, "overlap_s": 9.9996}, "segment.overlap_s: must be >= 0"),  # 10000 ms
        ({"length_s": 31, "overlap_s": 2}, "segment.length_s: must be in (0, 30]"),
        ({"length_s": 0, "overlap_s": 0}, "segment.length_s: must be in (0, 30]"),
        ({"length_s": 0.0004, "overlap_s": 0, "min_s": 0}, "segment.length_s: must be in"),
        ({"min_s": -1}, "segment.min_s: must be >= 0"),
        ({"min_s": 11}, "segment.min_s: must be >= 0 and <= length_s"),
        ({"method": "silence"}, "segment.method: expected 'fixed' or 'vad', got 'silence'"),
        ({"method": "vad", "max_s": 31}, "segment.max_s: must be in (0, 30]"),
        ({"method": "vad", "min_s": 10, "max_s": 10}, "segment.min_s: must be smaller than max_s"),
        ({"method": "vad", "pad_ms": -1}, "segment.pad_ms: must be >= 0"),
        ({"method": "vad", "min_s": 5, "max_s": 6, "pad_ms": 500},
         "segment.pad_ms: 2 * pad_ms must be < (max_s - min_s) * 1000"),
        ({"method": "fixed", "min_s": 5, "max_s": 6, "pad_ms": 500},  # subtitled: cut at cues
         "segment.pad_ms: 2 * pad_ms must be <"),
        ({"cue_snap_ms": -1}, "segment.cue_snap_ms: must be >= 0"),
    ],
)
def test_segment_values_name_the_key(segment: dict, message: str) -> None:
    with pytest.raises(ParamsError) as info:
        _parse(segment=segment)
    assert f"params.yaml: {message}" in str(info.value)


def test_segment_padding_bounds_only_where_chunks_are_padded() -> None:
    """fixed windows of unsubtitled videos are never padded: max_s and pad_ms do not apply."""
    _parse(segment={"method": "fixed", "min_s": 5, "max_s": 5, "pad_ms": 5000},
           labels={"source": "pseudo"})
    with pytest.raises(ParamsError, match=r"segment\.min_s: must be smaller than max_s"):
        _parse(segment={"method": "fixed", "min_s": 5, "max_s": 5}, labels={"source": "auto"})


DOWNLOAD_ERRORS = [
    ({"date_after": "2024-01-01"}, "date_after: expected a date YYYYMMDD, got '2024-01-01'"),
    ({"date_before": "20241399"}, "date_before: expected a date YYYYMMDD, got '20241399'"),
    ({"date_before": 20241231}, "date_before: expected a non-empty string, got 20241231"),
    ({"date_after": "20240201", "date_before": "20240101"}, "date_after: 20240201 is after"),
    ({"max_videos": -1}, "max_videos: must be >= 0"),
    ({"retries": -1}, "retries: must be >= 0"),
    ({"keep_video": "yes"}, "keep_video: expected true or false"),
    ({"licenses": "Creative Commons"}, "licenses: expected a list"),
    ({"licenses": [""]}, "licenses[0]: expected a non-empty string"),
    ({"rate_limit": "fast"}, 'rate_limit: expected a rate such as "2M"'),
    ({"min_duration_s": -1}, "min_duration_s: must be >= 0"),
    ({"min_duration_s": 5, "max_duration_s": 2}, "max_duration_s: 2 is below min_duration_s=5"),
    ({"socket_timeout_s": 0}, "socket_timeout_s: must be > 0"),
    ({"cookies": ""}, "cookies: expected a non-empty string"),
    ({"max_video": 3}, "max_video: unknown key"),
]


@pytest.mark.parametrize(("options", "message"), DOWNLOAD_ERRORS)
def test_download_values_name_the_key(options: dict, message: str) -> None:
    with pytest.raises(ParamsError) as info:
        _parse(download=options)
    assert f"params.yaml: download.{message}" in str(info.value)


@pytest.mark.parametrize(("options", "message"), DOWNLOAD_ERRORS)
def test_source_options_are_checked_merged_over_download(options: dict, message: str) -> None:
    raw = base()
    raw["sources"] = {**raw["sources"], "talk": {"url": "a.mp4", "options": options}}
    with pytest.raises(ParamsError) as info:
        parse_params(raw)
    assert f"params.yaml: sources.talk.options.{message}" in str(info.value)


def test_source_options_override_download() -> None:
    raw = base()
    raw["download"] = {**raw["download"], "retries": 2, "min_duration_s": 5}
    raw["sources"] = {"talk": {"url": "a.mp4", "options": {
        "max_duration_s": 600, "date_after": "20240101", "rate_limit": "500K"}}}
    options = parse_params(raw).download_of("talk")
    assert (options.retries, options.min_duration_s, options.max_duration_s) == (2, 5.0, 600.0)
    assert (options.date_after, options.rate_limit) == ("20240101", "500K")
    raw["sources"]["talk"]["options"] = {"max_duration_s": 2}  # below the global minimum
    with pytest.raises(ParamsError, match=r"sources\.talk\.options\.max_duration_s: 2 is below"):
        parse_params(raw)


@pytest.mark.parametrize(
    ("url", "message"),
    [
        ("ftp://host/a.mp3", "sources.a.url: unsupported URL scheme 'ftp'"),
        ("ytsearch://cats", "sources.a.url: unsupported URL scheme 'ytsearch'"),
        ("gopher://x", "sources.a.url: unsupported URL scheme 'gopher'"),
        (" https://x.invalid/a", "sources.a.url: unsupported URL scheme ' https'"),
        ("file://elsewhere/a.mp3", "sources.a.url: file URL on another host"),
        ([], "sources.a.url: expected a URL or a path, or a non-empty list"),
        (None, "sources.a.url: expected a URL or a path, or a non-empty list"),
        (["a.mp3", " "], "sources.a.url[1]: expected a URL or a path"),
        ([""], "sources.a.url: bad value"),  # the str | list union names no item
    ],
)
def test_source_urls_name_the_key(url, message: str) -> None:
    raw = base()
    raw["sources"] = {"a": {"url": url}}
    with pytest.raises(ParamsError) as info:
        parse_params(raw)
    assert f"params.yaml: {message}" in str(info.value)


def test_source_urls_accepted() -> None:
    raw = base()
    raw["sources"] = {"a": {"url": ["HTTPS://x.invalid/a", "file:///tmp/a.mp3",
                                    "file://localhost/tmp/b.mp3", "c.mp3", "./d/"]}}
    assert len(parse_params(raw).sources["a"].urls) == 5


@pytest.mark.parametrize(
    ("language", "message"),
    [("english!", "sources.a.language: expected a language code"),
     ("EN", "sources.a.language: expected a language code")],
)
def test_source_language_names_the_key(language: str, message: str) -> None:
    raw = base()
    raw["sources"] = {"a": {"url": "a.mp3", "language": language}}
    with pytest.raises(ParamsError, match=message):
        parse_params(raw)
    raw["sources"] = {"a": {"language": "en"}}  # no url (nor corpus)
    with pytest.raises(ParamsError, match=r"sources\.a: give either url"):
        parse_params(raw)


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
