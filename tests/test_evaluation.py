"""Evaluation decoding: replicas on every core give the transcripts of one model in order."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import soundfile as sf

from helpers.tiny_whisper import make_tiny_whisper
from tubetune.engines import FasterWhisperTranscriber
from tubetune.evaluation import transcribe_sets
from tubetune.params import EvaluateParams


@pytest.mark.slow  # a random model decodes 448 tokens at every fallback temperature
def test_replicas_transcribe_like_one_model_in_order(tmp_path: Path,
                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    # A random model's decodes look like hallucinations, so most clips take the sampled
    # temperature fallback: the replayed draws must be the ones a single model makes in order.
    model = make_tiny_whisper(tmp_path / "tiny", seed=3)
    rng = np.random.default_rng(0)
    rows = []
    for i, seconds in enumerate([1.0, 0.5, 1.5, 31.0]):  # one longer than a window
        path = tmp_path / f"clip{i}.wav"
        sf.write(path, (0.1 * rng.standard_normal(int(16000 * seconds))).astype(np.float32),
                 16000)
        rows.append({"path": str(path), "text": "x", "language": "en", "duration_s": seconds})
    sets = {"a": pd.DataFrame(rows[:3]), "b": pd.DataFrame(rows[3:])}
    retries = []
    original = FasterWhisperTranscriber.retry

    def counting(self, audio, first, options):
        retries.append(len(audio))
        return original(self, audio, first, options)

    monkeypatch.setattr(FasterWhisperTranscriber, "retry", counting)
    one = transcribe_sets(sets, model, "en", "transcribe", EvaluateParams(), workers=1)
    many = transcribe_sets(sets, model, "en", "transcribe", EvaluateParams(), workers=3)
    assert retries, "no clip took the sampled fallback: the test shows nothing"
    assert many.texts == one.texts
    assert [len(t) for t in one.texts.values()] == [3, 1]
