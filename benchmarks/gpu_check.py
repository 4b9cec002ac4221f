"""GPU check: the project's own training and labelling code on a CUDA GPU, and on the CPU.

Runs ``tubetune.train.FineTuner`` (the train stage's Seq2SeqTrainer, collator and precision
choice) and ``tubetune.engines`` (the pseudo-label stage's teacher, as ``label_source``
drives it: chunk WAVs read with ``load_audio``, decoded in batches) on chunks that the
project's own functions cut from the bundled sample (``resample_to_wav``, ``fixed_spans``,
``write_chunks``; subtitle text as training targets). It prints training samples/s,
labelling real-time factor (decode seconds per audio second) and peak GPU memory, for the
GPU (fp16) and then the CPU path (fp32 training, int8 labelling) with small step counts.

Nothing is downloaded: the models are randomly initialised Whisper models of whisper-small's
and whisper-base's shapes, built with transformers, with the real multilingual tokenizer
(from the bundled model package, ``models/base/ct2``, or ``--tokenizer``). Speed does not
depend on the weights, except that random weights never say end-of-text: decodes are capped
at ``--max-tokens`` (64, about what 10 s of speech takes) and use temperature 0 only. The
teacher is faster-whisper (the model converted to CTranslate2) when ``faster_whisper`` and a
CUDA-enabled ``ctranslate2`` are importable, else the transformers engine.

    bash benchmarks/gpu_check.sh [--models small,base] [--steps 12] [--cpu-steps 3]
                                 [--label-chunks 32] [--cpu-label-chunks 4] [--skip-cpu]
"""

from __future__ import annotations

import argparse
import contextlib
import importlib.util
import json
import logging
import os
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:  # run from a bare checkout (no editable install)
    sys.path.insert(0, str(ROOT))

SAMPLE_DIR = ROOT / "data" / "sample"
SEED_FIGURE = ("seed recipe: whisper-small on an RTX 3070 laptop GPU, batch 8 x accumulation 2, "
               "fp16: 0.351 samples/s")
SHAPES = {  # OpenAI's whisper-small and whisper-base dimensions
    "small": {"d_model": 768, "layers": 12, "heads": 12, "ffn": 3072},
    "base": {"d_model": 512, "layers": 6, "heads": 8, "ffn": 2048},
}
NEEDED = ("torch", "transformers", "accelerate", "datasets", "pandas", "soundfile", "pydub",
          "imageio_ffmpeg", "jiwer", "onnxruntime", "tqdm", "yaml")
log = logging.getLogger("benchmarks.gpu_check")


@dataclass
class Row:
    """One model on one device."""

    device: str
    model: str
    engine: str
    train_setup: str
    train_samples_per_s: float
    trainer_samples_per_s: float
    label_rtf: float
    label_setup: str
    peak_train_gib: float | None = None
    peak_label_gib: float | None = None


def missing_modules() -> list[str]:
    """Modules the project's code paths import that this Python lacks."""
    return [m for m in NEEDED if importlib.util.find_spec(m) is None]


def faster_whisper_usable(cuda: bool) -> bool:
    """faster-whisper and CTranslate2 importable (and built with CUDA when ``cuda``)."""
    if not all(importlib.util.find_spec(m) for m in ("faster_whisper", "ctranslate2")):
        return False
    import ctranslate2

    return not cuda or ctranslate2.get_cuda_device_count() > 0


# ----------------------------------------------------------------------------- inputs


def tokenizer_files(explicit: str | None) -> tuple[Path, dict]:
    """The multilingual Whisper ``tokenizer.json`` and a CTranslate2 ``config.json`` (or {})."""
    from tubetune import models

    candidates = [Path(explicit)] if explicit else []
    bundle = models.BUNDLED_MODELS[models.DEFAULT_MODEL]
    with contextlib.suppress(models.ModelError):
        candidates.append(models._package_dir(bundle.data[0], bundle.distributions)
                          / bundle.data[1] / "tokenizer.json")
    candidates.append(ROOT / "models" / "base" / "ct2" / "tokenizer.json")
    for path in candidates:
        if path.is_file():
            config = path.with_name("config.json")
            return path, json.loads(config.read_text()) if config.is_file() else {}
    raise SystemExit("no Whisper tokenizer.json found: install the bundled model packages "
                     "(requirements.txt), run `dvc repro base-model`, or pass --tokenizer")


def make_data(work: Path) -> tuple[Path, list[tuple[Path, float]]]:
    """10-s chunks of the bundled sample: a training manifest (subtitle text) and the chunks."""
    import pandas as pd

    from tubetune.audio import resample_to_wav
    from tubetune.segment import fixed_spans, write_chunks
    from tubetune.subtitles import read_vtt, text_in_span

    chunk_dir = work / "chunks"
    chunk_dir.mkdir()
    rows, chunks = [], []
    for vtt in sorted(SAMPLE_DIR.glob("*.en.vtt")):
        stem = vtt.name.removesuffix(".en.vtt")
        media = next(p for p in SAMPLE_DIR.glob(f"{stem}.*") if p.suffix != ".vtt")
        wav = work / f"{stem}.wav"
        info = resample_to_wav(media, wav)
        spans = fixed_spans(round(info.duration_s * 1000), 10.0, 0.0, 1.0)
        cues = read_vtt(vtt)
        for span, path in zip(spans, write_chunks(wav, spans, chunk_dir, stem), strict=True):
            text = text_in_span(cues, span.start_ms, span.end_ms)
            chunks.append((path, (span.end_ms - span.start_ms) / 1000))
            if text:
                rows.append({"path": str(path), "text": text, "language": "en"})
    train_csv = work / "train.csv"
    pd.DataFrame(rows).to_csv(train_csv, index=False)
    return train_csv, chunks


def build_model(shape: str, out: Path, tokenizer_json: Path, ct2_config: dict) -> Path:
    """A randomly initialised Whisper of ``shape``'s dimensions, Hugging Face layout."""
    import torch
    from transformers import (
        WhisperConfig,
        WhisperFeatureExtractor,
        WhisperForConditionalGeneration,
        WhisperProcessor,
    )
    from transformers.models.whisper.tokenization_whisper import LANGUAGES

    from tubetune import conversion
    from tubetune.constants import MAX_TARGET_POSITIONS

    raw = json.loads(tokenizer_json.read_text(encoding="utf-8"))
    tokens = set(raw["model"]["vocab"]) | {t["content"] for t in raw["added_tokens"]}
    tokenizer = conversion.build_tokenizer(tokenizer_json, len(tokens) + 1501,
                                           MAX_TARGET_POSITIONS)
    if not ct2_config.get("lang_ids"):  # no CTranslate2 config beside the tokenizer
        ids = [tokenizer.convert_tokens_to_ids(f"<|{code}|>") for code in LANGUAGES]
        ct2_config = {**ct2_config, "lang_ids": [i for i in ids if i != tokenizer.unk_token_id]}
    dims = SHAPES[shape]
    config = WhisperConfig(
        vocab_size=len(tokenizer), d_model=dims["d_model"], encoder_layers=dims["layers"],
        decoder_layers=dims["layers"], encoder_attention_heads=dims["heads"],
        decoder_attention_heads=dims["heads"], encoder_ffn_dim=dims["ffn"],
        decoder_ffn_dim=dims["ffn"], num_mel_bins=80, max_source_positions=1500,
        max_target_positions=MAX_TARGET_POSITIONS, bos_token_id=50257, eos_token_id=50257,
        pad_token_id=50257, decoder_start_token_id=50258,
    )
    torch.manual_seed(0)
    model = WhisperForConditionalGeneration(config)
    model.generation_config = conversion.whisper_generation_config(tokenizer, ct2_config,
                                                                  MAX_TARGET_POSITIONS)
    model.save_pretrained(out)
    WhisperProcessor(WhisperFeatureExtractor(feature_size=80), tokenizer).save_pretrained(out)
    return out


# ----------------------------------------------------------------------------- measuring


class PeakGpuMemory:
    """Peak device memory in use (any allocator: torch or CTranslate2) above the start."""

    def __init__(self, cuda: bool) -> None:
        self.cuda, self.peak, self._stop = cuda, 0, threading.Event()

    def _used(self) -> int:
        import torch

        free, total = torch.cuda.mem_get_info()
        return total - free

    def __enter__(self) -> PeakGpuMemory:
        if self.cuda:
            self.start = self._used()
            self._thread = threading.Thread(target=self._poll, daemon=True)
            self._thread.start()
        return self

    def _poll(self) -> None:
        while not self._stop.wait(0.02):
            self.peak = max(self.peak, self._used() - self.start)

    def __exit__(self, *exc: object) -> None:
        if self.cuda:
            self._stop.set()
            self._thread.join()

    @property
    def gib(self) -> float | None:
        return round(self.peak / 2**30, 2) if self.cuda else None


def train_rate(model_dir: Path, train_csv: Path, work: Path, cuda: bool, steps: int,
               batch: int, accumulation: int) -> tuple[float, float, float | None]:
    """Steady samples/s (warm-up steps left out), Trainer's own figure, peak GPU GiB."""
    from transformers import TrainerCallback

    from tubetune.params import TrainParams
    from tubetune.train import FineTuner

    class StepClock(TrainerCallback):
        def __init__(self) -> None:
            self.ends: list[float] = []

        def on_step_end(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
            if cuda:
                import torch

                torch.cuda.synchronize()
            self.ends.append(time.perf_counter())

    params = TrainParams(
        max_steps=steps, per_device_batch_size=batch, gradient_accumulation_steps=accumulation,
        learning_rate=1e-5, warmup_steps=0, save_steps=steps + 1, logging_steps=steps,
        precision="fp16" if cuda else "fp32", gradient_checkpointing=cuda,
        dataloader_num_workers=min(4, os.cpu_count() or 1) if cuda else 0,
        freeze_encoder=False, generation_max_length=64,
    )
    tuner = FineTuner(model_dir, "en", "transcribe", params)
    clock = StepClock()
    trainer = tuner.build_trainer(train_csv, None, work / f"ckpt-{model_dir.name}", [clock])
    with PeakGpuMemory(cuda) as memory:
        result = trainer.train()
    warm_up = 2 if len(clock.ends) >= 5 else 1  # steps left out of the steady rate
    timed = clock.ends[warm_up - 1 :]
    per_step = (timed[-1] - timed[0]) / max(len(timed) - 1, 1)
    steady = batch * accumulation / per_step
    del trainer, tuner
    _free_gpu(cuda)
    return steady, float(result.metrics["train_samples_per_second"]), memory.gib


def label_rtf(hf_dir: Path, chunks: list[tuple[Path, float]], cuda: bool, engine: str,
              batch_size: int, max_tokens: int) -> tuple[float, float | None]:
    """Decode seconds per audio second of the teacher over ``chunks`` (after a warm-up)."""
    from tubetune.audio import load_audio
    from tubetune.conversion import convert_hf_to_ct2
    from tubetune.engines import DecodeOptions, load_teacher

    ct2_dir = hf_dir.with_name(hf_dir.name + "-ct2")
    if engine == "faster-whisper" and not ct2_dir.exists():
        convert_hf_to_ct2(hf_dir, ct2_dir)
    device = "cuda" if cuda else "cpu"
    with PeakGpuMemory(cuda) as memory:
        teacher = load_teacher(engine, ct2_dir, hf_dir, device,
                               "float16" if cuda else "int8")
        if engine == "faster-whisper":  # random weights never stop: cap like real speech
            teacher.model.max_length = 4 + max_tokens  # type: ignore[attr-defined]
        else:
            teacher.model.config.max_target_positions = 4 + max_tokens  # type: ignore[attr-defined]
        options = DecodeOptions("en", "transcribe", beam_size=5, temperatures=(0.0,))
        teacher.transcribe_batch([load_audio(chunks[0][0])], options)  # warm-up
        if cuda:
            import torch

            torch.cuda.synchronize()
        start = time.perf_counter()
        for i in range(0, len(chunks), batch_size):
            batch = chunks[i : i + batch_size]
            teacher.transcribe_batch([load_audio(p) for p, _ in batch], options)
        if cuda:
            torch.cuda.synchronize()
        elapsed = time.perf_counter() - start
    del teacher
    _free_gpu(cuda)
    return elapsed / sum(d for _, d in chunks), memory.gib


def _free_gpu(cuda: bool) -> None:
    import gc

    gc.collect()
    if cuda:
        import torch

        torch.cuda.empty_cache()


# ----------------------------------------------------------------------------- phases


def run_phase(args: argparse.Namespace, cuda: bool) -> list[Row]:
    """Every model of ``--models`` on the GPU (``cuda``) or the CPU."""
    work = Path(tempfile.mkdtemp(prefix="gpu_check-"))
    try:
        tokenizer_json, ct2_config = tokenizer_files(args.tokenizer)
        train_csv, chunks = make_data(work)
        engine = "faster-whisper" if faster_whisper_usable(cuda) else "transformers"
        steps = args.steps if cuda else args.cpu_steps
        batch, accumulation = (8, 2) if cuda else (args.cpu_batch, 1)
        n_label = args.label_chunks if cuda else args.cpu_label_chunks
        label_chunks = (chunks * (n_label // len(chunks) + 1))[:n_label]
        label_batch = 16 if cuda else 1
        rows = []
        for shape in args.models.split(","):
            model_dir = build_model(shape, work / f"whisper-{shape}", tokenizer_json, ct2_config)
            print(f"[{'cuda' if cuda else 'cpu'}] whisper-{shape}: training {steps} steps of "
                  f"{batch} x {accumulation}", flush=True)
            steady, trainer_sps, train_mem = train_rate(model_dir, train_csv, work, cuda, steps,
                                                        batch, accumulation)
            print(f"[{'cuda' if cuda else 'cpu'}] whisper-{shape}: labelling "
                  f"{len(label_chunks)} chunks ({engine})", flush=True)
            rtf, label_mem = label_rtf(model_dir, label_chunks, cuda, engine, label_batch,
                                       args.max_tokens)
            rows.append(Row(
                "cuda" if cuda else "cpu", f"whisper-{shape}", engine,
                f"{steps} steps x {batch} x {accumulation}, {'fp16' if cuda else 'fp32'}",
                round(steady, 3), round(trainer_sps, 3), round(rtf, 4),
                f"{len(label_chunks)} chunks, batch {label_batch}, beam 5, "
                f"{'float16' if cuda else 'int8' if engine == 'faster-whisper' else 'fp32'}",
                train_mem, label_mem,
            ))
        return rows
    finally:
        shutil.rmtree(work, ignore_errors=True)


def cpu_rows_in_subprocess(args: argparse.Namespace) -> list[Row]:
    """The CPU phase in a child that cannot see the GPU (so nothing silently uses it)."""
    with tempfile.NamedTemporaryFile(suffix=".json") as out:
        command = [sys.executable, __file__, "--phase", "cpu", "--result", out.name,
                   "--models", args.models, "--cpu-steps", str(args.cpu_steps),
                   "--cpu-batch", str(args.cpu_batch),
                   "--cpu-label-chunks", str(args.cpu_label_chunks),
                   "--max-tokens", str(args.max_tokens)]
        if args.tokenizer:
            command += ["--tokenizer", args.tokenizer]
        subprocess.run(command, check=True, env={**os.environ, "CUDA_VISIBLE_DEVICES": ""})
        return [Row(**r) for r in json.loads(Path(out.name).read_text())]


def print_table(rows: list[Row]) -> None:
    print(f"\n{'device':<6} {'model':<14} {'train samples/s':>15} {'(Trainer)':>9} "
          f"{'label RTF':>9} {'peak GPU GiB train/label':>25}  setup")
    for r in rows:
        memory = ("-" if r.peak_train_gib is None
                  else f"{r.peak_train_gib:.2f} / {r.peak_label_gib:.2f}")
        print(f"{r.device:<6} {r.model:<14} {r.train_samples_per_s:>15.3f} "
              f"{r.trainer_samples_per_s:>9.3f} {r.label_rtf:>9.4f} {memory:>25}  "
              f"train {r.train_setup}; label {r.label_setup} ({r.engine})")
    print(f"\n{SEED_FIGURE}")
    print("train samples/s: steady rate, the first step (two from 5 steps on) left out; "
          "(Trainer): Trainer's own figure, start-up included. label RTF: decode seconds per "
          "audio second (lower is faster), model loading and a warm-up decode left out.")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--models", default="small,base", help="comma list of small, base")
    parser.add_argument("--steps", type=int, default=12, help="GPU training steps (8 x 2)")
    parser.add_argument("--cpu-steps", type=int, default=3)
    parser.add_argument("--cpu-batch", type=int, default=2)
    parser.add_argument("--label-chunks", type=int, default=64, help="GPU labelling chunks")
    parser.add_argument("--cpu-label-chunks", type=int, default=4)
    parser.add_argument("--max-tokens", type=int, default=64)
    parser.add_argument("--tokenizer", help="a Whisper tokenizer.json (multilingual)")
    parser.add_argument("--skip-cpu", action="store_true")
    parser.add_argument("--phase", choices=("cpu",), help=argparse.SUPPRESS)
    parser.add_argument("--result", help=argparse.SUPPRESS)
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)
    if missing := missing_modules():
        raise SystemExit(f"missing Python modules: {', '.join(missing)} (the project's "
                         "requirements.txt, or wheels: bash benchmarks/gpu_check.sh --wheels DIR)")
    if args.phase == "cpu":
        rows = run_phase(args, cuda=False)
        Path(args.result).write_text(json.dumps([asdict(r) for r in rows]))
        return
    import torch

    from tubetune.train import precision_flags

    start = time.perf_counter()
    rows: list[Row] = []
    if torch.cuda.is_available():
        name = torch.cuda.get_device_name()
        capability = ".".join(map(str, torch.cuda.get_device_capability()))
        flags = precision_flags("auto")
        print(f"GPU: {name} (compute capability {capability}, {torch.cuda.device_count()} "
              f"visible); train.precision auto would pick "
              f"{'bf16' if flags['bf16'] else 'fp16'}; TF32 matmul "
              f"{'on' if torch.backends.cuda.matmul.allow_tf32 else 'off'}; this check uses fp16",
              flush=True)
        rows += run_phase(args, cuda=True)
        if not args.skip_cpu:
            rows += cpu_rows_in_subprocess(args)
    else:
        print("no NVIDIA GPU found (torch.cuda.is_available() is False): CPU figures only",
              flush=True)
        rows += run_phase(args, cuda=False)
    print_table(rows)
    print(f"\ntotal {time.perf_counter() - start:.0f} s")


if __name__ == "__main__":
    main()
