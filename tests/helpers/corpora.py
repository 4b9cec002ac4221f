"""Tiny labelled corpora in each layout tubetune.corpus reads, written by the tests.

The audio is synthetic (a few seconds of harmonic tones under a syllable-rate envelope per
utterance, seeded), the Korean transcripts are written here with KsponSpeech notation.
"""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import soundfile as sf

RATE = 16000

# (KsponSpeech transcript with notation, the clean target it must become (phonetic))
KOREAN = [
    ("o/ 그래서 (3시)/(세 시)에 만나자", "그래서 세 시에 만나자"),
    ("b/ 아/ 그* 뭐지 n/", "아 그 뭐지"),
    ("네+ 네 알겠어요 l/", "네 네 알겠어요"),
    ("u/ 오늘 (10분)/(십 분) 늦었어", "오늘 십 분 늦었어"),
    ("그 영화 진짜 재밌더라", "그 영화 진짜 재밌더라"),
    ("n/ 내일 다시 전화할게요", "내일 다시 전화할게요"),
]


def speechlike(seconds: float, seed: int, rate: int = RATE, channels: int = 1) -> np.ndarray:
    """Float32 samples in [-0.5, 0.5]: voiced tones at a random pitch, 4 syllables a second."""
    rng = np.random.default_rng(seed)
    t = np.arange(round(seconds * rate)) / rate
    pitch = rng.uniform(110, 220)
    voice = sum(np.sin(2 * np.pi * pitch * k * t + rng.uniform(0, 6)) / k for k in (1, 2, 3))
    envelope = np.clip(np.sin(2 * np.pi * 4 * t + rng.uniform(0, 6)), 0, None)
    mono = (0.25 * voice * envelope).astype(np.float32)
    return np.repeat(mono[:, None], channels, axis=1) if channels > 1 else mono


def pcm16(samples: np.ndarray) -> np.ndarray:
    """Float samples as the int16 a 16-bit file stores."""
    return np.clip(np.rint(samples * 32768), -32768, 32767).astype("<i2")


def write_ksponspeech(root: Path, folders: dict[str, list[int]], encoding: str = "cp949",
                      seconds: float = 2.0) -> dict[Path, str]:
    """KsponSpeech layout: ``root/<folder>/<folder>_<n>.pcm`` (headerless 16 kHz s16le
    mono) with its transcript ``.txt`` next to it; ``folders`` maps a folder to KOREAN
    indices. Returns each .pcm path with the clean target its transcript must become."""
    targets = {}
    for folder, indices in folders.items():
        (root / folder).mkdir(parents=True, exist_ok=True)
        for n, index in enumerate(indices):
            stem = root / folder / f"{folder}_{n:06d}"
            samples = speechlike(seconds + 0.25 * n, seed=len(targets) + 1)
            pcm16(samples).tofile(stem.with_suffix(".pcm"))
            stem.with_suffix(".txt").write_bytes(KOREAN[index][0].encode(encoding))
            targets[stem.with_suffix(".pcm")] = KOREAN[index][1]
    return targets


def write_commonvoice(root: Path, clips: list[tuple[str, str, str]],
                      tsv: str = "train.tsv") -> None:
    """Common Voice layout: ``root/clips/<name>.mp3`` (48 kHz stereo) and ``root/<tsv>``
    with ``client_id``, ``path`` and ``sentence``; ``clips`` is (client_id, name, text)."""
    (root / "clips").mkdir(parents=True, exist_ok=True)
    for i, (_, name, _) in enumerate(clips):
        sf.write(root / "clips" / name, speechlike(1.5 + 0.1 * i, 100 + i, 48000, 2), 48000,
                 format="MP3")
    lines = ["client_id\tpath\tsentence\tup_votes\tdown_votes"]  # unquoted, as CV's are
    lines += [f"{client}\t{name}\t{text}\t2\t0" for client, name, text in clips]
    (root / tsv).write_text("\n".join(lines) + "\n", encoding="utf-8")


def wav_bytes(samples: np.ndarray, rate: int, format: str = "WAV") -> bytes:
    """Samples encoded as an audio file in memory."""
    buffer = io.BytesIO()
    sf.write(buffer, samples, rate, format=format)
    return buffer.getvalue()


def write_hf_dataset(path: Path, rows: list[dict]) -> None:
    """A ``save_to_disk`` dataset with an ``audio`` column (``{"bytes", "path"}``, stored
    without torchcodec) and the rows' other columns."""
    import datasets

    columns = {key: [row[key] for row in rows] for key in rows[0]}
    dataset = datasets.Dataset.from_dict(columns)
    dataset = dataset.cast_column("audio", datasets.Audio())
    dataset.save_to_disk(str(path))
