"""Fine-tuning with ``Seq2SeqTrainer``: the course seed's ``Trainer`` class, done right.

:class:`FineTuner` loads the model and processor once and keeps them in memory (a server
can hold one), forces language and task through the tokenizer prefix and the generation
config, computes features on the fly, and resumes from the newest checkpoint when a run
was interrupted.

More than one GPU: :func:`relaunch` re-executes the stage under torchrun (one process per
GPU, DDP) when ``train.num_gpus`` > 1 or ``train.num_nodes`` > 1, unless a launcher
(torchrun, ``accelerate launch``) already started it. Every process trains; only global
rank 0 writes (checkpoints: Seq2SeqTrainer; model, metrics, dvclive: :func:`train_stage`).
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import re
import shlex
import shutil
import sys
from collections.abc import Mapping, Sequence
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
from tubetune.params import ParamsError, TrainParams
from tubetune.text import uses_characters, whisper_language

log = logging.getLogger(__name__)

LAUNCHER_ENV = ("WORLD_SIZE", "LOCAL_RANK")  # set by torchrun and `accelerate launch`
NODE_RANK_ENV = ("TUBETUNE_NODE_RANK", "NODE_RANK")


def precision_flags(precision: str) -> dict[str, bool]:
    """``auto``: bf16 on GPUs with native bf16, else fp16 on CUDA, fp32 on CPU.

    Also lets matmuls and convolutions use TF32 on Ampere or newer (compute capability 8+).
    """
    cuda = torch.cuda.is_available()
    if precision == "auto" and not cuda:
        precision = "fp32"
    elif precision == "auto":
        # Emulated bf16 (e.g. on a T4) would be slower than fp16: ask for native support.
        precision = "bf16" if torch.cuda.is_bf16_supported(including_emulation=False) else "fp16"
    if precision in ("fp16", "bf16") and not cuda:
        raise ParamsError(f"train.precision: {precision} needs a CUDA GPU; use auto or fp32")
    if cuda and torch.cuda.get_device_capability()[0] >= 8:
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True
    return {"fp16": precision == "fp16", "bf16": precision == "bf16"}


def under_launcher(env: Mapping[str, str] = os.environ) -> bool:
    """True when torchrun or ``accelerate launch`` started this process (it sets the ranks)."""
    return any(name in env for name in LAUNCHER_ENV)


def node_rank(env: Mapping[str, str] = os.environ) -> int:
    """This machine's rank in a multi-node run: ``TUBETUNE_NODE_RANK`` (or ``NODE_RANK``)."""
    for name in NODE_RANK_ENV:
        if env.get(name, "").strip():
            return int(env[name])
    return 0


def launcher_command(
    num_gpus: int,
    script: str,
    args: Sequence[str],
    nnodes: int = 1,
    node_rank: int = 0,
    rdzv_endpoint: str | None = None,
    python: str = sys.executable,
) -> list[str]:
    """The command that runs ``script args`` on ``num_gpus`` GPUs of each of ``nnodes`` nodes.

    One GPU on one node: plain ``python script args``. Otherwise torchrun
    (``python -m torch.distributed.run``) with one process per GPU: ``--standalone`` on one
    node (a free local port), or a static rendezvous at ``rdzv_endpoint`` (``host:port`` of
    node 0, which then holds global rank 0) across nodes.
    """
    if num_gpus <= 1 and nnodes <= 1:
        return [python, script, *args]
    command = [python, "-m", "torch.distributed.run", f"--nproc_per_node={max(num_gpus, 1)}"]
    if nnodes <= 1:
        command += ["--standalone", "--nnodes=1"]
    else:
        if not rdzv_endpoint:
            raise ParamsError("train.rdzv_endpoint: needed when num_nodes > 1 "
                              "(host:port of node 0)")
        if not 0 <= node_rank < nnodes:
            raise ValueError(f"node rank {node_rank} is not in [0, {nnodes})")
        host, _, port = rdzv_endpoint.rpartition(":")
        command += [f"--nnodes={nnodes}", f"--node_rank={node_rank}",
                    f"--master_addr={host.strip('[]')}", f"--master_port={port}"]
    return [*command, script, *args]


def relaunch(params: TrainParams, script: str, args: Sequence[str]) -> None:
    """Replace this process with torchrun when ``params`` ask for several processes.

    Returns (and the caller trains in this process) for one GPU on one node, or when a
    launcher already started this process: its world size is honoured as it is.
    """
    if (params.num_gpus <= 1 and params.num_nodes <= 1) or under_launcher():
        return
    if params.num_gpus > 1 and torch.cuda.device_count() < params.num_gpus:
        raise ParamsError(f"train.num_gpus: {params.num_gpus}, but this machine has "
                         f"{torch.cuda.device_count()} CUDA GPU(s)")
    command = launcher_command(params.num_gpus, script, args, params.num_nodes, node_rank(),
                               params.rdzv_endpoint)
    log.info("relaunching under torchrun: %s", shlex.join(command))
    sys.stdout.flush()
    sys.stderr.flush()
    os.execv(command[0], command)


def _world() -> tuple[int, int]:
    """(global rank, world size) of this process; (0, 1) without a launcher."""
    return int(os.environ.get("RANK", "0")), int(os.environ.get("WORLD_SIZE", "1"))


def _barrier() -> None:
    """Wait for every process of a launched run (no-op in a single process)."""
    if _world()[1] > 1:
        from accelerate import PartialState

        PartialState(cpu=not torch.cuda.is_available()).wait_for_everyone()


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
        # Learning without forgetting: a frozen copy of the start model to distil from.
        self.reference = (WhisperForConditionalGeneration.from_pretrained(self.model_dir)
                          if self.params.distill_weight > 0 else None)
        self.enforce_language(self.language)
        if self.params.freeze_encoder:
            self.model.freeze_encoder()
        if self.params.method == "lora":
            self.model = add_lora(self.model, self.params)
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

    @property
    def eval_metric(self) -> str:
        """What validation reports and ranks checkpoints by: WER/CER of decoded text, or the
        loss when ``predict_with_generate`` is off."""
        return self.metric if self.params.predict_with_generate else "loss"

    def compute_metrics(self, pred: Any) -> dict[str, float]:
        """WER and CER of generated text against the labels."""
        tokenizer = self.processor.tokenizer
        # Timestamp tokens (in timestamped targets) are not text: drop them like padding.
        first_timestamp = tokenizer.convert_tokens_to_ids("<|0.00|>")
        label_ids = np.where((pred.label_ids == -100) | (pred.label_ids >= first_timestamp),
                             tokenizer.pad_token_id, pred.label_ids)
        pred_ids = np.where((pred.predictions == -100) | (pred.predictions >= first_timestamp),
                            tokenizer.pad_token_id, pred.predictions)
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
            predict_with_generate=p.predict_with_generate,
            generation_max_length=p.generation_max_length,
            metric_for_best_model=self.eval_metric if keep_best else None,
            greater_is_better=False,
            load_best_model_at_end=keep_best,
            remove_unused_columns=False,
            label_names=["labels"],
            dataloader_num_workers=p.dataloader_num_workers,
            # DDP: every trainable weight gets a gradient each step, so skip the search for
            # unused ones (transformers' checkpointing is non-reentrant, which DDP needs).
            ddp_find_unused_parameters=False,
            # Launched without CUDA (several CPU processes, e.g. nodes without GPUs): DDP
            # over gloo, which accelerate only sets up when told the run is on CPU.
            use_cpu=_world()[1] > 1 and not torch.cuda.is_available(),
            seed=p.seed,
            data_seed=p.seed,
            # Same data and params give the same weights: without it whisper-base's CPU
            # backward pass differs run to run, and so do two runs of one experiment.
            full_determinism=p.deterministic,
            report_to=[],
            disable_tqdm=False,
            **precision_flags(p.precision),
        )
        callbacks = list(callbacks or [])
        if keep_best and p.early_stopping_patience:
            callbacks.append(EarlyStoppingCallback(p.early_stopping_patience))
        collator = WhisperCollator(self.processor, self.task, self.language,
                                   timestamp_probability=p.timestamp_probability, seed=p.seed)
        trainer_class, extra = Seq2SeqTrainer, {}
        if self.reference is not None:
            trainer_class = DistillingTrainer
            extra = {"reference": self.reference, "distill_weight": p.distill_weight}
        return trainer_class(
            model=self.model,
            args=args,
            train_dataset=train_ds,
            eval_dataset=eval_ds,
            data_collator=collator,
            processing_class=self.processor,
            compute_metrics=(self.compute_metrics
                             if eval_ds is not None and p.predict_with_generate else None),
            callbacks=callbacks,
            **extra,
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
        world = trainer.args.world_size
        log.info("effective batch %d = %d per device x %d accumulation x %d process(es)",
                 self.effective_batch(world), self.params.per_device_batch_size,
                 self.params.gradient_accumulation_steps, world)
        result = trainer.train(resume_from_checkpoint=last)
        if trainer.is_world_process_zero():
            self.save(output_dir, checkpoints_dir)
        summary = {
            "train_loss": round(float(result.training_loss), 4),
            "steps": int(result.global_step),
            "train_samples_per_second": round(float(result.metrics["train_samples_per_second"]), 3),
            "train_runtime_s": round(float(result.metrics["train_runtime"]), 1),
            "effective_batch_size": self.effective_batch(world),
        }
        key = self.eval_metric
        evals = [e for e in trainer.state.log_history if f"eval_{key}" in e]
        if evals:
            summary[f"final_eval_{key}"] = round(float(evals[-1][f"eval_{key}"]), 2)
        if trainer.state.best_metric is not None:
            summary[f"best_eval_{key}"] = round(float(trainer.state.best_metric), 2)
        return summary

    def effective_batch(self, world_size: int = 1) -> int:
        """Samples per optimiser step across all processes."""
        p = self.params
        return p.per_device_batch_size * p.gradient_accumulation_steps * world_size

    def save(self, output_dir: Path, checkpoints_dir: Path | None = None) -> None:
        """Write model, processor and generation config atomically, as plain Whisper weights
        (LoRA adapters merged in: CTranslate2 cannot convert a PEFT model).

        With ``checkpoints_dir``, the weights of every checkpoint there except the final step
        go to ``output_dir/snapshots/step-N/`` too: candidates for the forgetting guard.
        """
        if self.params.method == "lora":
            self.model = self.model.merge_and_unload()
        with atomic_path(output_dir) as tmp:
            self.model.save_pretrained(tmp)
            self.processor.save_pretrained(tmp)
            extractor = tmp / "preprocessor_config.json"
            if not extractor.exists():  # faster-whisper reads this file name
                self.processor.feature_extractor.to_json_file(extractor)
            for checkpoint in _earlier_checkpoints(checkpoints_dir):
                self._save_snapshot(checkpoint, tmp / SNAPSHOTS / checkpoint.name.replace(
                    "checkpoint-", "step-"))

    def _save_snapshot(self, checkpoint: Path, out: Path) -> None:
        """The plain weights of one Trainer checkpoint (LoRA: merged onto the start model)."""
        from safetensors.torch import save_file

        out.mkdir(parents=True)
        if self.params.method == "full":
            shutil.copyfile(checkpoint / WEIGHTS, out / WEIGHTS)
            return
        from peft import PeftModel

        start = WhisperForConditionalGeneration.from_pretrained(self.model_dir)
        merged = PeftModel.from_pretrained(start, checkpoint).merge_and_unload()
        state = {k: v.contiguous() for k, v in merged.state_dict().items()
                 if k != "proj_out.weight"}  # tied to the token embeddings, as HF saves it
        save_file(state, out / WEIGHTS, metadata={"format": "pt"})


SNAPSHOTS = "snapshots"
WEIGHTS = "model.safetensors"


class DistillingTrainer(Seq2SeqTrainer):
    """Seq2SeqTrainer whose loss also keeps the model's next-token distributions near a frozen
    reference (the round's start model): learning without forgetting (Li & Hoiem, 2016).

    loss = (1 - w) * cross-entropy(labels) + w * KL(reference || model), the KL taken at each
    target position (teacher-forced on the same labels) and averaged over them. Where the
    start model already predicts the label the two terms agree; elsewhere the labels win by
    their share, and what the start model does with everything else (the other tokens'
    probabilities: its language model) moves only as far as the labels pull it.
    """

    def __init__(self, *args: Any, reference: WhisperForConditionalGeneration,
                 distill_weight: float, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.reference = reference.eval().requires_grad_(False).to(self.args.device)
        self.distill_weight = distill_weight

    def compute_loss(self, model: Any, inputs: dict[str, torch.Tensor],
                     return_outputs: bool = False, num_items_in_batch: Any = None) -> Any:
        loss, outputs = super().compute_loss(model, inputs, return_outputs=True,
                                             num_items_in_batch=num_items_in_batch)
        if not model.training:  # evaluation reports the plain loss
            return (loss, outputs) if return_outputs else loss
        labels = inputs["labels"]
        with torch.no_grad():
            reference = self.reference(input_features=inputs["input_features"],
                                       labels=labels).logits
        kept = labels != -100
        log_p = torch.log_softmax(outputs.logits[kept].float(), dim=-1)
        log_q = torch.log_softmax(reference[kept].float(), dim=-1)
        kl = (log_q.exp() * (log_q - log_p)).sum()
        # Normalised like the cross-entropy: over the whole accumulated batch when the trainer
        # counts its target tokens (the loss is then not divided by the accumulation steps).
        counted = num_items_in_batch is not None and self.model_accepts_loss_kwargs
        kl = kl / (num_items_in_batch if counted else kept.sum())
        loss = (1 - self.distill_weight) * loss + self.distill_weight * kl
        return (loss, outputs) if return_outputs else loss


def _earlier_checkpoints(checkpoints_dir: Path | None) -> list[Path]:
    """Trainer checkpoints in ``checkpoints_dir`` other than the newest (the final model)."""
    if checkpoints_dir is None or not checkpoints_dir.is_dir():
        return []
    found = sorted((p for p in checkpoints_dir.glob("checkpoint-*") if p.is_dir()),
                   key=lambda p: int(p.name.rsplit("-", 1)[1]))
    return found[:-1]


def add_lora(model: WhisperForConditionalGeneration, params: TrainParams) -> Any:
    """``model`` with LoRA adapters (PEFT) on ``params.lora_target_modules``; only the adapters
    train. With ``freeze_encoder`` the adapters go into the decoder alone."""
    from peft import LoraConfig, get_peft_model

    targets: list[str] | str = list(params.lora_target_modules)
    if params.freeze_encoder:
        names = "|".join(re.escape(name) for name in targets)
        targets = rf".*decoder\.layers\.\d+\..*({names})"
    config = LoraConfig(r=params.lora_rank, lora_alpha=params.lora_alpha,
                        lora_dropout=params.lora_dropout, target_modules=targets, bias="none")
    model = get_peft_model(model, config)
    trainable, total = model.get_nb_trainable_parameters()
    log.info("LoRA rank %d: %d of %d weights train (%.2f %%)", params.lora_rank, trainable,
             total, 100 * trainable / total)
    return model


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
    """The ``train`` stage: fine-tune, log curves with dvclive, write the summary metric.

    Under a launcher every process runs this; global rank 0 alone prepares the checkpoint
    folder, logs to dvclive and writes the model and metrics, the others wait for it.
    """
    from dvclive import Live
    from transformers.integrations import DVCLiveCallback

    torch.manual_seed(params.seed)
    main = _world()[0] == 0
    fingerprint = run_fingerprint(params, language, task, [train_csv, validation_csv],
                                  base_model_dir)
    callbacks = list(callbacks or [])
    live = None
    if main:
        resuming = reusable_checkpoints(checkpoints_dir, fingerprint)
        if live_dir.exists() and not resuming:
            shutil.rmtree(live_dir)
        live = Live(str(live_dir), dvcyaml=False, save_dvc_exp=False, resume=bool(resuming))
        callbacks.insert(0, DVCLiveCallback(live=live))
    _barrier()  # the others look for checkpoints only once rank 0 has kept or cleared them
    tuner = FineTuner(base_model_dir, language, task, params)
    summary = tuner.run(train_csv, validation_csv, output_dir, checkpoints_dir, callbacks)
    _barrier()  # every process is done with the checkpoints before they are deleted
    if main:
        live.end()
        # Checkpoints exist to resume an interrupted run; a finished run does not need
        # them. The folder is deliberately not a DVC output: DVC cannot restore uncached
        # outputs, so a leftover stamp from an experiment would make the stage look changed.
        shutil.rmtree(checkpoints_dir)
        atomic_write_text(metrics_path, json.dumps(summary, indent=2) + "\n")
        log.info("train: %s", summary)
    if _world()[1] > 1 and torch.distributed.is_initialized():
        torch.distributed.destroy_process_group()
    return summary
