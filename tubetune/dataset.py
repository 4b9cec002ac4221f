"""Manifest CSVs -> ``datasets.Dataset``, and the collator that builds Whisper batches.

Log-mel features are computed on the fly in the collator, batch by batch: a precomputed
feature cache is ~40x larger than 16 kHz int16 audio (the course seed's mistake), and the
audio is already on disk in the form the loader reads fastest.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import datasets
import pandas as pd
import torch

from tubetune.audio import load_audio
from tubetune.text import whisper_language

SAMPLE_RATE = 16_000


def load_manifest(csv_path: Path) -> datasets.Dataset:
    """A manifest CSV (path, text, language, ...) as a Dataset of path/text/language."""
    frame = pd.read_csv(csv_path, dtype={"path": str, "text": str, "language": str},
                        keep_default_na=False)
    return datasets.Dataset.from_pandas(frame[["path", "text", "language"]], preserve_index=False)


@dataclass
class WhisperCollator:
    """Loads audio, computes log-mel features and tokenises targets with the task prefix.

    Each row's own ``language`` picks the prefix token (``default_language`` when empty),
    which is how the course seed's ``enforce_fine_tune_lang`` is done per utterance.
    """

    processor: Any
    task: str
    default_language: str
    max_label_length: int = 448

    def __call__(self, rows: list[dict[str, Any]]) -> dict[str, torch.Tensor]:
        audio = [load_audio(Path(r["path"])) for r in rows]
        features = self.processor.feature_extractor(
            audio, sampling_rate=SAMPLE_RATE, return_tensors="pt"
        ).input_features
        tokenizer = self.processor.tokenizer
        label_ids = []
        for row in rows:
            language = whisper_language(row.get("language") or self.default_language)
            tokenizer.set_prefix_tokens(language=language, task=self.task, predict_timestamps=False)
            ids = tokenizer(row["text"]).input_ids[: self.max_label_length]
            label_ids.append(ids)
        width = max(len(ids) for ids in label_ids)
        labels = torch.full((len(rows), width), -100, dtype=torch.long)
        for i, ids in enumerate(label_ids):
            labels[i, : len(ids)] = torch.tensor(ids)
        # The model prepends decoder_start_token_id when shifting labels right; drop ours.
        start = tokenizer.convert_tokens_to_ids("<|startoftranscript|>")
        if (labels[:, 0] == start).all():
            labels = labels[:, 1:]
        return {"input_features": features, "labels": labels}
