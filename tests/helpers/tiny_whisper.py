"""A tiny randomly initialised Whisper with the real tokenizer: fast, exercises real code."""

from __future__ import annotations

import json
from pathlib import Path

import torch
from transformers import (
    WhisperConfig,
    WhisperFeatureExtractor,
    WhisperForConditionalGeneration,
    WhisperProcessor,
)

from tubetune import conversion, models


def make_tiny_whisper(out_dir: Path, seed: int = 0, positions: int = 448,
                      mute: bool = False) -> Path:
    """Save a 2+2-layer, d_model 64 Whisper (Hugging Face layout) into ``out_dir``;
    ``positions``: decoder length (fewer: shorter runaway decodes); ``mute``: the decoder
    says end-of-text at once, whatever it hears (empty transcripts in milliseconds, where a
    random one decodes 448 tokens at every fallback temperature: for pipelines that only
    need to run, CTranslate2 included, which needs all 448 positions)."""
    bundle = models.BUNDLED_MODELS["bundled:whisper-base"]
    data = models._package_dir(bundle.data[0], bundle.distributions) / bundle.data[1]
    raw = json.loads((data / "tokenizer.json").read_text(encoding="utf-8"))
    tokens = set(raw["model"]["vocab"]) | {t["content"] for t in raw["added_tokens"]}
    tokenizer = conversion.build_tokenizer(data / "tokenizer.json", len(tokens) + 1501, positions)
    ct2_config = json.loads((data / "config.json").read_text(encoding="utf-8"))
    config = WhisperConfig(
        vocab_size=len(tokenizer), d_model=64, encoder_layers=2, decoder_layers=2,
        encoder_attention_heads=4, decoder_attention_heads=4, encoder_ffn_dim=128,
        decoder_ffn_dim=128, num_mel_bins=80, max_source_positions=1500,
        max_target_positions=positions, bos_token_id=50257, eos_token_id=50257, pad_token_id=50257,
        decoder_start_token_id=50258,
    )
    torch.manual_seed(seed)
    model = WhisperForConditionalGeneration(config)
    model.generation_config = conversion.whisper_generation_config(tokenizer, ct2_config, positions)
    if mute:  # a constant final hidden state that points at <|endoftext|>'s embedding
        with torch.no_grad():
            direction = torch.zeros(config.d_model)
            direction[0] = 10.0
            model.model.decoder.embed_tokens.weight[config.eos_token_id] = direction
            model.model.decoder.layer_norm.weight.zero_()
            model.model.decoder.layer_norm.bias.copy_(direction)
    processor = WhisperProcessor(WhisperFeatureExtractor(feature_size=80), tokenizer)
    model.save_pretrained(out_dir)
    processor.save_pretrained(out_dir)
    return out_dir
