"""Load and validate ``params.yaml``: one schema, checked before any stage does work.

Every section is a frozen dataclass. Unknown keys, wrong types and out-of-range values
raise :class:`ParamsError` whose message names the offending key, e.g.
``params.yaml: train.learning_rate: expected a number, got 'fast'``.
"""

from __future__ import annotations

import codecs
import dataclasses
import datetime as dt
import re
import types
import typing
import urllib.parse
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from tubetune.constants import FALLBACK_TEMPERATURES, MAX_TARGET_POSITIONS, WINDOW_S
from tubetune.errors import TubetuneError

DEFAULT_PARAMS_FILE = Path("params.yaml")
SOURCE_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")
LANGUAGE_RE = re.compile(r"^[a-z]{2,3}(-[A-Za-z]{2,4})?$")
ENDPOINT_RE = re.compile(r"^(?P<host>[A-Za-z0-9.-]+|\[[0-9A-Fa-f:]+\]):(?P<port>[0-9]{1,5})$")


class ParamsError(TubetuneError, ValueError):
    """``params.yaml`` is invalid; the message names the key."""


CORPUS_FORMATS: dict[str, frozenset[str]] = {
    "manifest": frozenset({"encoding", "sample_rate"}),
    "ksponspeech": frozenset({"encoding", "sample_rate", "trn"}),
    "commonvoice": frozenset({"encoding", "tsv"}),
    "hf_dataset": frozenset({"audio_column", "text_column", "group_column", "split"}),
}
"""Each labelled-corpus layout with the keys it takes besides ``format`` and ``path``."""


@dataclass(frozen=True)
class CorpusParams:
    """A labelled corpus read in place (tubetune/corpus.py): its utterances and their text.

    ``path`` is the manifest CSV/TSV (``manifest``), the corpus folder (``ksponspeech``,
    ``commonvoice``) or a ``save_to_disk`` folder (``hf_dataset``); relative to the project.
    """

    format: str
    path: str
    encoding: str = "auto"  # text files: auto = UTF-8, else CP949 (KsponSpeech's own)
    sample_rate: int = 16000  # headerless .pcm audio (16-bit little-endian mono)
    trn: str | None = None  # ksponspeech: a script of `path :: text` lines instead of .txt files
    tsv: str = "train.tsv"  # commonvoice: which clip list
    audio_column: str = "audio"  # hf_dataset
    text_column: str = "text"
    group_column: str | None = None  # hf_dataset: rows sharing it are one recording group
    split: str | None = None  # hf_dataset saved as a DatasetDict: which split


@dataclass(frozen=True)
class SourceParams:
    """One entry of ``sources``: media to download (``url``) or a labelled ``corpus``, and the
    language it is spoken in."""

    url: str | list[str] | None = None
    corpus: CorpusParams | None = None
    language: str | None = None
    options: dict[str, Any] = field(default_factory=dict)

    @property
    def urls(self) -> list[str]:
        """The entry's URLs/paths as a list (empty for a corpus)."""
        if self.url is None:
            return []
        return [self.url] if isinstance(self.url, str) else list(self.url)


URL_SCHEMES = ("http", "https", "file")
"""What a source URL may start with (yt-dlp reaches every site over http(s)); else a path."""


def _check_urls(src: SourceParams, key: str, bad: Callable[[str, str], ParamsError]) -> None:
    """A media source's ``url``: a URL or local path, or a non-empty list of them."""
    if src.corpus is None and not src.urls:
        raise bad(f"{key}.url", "expected a URL or a path, or a non-empty list of them")
    for i, url in enumerate(src.urls):
        if not url.strip():
            raise bad(f"{key}.url[{i}]", "expected a URL or a path")
        if "://" not in url:
            continue  # a local file or folder (tubetune.sources reports a missing one)
        scheme = url.split("://", 1)[0].lower()
        if scheme not in URL_SCHEMES:
            raise bad(f"{key}.url", f"unsupported URL scheme {scheme!r} in {url!r} (use "
                      f"{', '.join(URL_SCHEMES)} or a local path)")
        if scheme == "file" and urllib.parse.urlsplit(url.strip()).netloc not in ("", "localhost"):
            raise bad(f"{key}.url", f"file URL on another host: {url!r}")


@dataclass(frozen=True)
class DownloadParams:
    """Global yt-dlp settings; a source's ``options`` override them."""

    keep_video: bool = False
    licenses: list[str] = field(default_factory=list)
    max_videos: int = 0
    date_after: str | None = None
    date_before: str | None = None
    min_duration_s: float = 0.0
    max_duration_s: float = 0.0
    subtitles: bool = True
    auto_subtitles: bool = False
    retries: int = 5
    socket_timeout_s: float = 30.0
    rate_limit: str | None = None
    cookies: str | None = None
    strict: bool = False


def _check_download(d: DownloadParams, section: str,
                    bad: Callable[[str, str], ParamsError]) -> None:
    """Values of a download section: the global ``download`` or a source's merged ``options``."""
    for name in ("max_videos", "retries"):
        if getattr(d, name) < 0:
            raise bad(f"{section}.{name}", "must be >= 0")
    for name in ("min_duration_s", "max_duration_s"):
        if not getattr(d, name) >= 0:
            raise bad(f"{section}.{name}", "must be >= 0")
    if not d.socket_timeout_s > 0:
        raise bad(f"{section}.socket_timeout_s", "must be > 0")
    if d.max_duration_s and d.max_duration_s < d.min_duration_s:
        raise bad(f"{section}.max_duration_s", f"{d.max_duration_s:g} is below min_duration_s="
                  f"{d.min_duration_s:g} (0 = no limit)")
    for name in ("date_after", "date_before"):
        date = getattr(d, name)
        if date is not None and not _is_date(date):
            raise bad(f"{section}.{name}", f"expected a date YYYYMMDD, got {date!r}")
    if d.date_after and d.date_before and d.date_after > d.date_before:
        raise bad(f"{section}.date_after", f"{d.date_after} is after date_before={d.date_before}")
    if d.rate_limit is not None:
        from yt_dlp.utils import parse_bytes  # the parser tubetune.sources hands yt-dlp

        if parse_bytes(d.rate_limit) is None:
            raise bad(f"{section}.rate_limit", 'expected a rate such as "2M" or "500K" (bytes '
                      f"per second), got {d.rate_limit!r}")


def _is_date(text: str) -> bool:
    """Whether ``text`` is a real calendar date written YYYYMMDD (yt-dlp's upload_date)."""
    try:
        return bool(re.fullmatch(r"\d{8}", text)) and bool(dt.datetime.strptime(text, "%Y%m%d"))
    except ValueError:
        return False


@dataclass(frozen=True)
class SegmentParams:
    """How resampled audio is cut into training chunks."""

    method: str = "vad"
    length_s: float = 10.0
    overlap_s: float = 2.0
    min_s: float = 1.0
    max_s: float = WINDOW_S
    pad_ms: int = 200
    cue_snap_ms: int = 300


def _check_segment(seg: SegmentParams, at_speech: bool,
                   bad: Callable[[str, str], ParamsError]) -> None:
    """Values of ``segment``, compared in whole milliseconds as chunks are cut. ``at_speech``:
    chunks are cut at speech (``vad``) or along subtitle cues (any method unless
    ``labels.source`` is pseudo), which pad up to ``pad_ms`` on both sides within ``max_s``."""

    def ms(seconds: float) -> int:
        return round(seconds * 1000)

    if seg.method not in ("fixed", "vad"):
        raise bad("segment.method", f"expected 'fixed' or 'vad', got {seg.method!r}")
    if not 0 < seg.length_s <= WINDOW_S or ms(seg.length_s) <= 0:
        raise bad("segment.length_s", f"must be in (0, {WINDOW_S:g}] (Whisper's window is "
                  f"{WINDOW_S:g} s), at least 1 ms")
    if not 0 <= seg.overlap_s < seg.length_s or ms(seg.overlap_s) >= ms(seg.length_s):
        raise bad("segment.overlap_s", "must be >= 0 and smaller than segment.length_s (by at "
                  "least 1 ms)")
    if not 0 < seg.max_s <= WINDOW_S or ms(seg.max_s) <= 0:
        raise bad("segment.max_s", f"must be in (0, {WINDOW_S:g}], at least 1 ms")
    if not 0 <= seg.min_s <= min(seg.length_s, seg.max_s):
        raise bad("segment.min_s", "must be >= 0 and <= length_s and max_s")
    if at_speech and ms(seg.min_s) >= ms(seg.max_s):
        raise bad("segment.min_s", "must be smaller than max_s (by at least 1 ms) when chunks "
                  "are cut at speech or cues (method vad, or labels.source not pseudo)")
    if seg.pad_ms < 0:
        raise bad("segment.pad_ms", "must be >= 0")
    if at_speech and 2 * seg.pad_ms >= ms(seg.max_s) - ms(seg.min_s):
        raise bad("segment.pad_ms", "2 * pad_ms must be < (max_s - min_s) * 1000 when chunks are "
                  "cut at speech or cues (method vad, or labels.source not pseudo)")
    if seg.cue_snap_ms < 0:
        raise bad("segment.cue_snap_ms", "must be >= 0")


@dataclass(frozen=True)
class NormalizeParams:
    """How label text becomes a training target (per language; metrics use their own)."""

    zh_convert: str | None = "s2twp"
    fullwidth_punctuation: bool = True
    ko_dual_spelling: str = "phonetic"


@dataclass(frozen=True)
class LabelParams:
    """Teacher (pseudo-labelling) settings, label filters and target normalisation."""

    source: str = "auto"
    max_subtitle_disagreement: float | None = 50.0
    max_subtitle_cut: float = 0.2
    max_corpus_disagreement: float | None = None  # None: the teacher never runs on a corpus
    engine: str = "faster-whisper"
    model: str = "base"
    device: str = "auto"
    compute_type: str = "auto"
    beam_size: int | str = "auto"
    batch_size: int = 1
    cpu_threads: int = 0
    temperatures: list[float] = field(default_factory=lambda: list(FALLBACK_TEMPERATURES))
    min_language_probability: float = 0.5
    max_no_speech_prob: float = 0.6
    min_avg_logprob: float = -1.0
    max_compression_ratio: float = 2.4
    min_unique_word_ratio: float = 0.3
    max_ngram_repeats: int = 4
    max_char_run: int = 8
    min_chars_per_s: float | str = "auto"  # auto: the language's bounds (tubetune/languages.py)
    max_chars_per_s: float | str = "auto"
    max_label_tokens: int = MAX_TARGET_POSITIONS
    hallucination_phrases: bool = True
    normalize: NormalizeParams = field(default_factory=NormalizeParams)


@dataclass(frozen=True)
class SplitParams:
    """Grouped (by source) train/validation/test split."""

    seed: int = 13
    validation_fraction: float = 0.2
    test_fraction: float = 0.2
    min_duration_s: float = 0.5
    max_duration_s: float = WINDOW_S  # longer utterances do not fit Whisper's window
    gold_pad_ms: int = 200  # validation/test utterances: margin around each cue's times
    external_test: str | None = None
    test_sources: list[str] = field(default_factory=list)  # every utterance is test (gold text)


@dataclass(frozen=True)
class TrainParams:
    """Seq2SeqTrainer settings. Defaults are sized for a CPU demo; see README for GPU."""

    seed: int = 42
    deterministic: bool = True  # bit-reproducible training (torch deterministic algorithms)
    method: str = "full"  # full: every weight; lora: low-rank adapters (PEFT), merged on save
    lora_rank: int = 32
    lora_alpha: float = 64.0
    lora_dropout: float = 0.05
    lora_target_modules: list[str] = field(
        default_factory=lambda: ["q_proj", "k_proj", "v_proj", "out_proj", "fc1", "fc2"])
    learning_rate: float = 3e-5
    lr_scheduler: str = "constant_with_warmup"
    warmup_steps: int = 5
    max_steps: int = 10
    per_device_batch_size: int = 4
    gradient_accumulation_steps: int = 1
    weight_decay: float = 0.0
    timestamp_probability: float = 0.5  # share of targets (with known times) timestamped
    freeze_encoder: bool = False
    spec_augment: bool = True
    mask_time_prob: float = 0.05
    mask_feature_prob: float = 0.0
    distill_weight: float = 0.0  # share of the loss that keeps the start model's predictions
    gradient_checkpointing: bool = False
    precision: str = "auto"
    eval_steps: int = 0
    save_steps: int = 10
    early_stopping_patience: int = 0
    logging_steps: int = 5
    predict_with_generate: bool = False  # True: validation WER/CER by decoding (slow on CPU)
    generation_max_length: int = 225
    dataloader_num_workers: int = 0
    num_gpus: int = 0  # > 1: one process per GPU under torchrun (DDP); 0 or 1: one process
    num_nodes: int = 1  # > 1: machines joined by torchrun's static rendezvous at rdzv_endpoint
    rdzv_endpoint: str | None = None  # host:port of node 0 (node rank: TUBETUNE_NODE_RANK)


@dataclass(frozen=True)
class RoundParams:
    """One sequential fine-tuning round (the course plan's #1..#5).

    ``init`` is the model it starts from: ``models/base/hf`` or an earlier round's
    ``models/rounds/<name>``. ``sources`` restricts its training videos to those sources;
    rounds without ``sources`` share the remaining training videos evenly. ``train``
    overrides keys of the global ``train`` section for this round.
    """

    init: str = "models/base/hf"
    sources: list[str] = field(default_factory=list)
    train: dict[str, Any] = field(default_factory=dict)


EVALSETS_DIR = "data/evalsets"  # held-out and fixed test sets: a folder the stages depend on
BASE_MODEL_DIR = "models/base/hf"
TRAIN_DIR = "models/train"  # each round's fine-tuned weights (+ checkpoint snapshots)
ROUNDS_DIR = "models/rounds"  # each round's guarded model: what later rounds and export take


@dataclass(frozen=True)
class EvaluateParams:
    """How baseline and fine-tuned models are scored on the test split."""

    beam_size: int | str = "auto"  # auto: greedy on CPU, 5 on GPU (like labels.beam_size)
    compute_type: str = "auto"
    device: str = "auto"
    heldout: str | None = "data/evalsets/general/general.csv"  # the bundled set


@dataclass(frozen=True)
class ExportParams:
    """The forgetting guard: which candidate model a round hands on (and export ships).

    Candidates are the round's final model, its saved checkpoints and weight-space
    interpolations ``(1 - a) * start + a * fine-tuned`` for each ``a`` in ``interpolation``
    (robust fine-tuning, Wortsman et al. 2022). The one with the best validation score whose
    error on the selection half of the held-out set stays within ``max_heldout_regression``
    (relative) of both the base model and the round's start model wins.
    """

    max_heldout_regression: float = 0.05
    heldout_confidence: float = 0.9  # the regression must stay in budget in this share of
    # paired bootstrap resamples of the held-out utterances (small sets: lucky draws fail)
    validation_confidence: float = 0.9  # worse on validation than the best only when worse
    # in this share of paired bootstrap resamples; the least fine-tuned of those not worse wins
    interpolation: list[float] = field(default_factory=lambda: [0.25, 0.5, 0.75, 1.0])
    checkpoints: bool = True


@dataclass(frozen=True)
class ScaleParams:
    """How pseudo-labelling is spread over threads, processes, GPUs or a Ray cluster.

    No stage declares this section as a DVC param: sharding never changes a label, so
    changing it must not rerun anything (tubetune/sharding.py says why that holds).
    """

    label_runner: str = "local"
    label_workers: int | str = "auto"
    ray_address: str | None = None


@dataclass(frozen=True)
class Params:
    """The whole ``params.yaml``."""

    sources: dict[str, SourceParams]
    base_model: str = "bundled:whisper-base"
    language: str = "en"
    task: str = "transcribe"
    download: DownloadParams = field(default_factory=DownloadParams)
    segment: SegmentParams = field(default_factory=SegmentParams)
    labels: LabelParams = field(default_factory=LabelParams)
    split: SplitParams = field(default_factory=SplitParams)
    train: TrainParams = field(default_factory=TrainParams)
    evaluate: EvaluateParams = field(default_factory=EvaluateParams)
    export: ExportParams = field(default_factory=ExportParams)
    scale: ScaleParams = field(default_factory=ScaleParams)
    rounds: dict[str, RoundParams] = field(default_factory=lambda: {"round1": RoundParams()})

    def source(self, name: str) -> SourceParams:
        """The source called ``name``, or a clear error listing the known names."""
        if name not in self.sources:
            known = ", ".join(sorted(self.sources)) or "none"
            raise ParamsError(f"params.yaml: sources.{name}: no such source (known: {known})")
        return self.sources[name]

    def round_train(self, name: str) -> TrainParams:
        """The ``train`` settings of round ``name`` (global ones with its overrides)."""
        if name not in self.rounds:
            raise ParamsError(f"params.yaml: rounds.{name}: no such round")
        merged = {**dataclasses.asdict(self.train), **self.rounds[name].train}
        return parse_section(TrainParams, merged, f"rounds.{name}.train")

    @property
    def final_round(self) -> str:
        """The last round: its model is the one exported."""
        return list(self.rounds)[-1]

    def download_of(self, name: str) -> DownloadParams:
        """A source's download settings: the global ``download`` with its ``options`` over it."""
        merged = {**dataclasses.asdict(self.download), **self.source(name).options}
        return parse_section(DownloadParams, merged, f"sources.{name}.options")

    def language_of(self, name: str) -> str:
        """A source's language, falling back to the global ``language``."""
        return self.source(name).language or self.language


def load_params(path: str | Path = DEFAULT_PARAMS_FILE) -> Params:
    """Read and validate ``params.yaml``; raise :class:`ParamsError` naming any bad key."""
    path = Path(path)
    try:
        raw = yaml.safe_load(path.read_text(encoding="utf-8"))
    except FileNotFoundError as exc:
        raise ParamsError(f"{path}: file not found") from exc
    except yaml.YAMLError as exc:
        raise ParamsError(f"{path}: not valid YAML: {exc}") from exc
    return parse_params(raw, str(path))


def parse_params(raw: Any, origin: str = "params.yaml") -> Params:
    """Validate an already-parsed params mapping."""
    if not isinstance(raw, dict):
        raise ParamsError(f"{origin}: expected a mapping at the top level")
    raw = dict(raw)
    sources_raw = raw.pop("sources", None)
    if not isinstance(sources_raw, dict) or not sources_raw:
        raise ParamsError(f"{origin}: sources: expected a non-empty mapping of name -> entry")
    sources = {}
    for name, entry in sources_raw.items():
        key = f"sources.{name}"
        if not isinstance(name, str) or not SOURCE_NAME_RE.match(name):
            raise ParamsError(
                f"{origin}: {key}: source names use letters, digits, '_', '-', '.' (max 64)"
            )
        if isinstance(entry, str | list):
            entry = {"url": entry}
        _check_corpus_keys(entry, key, origin)
        sources[name] = _build(SourceParams, entry, key, origin)
    rounds_raw = raw.pop("rounds", None) or {"round1": {}}
    if not isinstance(rounds_raw, dict):
        raise ParamsError(f"{origin}: rounds: expected a mapping of round name -> settings")
    rounds = {}
    for name, entry in rounds_raw.items():
        if not isinstance(name, str) or not SOURCE_NAME_RE.match(name):
            raise ParamsError(f"{origin}: rounds.{name}: names use letters, digits, '_', '-', '.'")
        rounds[name] = _build(RoundParams, entry, f"rounds.{name}", origin)
    params = _build(Params, {**raw, "sources": {}}, "", origin)
    params = dataclasses.replace(params, sources=sources, rounds=rounds)
    _check_values(params, origin)
    return params


def _check_corpus_keys(entry: Any, key: str, origin: str) -> None:
    """A source is a ``url`` or a ``corpus`` whose keys fit its ``format``."""
    if not isinstance(entry, dict):
        return  # _build names the type error
    if ("url" in entry) == ("corpus" in entry):
        raise ParamsError(f"{origin}: {key}: give either url (media to download) or corpus "
                          "(a labelled corpus), not both or neither")
    corpus = entry.get("corpus")
    if not isinstance(corpus, dict):
        return
    fmt = corpus.get("format")
    if fmt not in CORPUS_FORMATS:
        raise ParamsError(f"{origin}: {key}.corpus.format: expected one of "
                          f"{', '.join(CORPUS_FORMATS)}, got {fmt!r}")
    names = {f.name for f in dataclasses.fields(CorpusParams)}
    for option in sorted(set(corpus) & names - {"format", "path"} - CORPUS_FORMATS[fmt]):
        takers = [f for f, keys in CORPUS_FORMATS.items() if option in keys]
        raise ParamsError(f"{origin}: {key}.corpus.{option}: not a {fmt} option (only "
                          f"{', '.join(takers)})")


def _build(cls: type, data: Any, prefix: str, origin: str) -> Any:
    """Build dataclass ``cls`` from ``data``, checking keys and types recursively."""
    where = prefix or "top level"
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise ParamsError(f"{origin}: {where}: expected a mapping, got {data!r}")
    hints = typing.get_type_hints(cls)
    names = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(data) - names)
    if unknown:
        key = f"{prefix}.{unknown[0]}" if prefix else unknown[0]
        raise ParamsError(f"{origin}: {key}: unknown key (allowed: {', '.join(sorted(names))})")
    kwargs = {}
    for f in dataclasses.fields(cls):
        key = f"{prefix}.{f.name}" if prefix else f.name
        if f.name not in data:
            if f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING:
                raise ParamsError(f"{origin}: {key}: required key is missing")
            continue
        kwargs[f.name] = _coerce(hints[f.name], data[f.name], key, origin)
    return cls(**kwargs)


def _coerce(tp: Any, value: Any, key: str, origin: str) -> Any:
    """Check ``value`` against type ``tp`` (a small subset of typing) and return it."""
    if dataclasses.is_dataclass(tp):
        return _build(tp, value, key, origin)
    orig = typing.get_origin(tp)
    if orig in (typing.Union, types.UnionType):
        options = typing.get_args(tp)
        if value is None and type(None) in options:
            return None
        errors = []
        for option in options:
            if option is type(None):
                continue
            try:
                return _coerce(option, value, key, origin)
            except ParamsError as exc:
                errors.append(str(exc))
        if len(errors) == 1:
            raise ParamsError(errors[0])
        raise ParamsError(f"{origin}: {key}: bad value {value!r}")
    if orig is list:
        if not isinstance(value, list):
            raise ParamsError(f"{origin}: {key}: expected a list, got {value!r}")
        (item_tp,) = typing.get_args(tp)
        return [_coerce(item_tp, v, f"{key}[{i}]", origin) for i, v in enumerate(value)]
    if orig is dict:
        if not isinstance(value, dict):
            raise ParamsError(f"{origin}: {key}: expected a mapping, got {value!r}")
        return dict(value)
    if tp is bool:
        if not isinstance(value, bool):
            raise ParamsError(f"{origin}: {key}: expected true or false, got {value!r}")
        return value
    if tp is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ParamsError(f"{origin}: {key}: expected an integer, got {value!r}")
        return value
    if tp is float:
        if isinstance(value, str):
            try:  # YAML 1.1 reads "1e-5" as a string; accept it as a number.
                return float(value)
            except ValueError:
                pass
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise ParamsError(f"{origin}: {key}: expected a number, got {value!r}")
        return float(value)
    if tp is str:
        if not isinstance(value, str) or not value:
            raise ParamsError(f"{origin}: {key}: expected a non-empty string, got {value!r}")
        return value
    raise TypeError(f"unsupported params type {tp!r} for {key}")


def _check_values(p: Params, origin: str) -> None:
    """Range and choice checks that types alone cannot express."""

    def bad(key: str, why: str) -> ParamsError:
        return ParamsError(f"{origin}: {key}: {why}")

    for key, lang in [("language", p.language)] + [
        (f"sources.{n}.language", s.language) for n, s in p.sources.items()
    ]:
        if lang is not None and not LANGUAGE_RE.match(lang):
            raise bad(key, f"expected a language code like 'en' or 'zh-TW', got {lang!r}")
    if p.task not in ("transcribe", "translate"):
        raise bad("task", "expected 'transcribe' or 'translate'")
    _check_segment(p.segment, p.segment.method == "vad" or p.labels.source != "pseudo", bad)
    sp = p.split
    for key, frac in [("validation_fraction", sp.validation_fraction),
                      ("test_fraction", sp.test_fraction)]:
        if not 0 <= frac < 1:
            raise bad(f"split.{key}", "must be in [0, 1)")
    if sp.gold_pad_ms < 0:
        raise bad("split.gold_pad_ms", "must be >= 0")
    if sp.validation_fraction + sp.test_fraction >= 1:
        raise bad("split.test_fraction", "validation_fraction + test_fraction must be < 1")
    if p.labels.source not in ("auto", "pseudo", "subtitles"):
        raise bad("labels.source", f"expected auto, pseudo or subtitles, got {p.labels.source!r}")
    if not 0 <= p.labels.max_subtitle_cut <= 1:
        raise bad("labels.max_subtitle_cut", "must be in [0, 1]")
    lb = p.labels
    if lb.engine not in ("faster-whisper", "transformers"):
        raise bad("labels.engine", f"expected faster-whisper or transformers, got {lb.engine!r}")
    if not lb.model.strip():
        raise bad("labels.model", "expected 'base' or a model spec (bundled:, a dir, a hub id)")
    if lb.device not in ("auto", "cpu", "cuda"):
        raise bad("labels.device", f"expected auto, cpu or cuda, got {lb.device!r}")
    if lb.beam_size != "auto" and (isinstance(lb.beam_size, str) or lb.beam_size < 1):
        raise bad("labels.beam_size", f"expected auto or an integer >= 1, got {lb.beam_size!r}")
    if lb.batch_size < 1:
        raise bad("labels.batch_size", "must be >= 1")
    if not lb.temperatures or any(not 0 <= t <= 1 for t in lb.temperatures):
        raise bad("labels.temperatures", "expected a non-empty list of numbers in [0, 1]")
    for name in ("min_language_probability", "max_no_speech_prob", "min_unique_word_ratio"):
        if not 0 <= getattr(lb, name) <= 1:
            raise bad(f"labels.{name}", "must be in [0, 1]")
    for name in ("max_subtitle_disagreement", "max_corpus_disagreement"):
        if getattr(lb, name) is not None and getattr(lb, name) < 0:
            raise bad(f"labels.{name}", "must be >= 0 (a percentage)")
    for name in ("max_compression_ratio", "max_ngram_repeats", "max_char_run"):
        if getattr(lb, name) <= 0:
            raise bad(f"labels.{name}", "must be > 0")
    for name in ("min_chars_per_s", "max_chars_per_s"):
        value = getattr(lb, name)
        if value != "auto" and (isinstance(value, str) or value < 0):
            raise bad(f"labels.{name}", f"expected auto or a number >= 0, got {value!r}")
    rates = (lb.min_chars_per_s, lb.max_chars_per_s)
    if not any(isinstance(r, str) for r in rates) and not rates[0] < rates[1]:
        raise bad("labels.min_chars_per_s", "must be below labels.max_chars_per_s")
    if not 0 < lb.max_label_tokens <= MAX_TARGET_POSITIONS:
        raise bad("labels.max_label_tokens",
                  f"must be in (0, {MAX_TARGET_POSITIONS}] (Whisper's decoder limit)")
    norm = lb.normalize
    if norm.zh_convert not in (None, "s2t", "s2tw", "s2twp", "s2hk", "t2s", "tw2s", "tw2sp"):
        raise bad("labels.normalize.zh_convert",
                  f"expected null or an OpenCC config like s2twp, got {norm.zh_convert!r}")
    if norm.ko_dual_spelling not in ("phonetic", "orthographic"):
        raise bad("labels.normalize.ko_dual_spelling",
                  f"expected phonetic or orthographic, got {norm.ko_dual_spelling!r}")
    eb = p.evaluate.beam_size
    if eb != "auto" and (isinstance(eb, str) or eb < 1):
        raise bad("evaluate.beam_size", f"expected auto or an integer >= 1, got {eb!r}")
    for key, csv in (("evaluate.heldout", p.evaluate.heldout),
                     ("split.external_test", p.split.external_test)):
        inside = Path(csv or EVALSETS_DIR).as_posix().startswith(EVALSETS_DIR + "/")
        if csv is not None and (not inside or ".." in Path(csv).parts):
            raise bad(key, f"must be a CSV under {EVALSETS_DIR}/ (the folder DVC tracks for "
                      f"evaluation sets; copy the set there), got {csv!r}")
    unknown = sorted(set(sp.test_sources) - set(p.sources))
    if unknown:
        raise bad("split.test_sources", f"unknown source {unknown[0]!r}")
    if sp.test_sources and sp.external_test is not None:
        raise bad("split.test_sources", "cannot be combined with split.external_test (both "
                  "are the fixed test set; pick one)")
    ex = p.export
    if not 0 <= ex.max_heldout_regression <= 10:
        raise bad("export.max_heldout_regression", "must be in [0, 10] (0.05 = 5 % relative)")
    if not 0.5 <= ex.heldout_confidence < 1:
        raise bad("export.heldout_confidence", "must be in [0.5, 1)")
    if not 0 <= ex.validation_confidence < 1:
        raise bad("export.validation_confidence", "must be in [0, 1) (0: the best validation "
                  "score wins outright)")
    if not ex.interpolation or any(not 0 < a <= 1 for a in ex.interpolation):
        raise bad("export.interpolation", "expected a non-empty list of numbers in (0, 1]")
    if p.scale.label_runner not in ("local", "ray"):
        raise bad("scale.label_runner", f"expected local or ray, got {p.scale.label_runner!r}")
    workers = p.scale.label_workers
    if workers != "auto" and (isinstance(workers, str) or workers < 1):
        raise bad("scale.label_workers", f"expected auto or an integer >= 1, got {workers!r}")
    _check_train(p.train, "train", bad)
    earlier: list[str] = []
    for name, rnd in p.rounds.items():
        allowed = [BASE_MODEL_DIR] + [f"{ROUNDS_DIR}/{e}" for e in earlier]
        if rnd.init not in allowed:
            raise bad(f"rounds.{name}.init", f"expected one of {', '.join(allowed)}")
        unknown = sorted(set(rnd.sources) - set(p.sources))
        if unknown:
            raise bad(f"rounds.{name}.sources", f"unknown source {unknown[0]!r}")
        tested = sorted(set(rnd.sources) & set(sp.test_sources))
        if tested:
            raise bad(f"rounds.{name}.sources", f"{tested[0]!r} is in split.test_sources: "
                      "a test source never trains")
        if rnd.train:
            _check_train(p.round_train(name), f"rounds.{name}.train", bad)
        earlier.append(name)
    _check_download(p.download, "download", bad)
    for name, src in p.sources.items():
        if src.corpus is not None:
            _check_corpus(src.corpus, f"sources.{name}.corpus", bad)
        _check_urls(src, f"sources.{name}", bad)
        _check_download(p.download_of(name), f"sources.{name}.options", bad)


def _check_corpus(corpus: CorpusParams, section: str,
                  bad: Callable[[str, str], ParamsError]) -> None:
    """Values of a source's ``corpus`` (its keys were checked against its format already)."""
    if corpus.encoding != "auto":
        try:
            codecs.lookup(corpus.encoding)
        except LookupError:
            raise bad(f"{section}.encoding",
                      f"expected auto or a text encoding such as cp949, got {corpus.encoding!r}"
                      ) from None
    if corpus.sample_rate <= 0:
        raise bad(f"{section}.sample_rate", "must be > 0 (Hz of headerless .pcm audio)")


def parse_section(cls: type, data: Any, key: str, origin: str = "params.yaml") -> Any:
    """Validate one section (e.g. a source's download ``options``) against ``cls``."""
    return _build(cls, data, key, origin)


def _check_train(tr: TrainParams, section: str, bad: Callable[[str, str], ParamsError]) -> None:
    """Range checks of a train section (global ``train`` or a round's merged settings)."""
    positive = ("learning_rate", "max_steps", "per_device_batch_size",
                "gradient_accumulation_steps", "logging_steps", "generation_max_length")
    for name in positive:
        if getattr(tr, name) <= 0:
            raise bad(f"{section}.{name}", "must be > 0")
    if tr.generation_max_length > MAX_TARGET_POSITIONS:
        raise bad(f"{section}.generation_max_length",
                  f"must be <= {MAX_TARGET_POSITIONS} (Whisper's decoder limit)")
    for name in ("warmup_steps", "eval_steps", "save_steps", "dataloader_num_workers",
                 "early_stopping_patience"):
        if getattr(tr, name) < 0:
            raise bad(f"{section}.{name}", "must be >= 0")
    if tr.eval_steps and tr.save_steps % tr.eval_steps:
        raise bad(f"{section}.save_steps", "must be a multiple of eval_steps (best-model keeping)")
    if tr.early_stopping_patience and not tr.eval_steps:
        raise bad(f"{section}.early_stopping_patience", "needs eval_steps > 0")
    if tr.method not in ("full", "lora"):
        raise bad(f"{section}.method", f"expected full or lora, got {tr.method!r}")
    if tr.lora_rank < 1:
        raise bad(f"{section}.lora_rank", "must be >= 1")
    if tr.lora_alpha <= 0:
        raise bad(f"{section}.lora_alpha", "must be > 0")
    if not 0 <= tr.lora_dropout < 1:
        raise bad(f"{section}.lora_dropout", "must be in [0, 1)")
    if not tr.lora_target_modules:
        raise bad(f"{section}.lora_target_modules", "expected a non-empty list of module names")
    if tr.precision not in ("auto", "fp32", "fp16", "bf16"):
        raise bad(f"{section}.precision", "expected auto, fp32, fp16 or bf16")
    for name in ("mask_time_prob", "mask_feature_prob", "timestamp_probability"):
        if not 0 <= getattr(tr, name) <= 1:
            raise bad(f"{section}.{name}", "must be in [0, 1]")
    if not 0 <= tr.distill_weight < 1:
        raise bad(f"{section}.distill_weight", "must be in [0, 1) (0: no distillation)")
    if tr.num_gpus < 0:
        raise bad(f"{section}.num_gpus", "must be >= 0 (0 or 1: one process, no launcher)")
    if tr.num_nodes < 1:
        raise bad(f"{section}.num_nodes", "must be >= 1")
    if tr.num_nodes > 1 and tr.rdzv_endpoint is None:
        raise bad(f"{section}.rdzv_endpoint", "needed when num_nodes > 1: host:port of node 0")
    endpoint = ENDPOINT_RE.match(tr.rdzv_endpoint or "")
    if tr.rdzv_endpoint is not None and not (endpoint and 0 < int(endpoint["port"]) < 65536):
        raise bad(f"{section}.rdzv_endpoint",
                  f"expected host:port (port 1-65535), got {tr.rdzv_endpoint!r}")
