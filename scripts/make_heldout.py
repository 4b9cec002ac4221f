"""Build the second held-out set: short spoken requests in voices the sample never uses.

The bundled sample is narrated monologue; this set is a different kind of speech (short
questions and requests, faster, other voices, some over background noise) so that the
evaluate stage can tell whether fine-tuning on the sample made the model forget how to
handle anything else. Rebuild with ``python scripts/make_heldout.py`` (needs espeak-ng).
"""

from __future__ import annotations

import logging
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from make_sample import REPO_ROOT, ffmpeg_exe, synthesise, trim_silence

LOG = logging.getLogger("make_heldout")
OUT_DIR = REPO_ROOT / "data" / "sample" / "heldout"
SEED = 7
RATE = 16000
UTTERANCES = [
    ("en-us+m7", 185, "Could you remind me to water the plants tomorrow morning?"),
    ("en-us+f4", 180, "What time does the library close on weekends?"),
    ("en+m2", 175, "Please turn the heating down a little before we go to bed."),
    ("en-us+m7", 190, "How far is the nearest train station from here?"),
    ("en-us+f4", 185, "Send a message to my sister saying I will be late."),
    ("en+m2", 180, "Is it going to rain this afternoon or can we walk?"),
    ("en-us+m7", 180, "Add milk, eggs and fresh bread to the shopping list."),
    ("en-us+f4", 190, "Which museum has the dinosaur exhibition this summer?"),
    ("en+m2", 185, "Play some quiet piano music in the living room."),
    ("en-us+m7", 175, "Can you find a recipe that uses leftover rice?"),
    ("en-us+f4", 180, "Wake me up early, I have a long drive ahead."),
    ("en+m2", 190, "Who wrote the book we talked about at dinner?"),
]


def main() -> int:
    """Synthesise each request to ``heldout/NN.flac`` (16 kHz mono) and write heldout.csv."""
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    OUT_DIR.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(SEED)
    lines = ["path,text"]
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        for i, (voice, speed, text) in enumerate(UTTERANCES):
            samples, rate = synthesise(text, voice, speed, work)
            samples = trim_silence(samples)
            pad = np.zeros(int(0.3 * rate), dtype=np.float32)
            audio = np.concatenate([pad, samples, pad])
            noise_level = 0.02 if i % 3 == 2 else 0.002  # every third over audible noise
            audio = audio + noise_level * rng.standard_normal(len(audio)).astype(np.float32)
            raw = work / f"{i}.f32"
            np.clip(audio, -1, 1).astype("<f4").tofile(raw)
            name = f"{i:02d}.flac"
            subprocess.run(
                [ffmpeg_exe(), "-y", "-loglevel", "error", "-f", "f32le", "-ar", str(rate),
                 "-ac", "1", "-i", str(raw), "-af", "aresample=16000:resampler=soxr",
                 "-c:a", "flac", "-sample_fmt", "s16", "-bitexact", "-map_metadata", "-1",
                 str(OUT_DIR / name)],
                check=True,
            )
            lines.append(f'{name},"{text}"')
    (OUT_DIR / "heldout.csv").write_text("\n".join(lines) + "\n", encoding="utf-8")
    LOG.info("wrote %d utterances to %s", len(UTTERANCES), OUT_DIR)
    return 0


if __name__ == "__main__":
    sys.exit(main())
