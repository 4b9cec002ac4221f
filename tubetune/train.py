"""Fine-tuning with ``Seq2SeqTrainer``: the course seed's ``Trainer`` class, done right.

:class:`FineTuner` loads the model and processor once and keeps them in memory (a server
can hold one), forces language and task through the tokenizer prefix and the generation
config, computes features on the fly, and resumes from the newest checkpoint when a run
was interrupted.
"""

from __future__ import annotations

import hashlib
import json
import logging
import shutil
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from transformers import (
    EarlyStoppingCallback,
    Seq2SeqTrainer,
    Seq2SeqTrainingArguments,
    WhisperForConditionalGeneration,
    WhisperProcessor,
)
from transformers.trainer_utils import get_last_checkpoint

from tubetune.dataset import WhisperCollator, load_manifest
from tubetune.fsutil import atomic_path, atomic_write_text, sha256_file
from tubetune.metrics import error_rates
from tubetune.params import TrainParams
from tubetune.text import uses_characters, whisper_language

log = logging.getLogger(__name__)


def precision_flags(precision: str) -> dict[str, bool]:
    """``auto``: bf16 on GPUs that support it, else fp16 on CUDA, fp32 on CPU."""
    cuda = torch.cuda.is_available()
    if precision == "auto" and not cuda:
        precision = "fp32"
    elif precision == "auto":
        precision = "bf16" if torch.cuda.is_bf16_supported() else "fp16"
    if precision in ("fp16", "bf16") and not cuda:
        raise ValueError(f"train.precision: {precision} needs a CUDA GPU; use auto or fp32")
    if cuda:
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True
    return {"fp16": precision == "fp16", "bf16": precision == "bf16"}


@dataclass
class FineTuner:
    """Holds a Whisper model + processor and fine-tunes it on manifest CSVs."""

    model_dir: Path
    language: str
    task: str
    params: TrainParams

    def __post_init__(self) -> None:
        self.processor = WhisperProcessor.from_pretrained(self.model_dir)
        self.model = WhisperForConditionalGeneration.from_pretrained(self.model_dir)
        self.enforce_language(self.language)
        if self.params.freeze_encoder:
            self.model.freeze_encoder()
        # SpecAugment (Whisper's built-in time/feature masking, applied in training only).
        config = self.model.config
        config.apply_spec_augment = self.params.spec_augment
        config.mask_time_prob = self.params.mask_time_prob
        config.mask_feature_prob = self.params.mask_feature_prob
        self.metric = "cer" if uses_characters(self.language) else "wer"

    def enforce_language(self, language: str) -> None:
        """Force language and task at generation time (no language detection drift)."""
        gen = self.model.generation_config
        gen.language = whisper_language(language)
        gen.task = self.task
        gen.forced_decoder_ids = None
        self.model.config.forced_decoder_ids = None
        self.processor.tokenizer.set_prefix_tokens(
            language=whisper_language(language), task=self.task, predict_timestamps=False
        )

    def compute_metrics(self, pred: Any) -> dict[str, float]:
        """WER and CER of generated text against the labels."""
        tokenizer = self.processor.tokenizer
        label_ids = np.where(pred.label_ids == -100, tokenizer.pad_token_id, pred.label_ids)
        pred_ids = np.where(pred.predictions == -100, tokenizer.pad_token_id, pred.predictions)
        hyps = tokenizer.batch_decode(pred_ids, skip_special_tokens=True)
        refs = tokenizer.batch_decode(label_ids, skip_special_tokens=True)
        rates = error_rates(refs, hyps, self.language)
        return {"wer": rates.wer, "cer": rates.cer}

    def build_trainer(
        self,
        train_csv: Path,
        validation_csv: Path | None,
        checkpoints_dir: Path,
        callbacks: list[Any] | None = None,
    ) -> Seq2SeqTrainer:
        """A ready Seq2SeqTrainer over the given manifests."""
        p = self.params
        train_ds = load_manifest(train_csv)
        eval_ds = load_manifest(validation_csv) if validation_csv else None
        if eval_ds is not None and len(eval_ds) == 0:
            eval_ds = None
        # eval_steps 0: one evaluation, at the end; then there is no "best" checkpoint to keep.
        keep_best = eval_ds is not None and p.eval_steps > 0
        args = Seq2SeqTrainingArguments(
            output_dir=str(checkpoints_dir),
            per_device_train_batch_size=p.per_device_batch_size,
            per_device_eval_batch_size=p.per_device_batch_size,
            gradient_accumulation_steps=p.gradient_accumulation_steps,
            learning_rate=p.learning_rate,
            lr_scheduler_type=p.lr_scheduler,
            warmup_steps=p.warmup_steps,
            max_steps=p.max_steps,
            weight_decay=p.weight_decay,
            gradient_checkpointing=p.gradient_checkpointing,
            eval_strategy="steps" if eval_ds is not None else "no",
            eval_steps=p.eval_steps or p.max_steps,
            save_strategy="steps",
            save_steps=p.save_steps or p.max_steps,
            save_total_limit=2,
            logging_steps=p.logging_steps,
            predict_with_generate=True,
            generation_max_length=p.generation_max_length,
            metric_for_best_model=self.metric if keep_best else None,
            greater_is_better=False,
            load_best_model_at_end=keep_best,
            remove_unused_columns=False,
            label_names=["labels"],
            dataloader_num_workers=p.dataloader_num_workers,
            seed=p.seed,
            data_seed=p.seed,
            report_to=[],
            disable_tqdm=False,
            **precision_flags(p.precision),
        )
        callbacks = list(callbacks or [])
        if keep_best and p.early_stopping_patience:
            callbacks.append(EarlyStoppingCallback(p.early_stopping_patience))
        collator = WhisperCollator(self.processor, self.task, self.language)
        return Seq2SeqTrainer(
            model=self.model,
            args=args,
            train_dataset=train_ds,
            eval_dataset=eval_ds,
            data_collator=collator,
            processing_class=self.processor,
            compute_metrics=self.compute_metrics if eval_ds is not None else None,
            callbacks=callbacks,
        )

    def run(
        self,
        train_csv: Path,
        validation_csv: Path | None,
        output_dir: Path,
        checkpoints_dir: Path,
        callbacks: list[Any] | None = None,
    ) -> dict[str, Any]:
        """Train (resuming from the last checkpoint if any) and save the final model."""
        trainer = self.build_trainer(train_csv, validation_csv, checkpoints_dir, callbacks)
        last = get_last_checkpoint(str(checkpoints_dir)) if checkpoints_dir.is_dir() else None
        if last:
            log.info("resuming from %s", last)
        result = trainer.train(resume_from_checkpoint=last)
        self.save(output_dir)
        summary = {
            "train_loss": round(float(result.training_loss), 4),
            "steps": int(result.global_step),
            "train_samples_per_second": round(float(result.metrics["train_samples_per_second"]), 3),
            "train_runtime_s": round(float(result.metrics["train_runtime"]), 1),
        }
        evals = [e for e in trainer.state.log_history if f"eval_{self.metric}" in e]
        if evals:
            summary[f"final_eval_{self.metric}"] = round(float(evals[-1][f"eval_{self.metric}"]), 2)
        if trainer.state.best_metric is not None:
            summary[f"best_eval_{self.metric}"] = round(float(trainer.state.best_metric), 2)
        return summary

    def save(self, output_dir: Path) -> None:
        """Write model, processor and generation config atomically."""
        with atomic_path(output_dir) as tmp:
            self.model.save_pretrained(tmp)
            self.processor.save_pretrained(tmp)
            extractor = tmp / "preprocessor_config.json"
            if not extractor.exists():  # faster-whisper reads this file name
                self.processor.feature_extractor.to_json_file(extractor)


def run_fingerprint(
    params: TrainParams, language: str, task: str, data: list[Path], model_dir: Path
) -> str:
    """Hash of everything that makes a training run what it is (settings, data, base model)."""
    digest = hashlib.sha256()
    digest.update(json.dumps([asdict(params), language, task], sort_keys=True).encode())
    model_files = sorted(model_dir.glob("*.json")) + sorted(model_dir.glob("*.safetensors"))
    for path in [*data, *model_files]:
        digest.update(path.name.encode())
        digest.update(sha256_file(path).encode() if path.is_file() else b"-")
    return digest.hexdigest()


def reusable_checkpoints(checkpoints_dir: Path, fingerprint: str) -> bool:
    """True when ``checkpoints_dir`` holds checkpoints of this very run (resume them).

    Checkpoints of any other run (changed params, data or base model) are deleted, so a
    new run never continues from an unrelated one.
    """
    stamp = checkpoints_dir / "run.json"
    same = stamp.is_file() and json.loads(stamp.read_text()).get("fingerprint") == fingerprint
    if not same and checkpoints_dir.exists():
        shutil.rmtree(checkpoints_dir)
    checkpoints_dir.mkdir(parents=True, exist_ok=True)
    atomic_write_text(stamp, json.dumps({"fingerprint": fingerprint}) + "\n")
    return same and get_last_checkpoint(str(checkpoints_dir)) is not None


def train_stage(
    train_csv: Path,
    validation_csv: Path,
    base_model_dir: Path,
    output_dir: Path,
    checkpoints_dir: Path,
    live_dir: Path,
    metrics_path: Path,
    language: str,
    task: str,
    params: TrainParams,
    callbacks: list[Any] | None = None,
) -> dict[str, Any]:
    """The ``train`` stage: fine-tune, log curves with dvclive, write the summary metric."""
    from dvclive import Live
    from transformers.integrations import DVCLiveCallback

    torch.manual_seed(params.seed)
    fingerprint = run_fingerprint(params, language, task, [train_csv, validation_csv],
                                  base_model_dir)
    resuming = reusable_checkpoints(checkpoints_dir, fingerprint)
    if live_dir.exists() and not resuming:
        shutil.rmtree(live_dir)
    live = Live(str(live_dir), dvcyaml=False, save_dvc_exp=False, resume=bool(resuming))
    tuner = FineTuner(base_model_dir, language, task, params)
    summary = tuner.run(
        train_csv, validation_csv, output_dir, checkpoints_dir,
        [DVCLiveCallback(live=live), *(callbacks or [])],
    )
    live.end()
    # Checkpoints exist to resume an interrupted run; a finished run does not need them.
    # The folder is deliberately not a DVC output: DVC cannot restore uncached outputs, so
    # a leftover stamp from an experiment would make the stage look changed.
    shutil.rmtree(checkpoints_dir)
    atomic_write_text(metrics_path, json.dumps(summary, indent=2) + "\n")
    log.info("train: %s", summary)
    return summary
