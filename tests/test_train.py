"""Training on a tiny random Whisper: batches are right, and a killed run resumes."""

from __future__ import annotations

import json
import logging
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import soundfile as sf
import torch
from transformers import WhisperForConditionalGeneration, WhisperProcessor

from helpers.tiny_whisper import make_tiny_whisper
from tubetune.dataset import WhisperCollator, load_manifest
from tubetune.params import TrainParams
from tubetune.train import FineTuner, precision_flags, train_stage

TEXTS = ["the cat sat on the mat", "a bird sings at dawn", "rain falls on the roof",
         "open the door please", "the river runs fast", "bread is in the oven"]


@pytest.fixture(scope="module")
def workdir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("train")
    make_tiny_whisper(root / "model")
    rng = np.random.default_rng(0)
    rows = []
    for i, text in enumerate(TEXTS):
        path = root / f"clip{i}.wav"
        audio = (0.3 * np.sin(np.arange(16000 + 4000 * i) * (0.05 + 0.01 * i))
                 + 0.01 * rng.standard_normal(16000 + 4000 * i))
        sf.write(path, (audio * 32767).astype(np.int16), 16000, subtype="PCM_16")
        rows.append({"path": str(path), "text": text, "language": "en"})
    pd.DataFrame(rows).to_csv(root / "train.csv", index=False)
    pd.DataFrame(rows[:2]).to_csv(root / "validation.csv", index=False)
    return root


def test_collator_builds_scaled_features_and_prefixed_labels(workdir: Path) -> None:
    processor = WhisperProcessor.from_pretrained(workdir / "model")
    rows = list(load_manifest(workdir / "train.csv"))[:2]
    batch = WhisperCollator(processor, "transcribe", "en")(rows)
    assert tuple(batch["input_features"].shape) == (2, 80, 3000)
    labels = batch["labels"]
    tok = processor.tokenizer
    # <|startoftranscript|> is added by the model when shifting; labels start at the language.
    assert labels[0, 0].item() == tok.convert_tokens_to_ids("<|en|>")
    assert labels[0, 1].item() == tok.convert_tokens_to_ids("<|transcribe|>")
    assert labels[0, 2].item() == tok.convert_tokens_to_ids("<|notimestamps|>")
    decoded = tok.decode([t for t in labels[1].tolist() if t != -100], skip_special_tokens=True)
    assert decoded.strip() == TEXTS[1]
    assert (labels == -100).any()  # shorter text padded with the ignore index


def test_spec_augment_and_frozen_encoder_follow_params(workdir: Path) -> None:
    params = TrainParams(spec_augment=True, mask_time_prob=0.1, mask_feature_prob=0.02,
                         freeze_encoder=True)
    tuner = FineTuner(workdir / "model", "en", "transcribe", params)
    config = tuner.model.config
    assert (config.apply_spec_augment, config.mask_time_prob, config.mask_feature_prob) == (
        True, 0.1, 0.02)
    assert not any(p.requires_grad for p in tuner.model.model.encoder.parameters())
    assert FineTuner(workdir / "model", "en", "transcribe", TrainParams(
        spec_augment=False)).model.config.apply_spec_augment is False


def test_cpu_uses_fp32_and_refuses_fp16() -> None:
    assert precision_flags("auto") == {"fp16": False, "bf16": False}
    with pytest.raises(ValueError, match="needs a CUDA GPU"):
        precision_flags("fp16")


KILLER = textwrap.dedent("""
    import os, signal, sys
    from pathlib import Path
    from transformers import TrainerCallback
    from tubetune.params import TrainParams
    from tubetune.train import train_stage

    class KillAfterCheckpoint(TrainerCallback):
        def on_save(self, args, state, control, **kwargs):
            if state.global_step >= 4:
                os.kill(os.getpid(), signal.SIGKILL)  # as abrupt as a power cut

    root = Path(sys.argv[1])
    params = TrainParams(**{PARAMS})
    train_stage(root / "train.csv", root / "validation.csv", root / "model", root / "out",
                root / "ckpt", root / "live", root / "train.json", "en", "transcribe", params,
                callbacks=[KillAfterCheckpoint()])
""")


def test_killed_training_resumes_from_last_checkpoint(
    workdir: Path, caplog: pytest.LogCaptureFixture
) -> None:
    settings = {"max_steps": 6, "save_steps": 2, "per_device_batch_size": 2, "warmup_steps": 0,
                "logging_steps": 1, "freeze_encoder": False, "learning_rate": 1e-3,
                "generation_max_length": 8, "predict_with_generate": True}
    script = KILLER.replace("{PARAMS}", repr(settings))
    proc = subprocess.run([sys.executable, "-c", script, str(workdir)], capture_output=True,
                          text=True, timeout=300)
    assert proc.returncode == -9, proc.stderr[-2000:]
    assert (workdir / "ckpt" / "checkpoint-4").is_dir()
    assert not (workdir / "out").exists()  # nothing half-written in place of the model
    shutil.copytree(workdir / "ckpt", workdir / "ckpt-killed")

    with caplog.at_level(logging.INFO, logger="tubetune.train"):
        summary = train_stage(workdir / "train.csv", workdir / "validation.csv",
                              workdir / "model", workdir / "out", workdir / "ckpt",
                              workdir / "live", workdir / "train.json", "en", "transcribe",
                              TrainParams(**settings))
    assert any("resuming from" in r.message and "checkpoint-4" in r.message
               for r in caplog.records)
    assert summary["steps"] == 6 and "final_eval_wer" in summary
    assert (workdir / "out" / "model.safetensors").is_file()
    assert json.loads((workdir / "train.json").read_text())["steps"] == 6
    assert not (workdir / "ckpt").exists()  # cleaned after success

    # Different settings must not continue from the killed run's checkpoints.
    shutil.copytree(workdir / "ckpt-killed", workdir / "ckpt")
    caplog.clear()
    settings["learning_rate"] = 2e-3
    settings["max_steps"] = 2
    settings["predict_with_generate"] = False
    with caplog.at_level(logging.INFO, logger="tubetune.train"):
        summary = train_stage(workdir / "train.csv", workdir / "validation.csv",
                              workdir / "model", workdir / "out", workdir / "ckpt",
                              workdir / "live", workdir / "train.json", "en", "transcribe",
                              TrainParams(**settings))
    assert summary["steps"] == 2
    assert not any("resuming from" in r.message for r in caplog.records)
    assert "final_eval_loss" in summary and "final_eval_wer" not in summary  # no decoding


def test_lora_trains_adapters_and_saves_plain_merged_weights(workdir: Path) -> None:
    from safetensors import safe_open

    params = TrainParams(method="lora", lora_rank=4, lora_alpha=8, max_steps=4, save_steps=2,
                         per_device_batch_size=2, warmup_steps=0, learning_rate=1e-2,
                         logging_steps=1, predict_with_generate=False)
    tuner = FineTuner(workdir / "model", "en", "transcribe", params)
    trainable = [n for n, p in tuner.model.named_parameters() if p.requires_grad]
    assert trainable and all("lora_" in n for n in trainable)
    out = workdir / "lora-out"
    summary = train_stage(workdir / "train.csv", workdir / "validation.csv", workdir / "model",
                          out, workdir / "lora-ckpt", workdir / "lora-live",
                          workdir / "lora.json", "en", "transcribe", params)
    assert summary["steps"] == 4
    with safe_open(out / "model.safetensors", "pt") as weights:
        names = set(weights.keys())
    with safe_open(workdir / "model" / "model.safetensors", "pt") as start:
        assert names == set(start.keys())  # plain Whisper: no adapter or base_layer names
    merged = WhisperForConditionalGeneration.from_pretrained(out)
    original = WhisperForConditionalGeneration.from_pretrained(workdir / "model")
    q = "model.decoder.layers.0.self_attn.q_proj.weight"
    assert not torch.equal(merged.state_dict()[q], original.state_dict()[q])  # adapters merged
    fc = "model.encoder.conv1.weight"  # not a target module: unchanged
    assert torch.equal(merged.state_dict()[fc], original.state_dict()[fc])
    # The earlier checkpoint (step 2) is kept as merged plain weights for the guard.
    with safe_open(out / "snapshots" / "step-2" / "model.safetensors", "pt") as snap:
        assert set(snap.keys()) == names


def test_lora_with_frozen_encoder_adapts_the_decoder_only(workdir: Path) -> None:
    params = TrainParams(method="lora", lora_rank=2, freeze_encoder=True)
    tuner = FineTuner(workdir / "model", "en", "transcribe", params)
    trainable = [n for n, p in tuner.model.named_parameters() if p.requires_grad]
    assert trainable and all(".decoder." in n and "lora_" in n for n in trainable)


def test_same_data_and_params_train_the_same_weights(workdir: Path) -> None:
    """Two runs of one experiment give the same model, byte for byte, so experiments compare
    (without torch's deterministic algorithms whisper-base's CPU gradients vary run to run)."""
    params = TrainParams(max_steps=2, save_steps=2, per_device_batch_size=2, warmup_steps=0,
                         learning_rate=1e-3, logging_steps=1, timestamp_probability=0.5,
                         predict_with_generate=False)
    tuner = FineTuner(workdir / "model", "en", "transcribe", params)
    assert tuner.build_trainer(workdir / "train.csv", None, workdir / "det-args").args \
        .full_determinism
    digests = []
    for run in ("det-a", "det-b"):
        train_stage(workdir / "train.csv", workdir / "validation.csv", workdir / "model",
                    workdir / run, workdir / f"{run}-ckpt", workdir / f"{run}-live",
                    workdir / f"{run}.json", "en", "transcribe", params)
        digests.append((workdir / run / "model.safetensors").read_bytes())
    assert digests[0] == digests[1]


def test_distillation_loss_is_the_scaled_cross_entropy_at_the_start(workdir: Path) -> None:
    """Before any step the model is its reference: the KL term is zero, the CE is scaled."""
    plain = FineTuner(workdir / "model", "en", "transcribe", TrainParams())
    tuner = FineTuner(workdir / "model", "en", "transcribe", TrainParams(distill_weight=0.25))
    assert plain.reference is None and tuner.reference is not None
    trainer = tuner.build_trainer(workdir / "train.csv", None, workdir / "kd-ckpt")
    batch = trainer.data_collator(list(load_manifest(workdir / "train.csv"))[:2])
    tuner.model.train()
    with torch.no_grad():
        ce = tuner.model(**batch).loss
        loss = trainer.compute_loss(tuner.model, batch)
    assert loss.item() == pytest.approx(0.75 * ce.item(), rel=1e-5)


def test_distillation_keeps_the_model_nearer_its_start(workdir: Path) -> None:
    """Same data and steps: a heavy distillation weight moves the predictions less."""
    settings = {"max_steps": 4, "per_device_batch_size": 2, "warmup_steps": 0,
                "learning_rate": 3e-3, "logging_steps": 1, "save_steps": 4}
    start = WhisperForConditionalGeneration.from_pretrained(workdir / "model").eval()
    processor = WhisperProcessor.from_pretrained(workdir / "model")
    batch = WhisperCollator(processor, "transcribe", "en")(
        list(load_manifest(workdir / "train.csv"))[:3])
    with torch.no_grad():
        before = torch.log_softmax(start(**batch).logits, -1)
    drift = {}
    for weight in (0.0, 0.9):
        out = workdir / f"kd-{weight}"
        train_stage(workdir / "train.csv", workdir / "validation.csv", workdir / "model", out,
                    workdir / f"kd-ckpt-{weight}", workdir / f"kd-live-{weight}",
                    workdir / f"kd-{weight}.json", "en", "transcribe",
                    TrainParams(distill_weight=weight, **settings))
        tuned = WhisperForConditionalGeneration.from_pretrained(out).eval()
        with torch.no_grad():
            after = torch.log_softmax(tuned(**batch).logits, -1)
        drift[weight] = (before.exp() * (before - after)).sum(-1).mean().item()
    assert drift[0.9] < 0.75 * drift[0.0]  # Adam steps are scale-free: the KL acts as it grows
