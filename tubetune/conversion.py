"""Conversion between the CTranslate2 and Hugging Face layouts of a Whisper model, offline.

CTranslate2 -> transformers reads ``model.bin`` directly (its binary layout: version, spec
name, revision, variables, aliases), maps every variable onto
``WhisperForConditionalGeneration``'s names and builds the tokenizer and generation config
from the CTranslate2 side files; transformers -> CTranslate2 is CTranslate2's own converter.
"""

from __future__ import annotations

import json
import logging
import re
import struct
import time
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from tubetune.fsutil import atomic_path
from tubetune.models import (
    PREPROCESSOR_CONFIG,
    ModelError,
    directory_layout,
    read_json,
    save_hf,
)

if TYPE_CHECKING:  # torch and transformers take seconds to import: only where used
    import torch
    from transformers import (
        GenerationConfig,
        WhisperConfig,
        WhisperForConditionalGeneration,
        WhisperTokenizer,
    )

log = logging.getLogger(__name__)

_TIMESTAMP = re.compile(r"^<\|\d+\.\d\d\|>$")
_EOT = "<|endoftext|>"


# ----------------------------------------------------------------------------- HF -> CT2


def convert_hf_to_ct2(hf_dir: Path, ct2_dir: Path, quantization: str = "float16") -> None:
    """Convert an HF Whisper directory to CTranslate2 (for faster-whisper), atomically.

    float16 by default, like the bundled model and faster-whisper's own conversions: the
    engine quantizes to int8 at load on CPU, exactly as for the bundle, and a GPU gets the
    fp16 weights. Quantizing to int8 here instead is not the same model: the untouched base
    converted that way changed 4 of 12 test transcripts (17.5 -> 22.9 % WER).
    """
    import ctranslate2
    from ctranslate2.specs.model_spec import ACCEPTED_MODEL_TYPES
    from transformers import WhisperFeatureExtractor

    hf_dir, ct2_dir = Path(hf_dir), Path(ct2_dir)
    if quantization not in ACCEPTED_MODEL_TYPES:
        raise ModelError(
            f"unknown quantization {quantization!r}; use one of {', '.join(ACCEPTED_MODEL_TYPES)}"
        )
    if directory_layout(hf_dir) != "hf":
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
    if directory_layout(ct2_dir) != "ct2":
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
    tokenizer = build_tokenizer(
        ct2_dir / "tokenizer.json", vocab_size, dims["max_target_positions"]
    )
    check_vocabulary(tokenizer, ct2_dir)
    processor = WhisperProcessor(feature_extractor=feature_extractor, tokenizer=tokenizer)

    ct2_config = read_json(ct2_dir / "config.json")
    generation_config = whisper_generation_config(tokenizer, ct2_config,
                                                  dims["max_target_positions"])
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
        save_hf(model, processor, tmp)
    log.info("converted %s -> %s in %.1f s", ct2_dir, hf_dir, time.monotonic() - start)


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


def build_tokenizer(path: Path, vocab_size: int, model_max_length: int) -> WhisperTokenizer:
    """A transformers ``WhisperTokenizer`` from a (possibly CT2-style) ``tokenizer.json``.

    CT2 Whisper exports ship a tokenizer.json without the ``<|0.00|>``…``<|30.00|>``
    timestamp tokens and without named special tokens; both are added here so ids match the
    model's vocabulary and ``generate`` can find eos/pad. The merges are proven canonical
    (the known missing one restored), so the tokenizer encodes text as Whisper does.
    """
    from tokenizers import AddedToken
    from transformers import WhisperTokenizer

    from tubetune.tokenizer import canonical_merges  # it imports ModelError from here

    data = read_json(path)
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


def check_vocabulary(tokenizer: WhisperTokenizer, ct2_dir: Path) -> None:
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


def whisper_generation_config(
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
