"""Manifest CSVs -> ``datasets.Dataset``, and the collator that builds Whisper batches.

Log-mel features are computed on the fly in the collator, batch by batch: a precomputed
feature cache is ~40x larger than 16 kHz int16 audio (the course seed's mistake), and the
audio is already on disk in the form the loader reads fastest.

Targets are Whisper's own format. A share of them (``timestamp_probability``) carries
timestamp tokens (``<|0.00|> text<|2.40|><|2.40|> more<|5.00|>``, 0.02 s steps from the chunk
start) built from the chunk's segment times, so the fine-tuned model keeps predicting
timestamps: long-form decoders (faster-whisper, whisper.cpp, transformers' long-form
generate) move from window to window by them, and subtitles are timed with them. Training on
no-timestamp targets only is the most common way to break a fine-tuned Whisper.
"""

from __future__ import annotations

import json
import random
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import datasets
import pandas as pd
import torch

from tubetune.audio import load_audio
from tubetune.constants import MAX_TARGET_POSITIONS, SAMPLE_RATE, WINDOW_S
from tubetune.text import uses_characters, whisper_language

TIMESTAMP_STEP_MS = 20
MAX_TIMESTAMP_MS = round(WINDOW_S * 1000)
MANIFEST_COLUMNS = ["path", "text", "language", "timings"]


def load_manifest(csv_path: Path) -> datasets.Dataset:
    """A manifest CSV (path, text, language[, timings], ...) as a Dataset of those columns
    (``timings`` empty where the CSV has none)."""
    frame = pd.read_csv(csv_path, dtype={"path": str, "text": str, "language": str,
                                         "timings": str}, keep_default_na=False)
    if "timings" not in frame:
        frame["timings"] = ""
    return datasets.Dataset.from_pandas(frame[MANIFEST_COLUMNS], preserve_index=False)


def parse_timings(value: str) -> list[tuple[int, int, str]]:
    """``[[start_ms, end_ms, text], ...]`` (JSON, relative to the chunk start) as tuples."""
    if not value:
        return []
    return [(int(start), int(end), str(text)) for start, end, text in json.loads(value)]


def timestamp_token(tokenizer: Any, ms: int) -> int:
    """The id of Whisper's timestamp token nearest to ``ms`` (0.02 s steps, 0.00..30.00)."""
    step = round(min(max(ms, 0), MAX_TIMESTAMP_MS) / TIMESTAMP_STEP_MS)
    return tokenizer.convert_tokens_to_ids("<|0.00|>") + step


def timestamped_ids(
    tokenizer: Any, timings: list[tuple[int, int, str]], language: str | None, task: str,
    max_length: int = MAX_TARGET_POSITIONS,
) -> list[int] | None:
    """Whisper's timestamped target for segments ``timings``, or None when it cannot be one.

    ``<|sot|><|lang|><|task|>`` then ``<|start|> text<|end|>`` per segment and
    ``<|endoftext|>``. None when there are no segments, a segment's times are not
    increasing or lie outside the 30 s window, or the sequence would not fit ``max_length``:
    the caller falls back to a no-timestamp target.
    """
    if not timings:
        return None
    previous_end = 0
    for start, end, _ in timings:
        if not previous_end <= start <= end <= MAX_TIMESTAMP_MS:
            return None
        previous_end = end
    tokenizer.set_prefix_tokens(language=whisper_language(language), task=task,
                                predict_timestamps=True)
    ids = tokenizer("").input_ids[:-1]  # the prefix, without end-of-text
    lead = "" if uses_characters(language) else " "
    for start, end, text in timings:
        ids.append(timestamp_token(tokenizer, start))
        ids += tokenizer(lead + text.strip(), add_special_tokens=False).input_ids
        ids.append(timestamp_token(tokenizer, end))
    ids.append(tokenizer.eos_token_id)
    return ids if len(ids) <= max_length else None


@dataclass
class WhisperCollator:
    """Loads audio, computes log-mel features and tokenises targets with the task prefix.

    Each row's own ``language`` picks the prefix token (``default_language`` when empty),
    which is how the course seed's ``enforce_fine_tune_lang`` is done per utterance. A row
    with segment ``timings`` gets a timestamped target with ``timestamp_probability``
    (drawn from a generator seeded with ``seed``, so a run's targets are reproducible).
    """

    processor: Any
    task: str
    default_language: str
    timestamp_probability: float = 0.0
    seed: int = 0
    max_label_length: int = MAX_TARGET_POSITIONS
    _rng: random.Random = field(init=False, repr=False)

    def __post_init__(self) -> None:
        self._rng = random.Random(self.seed)

    def target_ids(self, row: dict[str, Any]) -> list[int]:
        """One row's target: timestamped (sometimes, when it has timings) or plain."""
        tokenizer = self.processor.tokenizer
        language = row.get("language") or self.default_language
        timings = parse_timings(row.get("timings") or "")
        if timings and self._rng.random() < self.timestamp_probability:
            ids = timestamped_ids(tokenizer, timings, language, self.task,
                                  self.max_label_length)
            if ids is not None:
                return ids
        tokenizer.set_prefix_tokens(language=whisper_language(language), task=self.task,
                                    predict_timestamps=False)
        return tokenizer(row["text"]).input_ids[: self.max_label_length]

    def __call__(self, rows: list[dict[str, Any]]) -> dict[str, torch.Tensor]:
        audio = [load_audio(Path(r["path"])) for r in rows]
        features = self.processor.feature_extractor(
            audio, sampling_rate=SAMPLE_RATE, return_tensors="pt"
        ).input_features
        label_ids = [self.target_ids(row) for row in rows]
        width = max(len(ids) for ids in label_ids)
        labels = torch.full((len(rows), width), -100, dtype=torch.long)
        for i, ids in enumerate(label_ids):
            labels[i, : len(ids)] = torch.tensor(ids)
        # The model prepends decoder_start_token_id when shifting labels right; drop ours.
        start = self.processor.tokenizer.convert_tokens_to_ids("<|startoftranscript|>")
        if (labels[:, 0] == start).all():
            labels = labels[:, 1:]
        return {"input_features": features, "labels": labels}
