"""Generate the bundled sample corpus in ``data/sample/``.

Five short "videos" of English speech are synthesised with espeak-ng from the sentences
below, phrase by phrase (sentences are split at commas), laid out on a timeline with
pseudo-random pauses and a faint noise floor, and then encoded with the static ffmpeg shipped
by ``imageio-ffmpeg`` into the containers a web download typically yields (mp4, webm, m4a,
mp3, ogg). Each media file gets a yt-dlp style ``<stem>.en.vtt`` sidecar with the true text.
Like real uploads, a cue holds one to three sentences (so pauses fall inside cues, not only
between them) and some cue edges are early or late by up to ``JITTER_S`` (seeded).

espeak-ng and imageio-ffmpeg are needed only to rebuild the sample, never by the pipeline.
Output is deterministic for a given espeak-ng and ffmpeg build.

Usage::

    python scripts/make_sample.py [--out-dir data/sample]
"""

from __future__ import annotations

import argparse
import logging
import random
import re
import shutil
import subprocess
import sys
import tempfile
import wave
from dataclasses import dataclass
from pathlib import Path

import numpy as np

LOG = logging.getLogger("make_sample")

REPO_ROOT = Path(__file__).resolve().parent.parent
DEFAULT_OUT_DIR = REPO_ROOT / "data" / "sample"

SEED = 20240611
"""Master seed; per-video seeds are derived from it and the video's position."""

LEAD_IN_S = 0.5
TAIL_S = 0.8
PAUSE_RANGE_S = (0.4, 1.3)
"""Pause between sentences."""
PHRASE_PAUSE_RANGE_S = (0.3, 0.6)
"""Pause at a comma: the phrases of a sentence are synthesised one by one."""
JITTER_S = 0.2
"""Cue edges are moved by up to this much, early or late, as in real uploaded subtitles."""
JITTER_SHARE = 0.5
"""Share of cue edges that are moved."""
NOISE_DBFS = -50.0
"""RMS level of the white noise floor added under the whole timeline."""

TRIM_THRESHOLD = 0.01
"""Absolute amplitude (fraction of full scale) below which espeak output counts as silence."""

MIN_DURATION_S = 45.0
MAX_DURATION_S = 80.0

FFMPEG_COMMON = [
    "-map_metadata", "-1",
    "-fflags", "+bitexact",
    "-flags:a", "+bitexact",
]  # fmt: skip

VIDEOS: list[dict[str, object]] = [
    {
        "stem": "cooking-tips",
        "title": "A simple tomato soup",
        "voice": "en-us+f3",
        "speed": 160,
        "format": "mp4",
        "cue_sentences": [2, 2, 1, 2, 2, 2, 2],
        "sentences": [
            "Welcome back to my kitchen, where today we are making a simple tomato soup.",
            "Start by warming a generous splash of olive oil in a heavy pot.",
            "Add a chopped onion and let it soften slowly over low heat.",
            "Be patient here, because rushing the onion will make the soup taste bitter.",
            "Next, stir in a little garlic and cook it just until it smells sweet.",
            "Now pour in the tomatoes with their juice, and crush them with a wooden spoon.",
            "A small pinch of sugar balances the acid, so please do not skip it.",
            "Let everything simmer gently while you toast some bread for dipping.",
            "When the soup has thickened, blend it until it is smooth and glossy.",
            "Taste it carefully and add salt and black pepper a little at a time.",
            "If it seems too thick, loosen it with some hot water or stock.",
            "Finish each bowl with fresh basil and a drizzle of cream.",
            "Thanks for cooking with me, and I will see you next week.",
        ],
    },
    {
        "stem": "bicycle-repair",
        "title": "Fixing a flat, an interview with a bicycle mechanic",
        "voice": "en-gb",
        "second_voice": "en-us+m3",
        "speed": 155,
        "format": "webm",
        # In this interview the host (voice) asks and the mechanic (second_voice) answers;
        # speaker indices per sentence are given in "speakers".
        "speakers": [0, 0, 1, 0, 1, 1, 1, 0, 1, 1, 1, 0, 1, 1, 0],
        "cue_sentences": [2, 1, 1, 3, 1, 3, 1, 2, 1],  # one cue per speaker turn
        "sentences": [
            "Today I am joined by a mechanic who repairs bicycles for a living.",
            "So what is the most common problem people bring to your workshop?",
            "Without a doubt, it is a flat inner tube after riding over broken glass.",
            "Can most riders fix that themselves at home?",
            "Absolutely, all you need is a pump, a patch kit, and a little patience.",
            "First, remove the wheel and gently lever the rubber away from the rim.",
            "Then pull out the tube and inflate it slightly so you can hear the leak.",
            "What if the hole is too small to hear?",
            "Dip the tube in a bowl of water and watch for a stream of bubbles.",
            "Roughen the spot with sandpaper, spread the glue thinly, and let it turn dull.",
            "Press the patch down firmly and hold it there for a while.",
            "And is there anything people usually forget?",
            "Always run your fingers inside the rim to find whatever caused the puncture.",
            "Otherwise, the same sharp stone will ruin your new repair within a day.",
            "That is brilliant advice, thank you for joining us.",
        ],
    },
    {
        "stem": "travel-diary",
        "title": "Travel diary, a day in the hills",
        "voice": "en-gb-x-rp",
        "speed": 140,
        "format": "m4a",
        "cue_sentences": [3, 2, 3, 2, 2],
        "sentences": [
            "I woke before sunrise this morning and walked down to the old fishing port.",
            "The boats were coming back with their nets full, and the gulls were screaming.",
            "An elderly man sold me a cup of strong coffee from a cart beside the water.",
            "After breakfast I caught a slow train that wound its way up into the hills.",
            "Through the window I watched olive groves give way to dark pine forests.",
            "The village at the end of the line was quiet, with narrow streets and white walls.",
            "I wandered without a map and found a tiny church hidden behind a bakery.",
            "Inside, it was cool and silent, and candles flickered in front of faded paintings.",
            "For lunch I shared a table with a family who insisted I try their cheese.",
            "We could barely understand each other, but we laughed for most of the afternoon.",
            "In the evening the sky turned orange, and the whole valley seemed to glow.",
            "Tomorrow I plan to hike along the ridge, if my tired legs allow it.",
        ],
    },
    {
        "stem": "gardening-talk",
        "title": "Gardening club talk on healthy soil",
        "voice": "en+f2",  # British female; espeak-ng 1.51 ignores variants on "en-gb+..."
        "speed": 165,
        "format": "mp3",
        "sentences": [
            "Good evening, everyone, and thank you for coming to our gardening club.",
            "Tonight I want to talk about healthy soil, which is the secret to strong plants.",
            "Most gardeners focus on what grows above the ground, but the real work happens below.",
            "Healthy soil is full of worms, fungi, and tiny creatures that break down dead leaves.",
            "The easiest way to feed them is to add a thick layer of compost every autumn.",
            "You can make compost from kitchen scraps, grass clippings, and shredded paper.",
            "Keep the pile damp but not soggy, and turn it over whenever you remember.",
            "Avoid digging too deeply, because it destroys the delicate networks that roots need.",
            "Instead, spread mulch on top and let the worms carry it down for you.",
            "Within a single season, you will notice darker soil that holds water much better.",
            "Your vegetables will be sturdier, and pests will find them far less tempting.",
            "Please help yourselves to tea, and bring me your questions after the break.",
        ],
    },
    {
        "stem": "sky-science",
        "title": "Why is the sky blue",
        "voice": "en-us",
        "speed": 175,
        "format": "ogg",
        "cue_sentences": [2, 1, 2, 2, 3, 2],
        "sentences": [
            "Have you ever wondered why the sky looks blue on a clear day?",
            "Sunlight seems white, but it is actually a mixture of every visible wavelength.",
            "As that light travels through the air, it bumps into tiny gas molecules.",
            "These molecules scatter short blue waves far more strongly than long red ones.",
            "So wherever you look, scattered blue light reaches your eyes from every direction.",
            "You might ask why the sky is not violet, since violet waves are even shorter.",
            "Part of the answer is that sunlight contains less violet to begin with.",
            "Our eyes are also much more sensitive to blue than to violet.",
            "At sunset, the light must cross a much thicker slice of the atmosphere.",
            "By the time it reaches you, most of the blue has been scattered away.",
            "What remains are the warm reds and golden yellows that paint the evening clouds.",
            "Next time you watch a sunset, remember that you are seeing physics in action.",
        ],
    },
]
"""The corpus: one dict per video. ``format`` selects an entry of ``FORMATS``;
``cue_sentences`` gives the number of sentences of each cue (default: one cue per sentence)."""


@dataclass(frozen=True)
class Format:
    """How one container is encoded."""

    ext: str
    rate: int
    channels: int
    audio_args: tuple[str, ...]
    description: str
    video: bool = False


FORMATS: dict[str, Format] = {
    "mp4": Format(
        "mp4", 44100, 2, ("-c:a", "aac", "-b:a", "80k", "-movflags", "+faststart"),
        "MP4: H.264 160x90 at 2 fps + AAC stereo 44.1 kHz, 80 kb/s", video=True,
    ),
    "webm": Format(
        "webm", 48000, 2, ("-c:a", "libopus", "-b:a", "40k", "-vbr", "on"),
        "WebM: Opus stereo 48 kHz, 40 kb/s",
    ),
    "m4a": Format(
        "m4a", 44100, 1, ("-c:a", "aac", "-b:a", "56k", "-movflags", "+faststart"),
        "M4A: AAC mono 44.1 kHz, 56 kb/s",
    ),
    "mp3": Format(
        "mp3", 44100, 2, ("-c:a", "libmp3lame", "-b:a", "64k", "-write_xing", "1"),
        "MP3: MPEG-1 Layer III joint stereo 44.1 kHz, 64 kb/s CBR",
    ),
    "ogg": Format(
        "ogg", 48000, 1, ("-c:a", "libvorbis", "-q:a", "1"),
        "Ogg: Vorbis mono 48 kHz, quality 1 (about 48 kb/s)",
    ),
}  # fmt: skip


@dataclass(frozen=True)
class Cue:
    """One subtitle cue: its span on the timeline (in seconds) and its text."""

    start_s: float
    end_s: float
    text: str


def ffmpeg_exe() -> str:
    """Path of the static ffmpeg binary shipped by ``imageio-ffmpeg``."""
    import imageio_ffmpeg  # imported lazily: only needed to rebuild the sample

    return imageio_ffmpeg.get_ffmpeg_exe()


def espeak_version() -> str:
    """The espeak-ng version string, for the log and README."""
    out = subprocess.run(
        ["espeak-ng", "--version"], check=True, capture_output=True, text=True
    ).stdout
    return out.strip()


def read_wav_mono(path: Path) -> tuple[np.ndarray, int]:
    """Read a 16-bit mono WAV as float32 in [-1, 1] plus its sample rate."""
    with wave.open(str(path), "rb") as wf:
        if wf.getsampwidth() != 2 or wf.getnchannels() != 1:
            raise ValueError(f"{path}: expected 16-bit mono WAV")
        rate = wf.getframerate()
        data = np.frombuffer(wf.readframes(wf.getnframes()), dtype="<i2")
    return data.astype(np.float32) / 32768.0, rate


def write_wav_mono(path: Path, samples: np.ndarray, rate: int) -> None:
    """Write float samples in [-1, 1] as a 16-bit mono WAV."""
    pcm = np.clip(np.round(samples * 32767.0), -32768, 32767).astype("<i2")
    with wave.open(str(path), "wb") as wf:
        wf.setnchannels(1)
        wf.setsampwidth(2)
        wf.setframerate(rate)
        wf.writeframes(pcm.tobytes())


def synthesise(text: str, voice: str, speed: int, work: Path) -> tuple[np.ndarray, int]:
    """Speak ``text`` with espeak-ng and return its samples and sample rate."""
    wav = work / "sentence.wav"
    subprocess.run(
        ["espeak-ng", "-v", voice, "-s", str(speed), "-w", str(wav), "--", text],
        check=True,
        capture_output=True,
    )
    return read_wav_mono(wav)


def trim_silence(samples: np.ndarray, threshold: float = TRIM_THRESHOLD) -> np.ndarray:
    """Drop leading and trailing samples whose magnitude stays below ``threshold``."""
    loud = np.flatnonzero(np.abs(samples) >= threshold)
    if loud.size == 0:
        raise ValueError("synthesised sentence is silent")
    return samples[loud[0] : loud[-1] + 1]


def sentence_voices(video: dict[str, object]) -> list[str]:
    """The espeak voice for each sentence of ``video`` (two voices for an interview)."""
    sentences = video["sentences"]
    assert isinstance(sentences, list)
    voices = [str(video["voice"]), str(video.get("second_voice", video["voice"]))]
    speakers = video.get("speakers", [0] * len(sentences))
    assert isinstance(speakers, list) and len(speakers) == len(sentences)
    return [voices[s] for s in speakers]


def phrases(sentence: str) -> list[str]:
    """The phrases of a sentence: it is split after each comma (the comma stays on the left)."""
    return re.split(r"(?<=,) ", sentence)


def cue_sizes(video: dict[str, object]) -> list[int]:
    """How many sentences each cue of ``video`` holds (one each unless ``cue_sentences``)."""
    count = len(video["sentences"])  # type: ignore[arg-type]
    sizes = [int(n) for n in video.get("cue_sentences", [1] * count)]  # type: ignore[attr-defined]
    if sum(sizes) != count or min(sizes) < 1:
        raise ValueError(f"{video['stem']}: cue_sentences must split its {count} sentences")
    return sizes


def build_timeline(
    video: dict[str, object], seed: int, work: Path
) -> tuple[np.ndarray, int, list[Cue]]:
    """Synthesise every phrase and lay them out with pauses; return audio, rate, exact cues.

    Each phrase is trimmed of espeak's own leading and trailing silence before it is placed,
    so a cue spans exactly its audible sentences. Pauses are drawn with ``seed``: from
    ``PAUSE_RANGE_S`` between sentences, from ``PHRASE_PAUSE_RANGE_S`` at commas; a faint
    white noise floor at ``NOISE_DBFS`` is mixed under the whole timeline.
    """
    rng = random.Random(seed)
    sentences = [str(s) for s in video["sentences"]]  # type: ignore[attr-defined]
    speed = int(video["speed"])  # type: ignore[call-overload]
    pieces: list[np.ndarray] = []
    spans: list[tuple[int, int]] = []  # audible samples of each sentence
    rate = 0
    cursor = 0
    for i, (text, voice) in enumerate(zip(sentences, sentence_voices(video), strict=True)):
        for k, phrase in enumerate(phrases(text)):
            speech, srate = synthesise(phrase, voice, speed, work)
            if rate and srate != rate:
                raise ValueError(f"espeak rate changed mid-video: {srate} != {rate}")
            rate = srate
            speech = trim_silence(speech)
            if k:
                gap_s = rng.uniform(*PHRASE_PAUSE_RANGE_S)
            else:
                gap_s = LEAD_IN_S if i == 0 else rng.uniform(*PAUSE_RANGE_S)
            gap = round(gap_s * rate)
            pieces.append(np.zeros(gap, dtype=np.float32))
            cursor += gap
            if not k:
                spans.append((cursor, cursor))
            pieces.append(speech)
            cursor += speech.size
            spans[-1] = (spans[-1][0], cursor)
    pieces.append(np.zeros(round(TAIL_S * rate), dtype=np.float32))
    audio = np.concatenate(pieces)
    noise_rms = 10.0 ** (NOISE_DBFS / 20.0)
    noise = np.random.default_rng(seed).standard_normal(audio.size).astype(np.float32)
    audio = audio + noise * np.float32(noise_rms)
    cues, first = [], 0
    for size in cue_sizes(video):
        group = slice(first, first + size)
        start, end = spans[group][0][0], spans[group][-1][1]
        cues.append(Cue(start / rate, end / rate, " ".join(sentences[group])))
        first += size
    return audio, rate, cues


def jitter(cues: list[Cue], seed: int, duration_s: float) -> list[Cue]:
    """Cues as an uploader might time them: ``JITTER_SHARE`` of the edges moved by up to
    ``JITTER_S`` either way (seeded), never before the previous cue's end or past the audio."""
    rng = random.Random(f"{seed}:jitter")
    moved: list[Cue] = []
    for cue in cues:
        start, end = (
            edge + (rng.uniform(-JITTER_S, JITTER_S) if rng.random() < JITTER_SHARE else 0.0)
            for edge in (cue.start_s, cue.end_s)
        )
        start = max(start, moved[-1].end_s if moved else 0.0)
        moved.append(Cue(start, min(end, duration_s), cue.text))
    return moved


def vtt_timestamp(seconds: float) -> str:
    """Format seconds as a WebVTT ``HH:MM:SS.mmm`` timestamp."""
    ms = round(seconds * 1000)
    hours, ms = divmod(ms, 3_600_000)
    minutes, ms = divmod(ms, 60_000)
    secs, ms = divmod(ms, 1000)
    return f"{hours:02d}:{minutes:02d}:{secs:02d}.{ms:03d}"


def render_vtt(cues: list[Cue]) -> str:
    """Render cues as a WebVTT document."""
    blocks = ["WEBVTT", ""]
    for cue in cues:
        blocks += [f"{vtt_timestamp(cue.start_s)} --> {vtt_timestamp(cue.end_s)}", cue.text, ""]
    return "\n".join(blocks)


def encode(master: Path, out: Path, fmt: Format, duration_s: float) -> None:
    """Encode the master WAV into ``out`` with the container/codec settings of ``fmt``."""
    cmd = [ffmpeg_exe(), "-nostdin", "-hide_banner", "-loglevel", "error", "-y"]
    if fmt.video:
        cmd += ["-f", "lavfi", "-i", f"color=c=0x2f6f8f:s=160x90:r=2:d={duration_s:.3f}"]
    cmd += ["-i", str(master)]
    if fmt.video:
        cmd += [
            "-map", "0:v", "-map", "1:a",
            "-c:v", "libx264", "-preset", "medium", "-tune", "stillimage", "-crf", "30",
            "-pix_fmt", "yuv420p", "-threads", "1", "-x264-params", "threads=1",
            "-flags:v", "+bitexact",
            # x264's lookahead holds video back for many seconds at 2 fps; without this the
            # muxer's interleaving (and so the file bytes) depends on thread timing.
            "-max_interleave_delta", "0",
        ]  # fmt: skip
    cmd += [
        "-af", f"aresample={fmt.rate}:resampler=soxr",
        "-ar", str(fmt.rate), "-ac", str(fmt.channels),
        *fmt.audio_args, *FFMPEG_COMMON,
        "-t", f"{duration_s:.3f}", str(out),
    ]  # fmt: skip
    LOG.debug("running %s", " ".join(cmd))
    subprocess.run(cmd, check=True)


def make_video(video: dict[str, object], index: int, out_dir: Path, work: Path) -> dict[str, str]:
    """Build one media file and its ``.en.vtt`` sidecar; return a summary row."""
    stem = str(video["stem"])
    fmt = FORMATS[str(video["format"])]
    audio, rate, exact = build_timeline(video, SEED + index, work)
    duration_s = audio.size / rate
    cues = jitter(exact, SEED + index, duration_s)
    if not MIN_DURATION_S <= duration_s <= MAX_DURATION_S:
        raise ValueError(f"{stem}: duration {duration_s:.1f} s outside the allowed range")
    master = work / f"{stem}.wav"
    write_wav_mono(master, audio, rate)
    media = out_dir / f"{stem}.{fmt.ext}"
    encode(master, media, fmt, duration_s)
    (out_dir / f"{stem}.en.vtt").write_text(render_vtt(cues), encoding="utf-8", newline="\n")
    voices = ", ".join(dict.fromkeys(sentence_voices(video)))
    LOG.info("%s: %.2f s, %d cues, %d bytes", media.name, duration_s, len(cues),
             media.stat().st_size)  # fmt: skip
    return {
        "file": media.name,
        "title": str(video["title"]),
        "duration": f"{duration_s:.1f} s",
        "voices": voices,
        "speed": f"{video['speed']} wpm",
        "sentences": str(len(video["sentences"])),  # type: ignore[arg-type]
        "cues": str(len(cues)),
        "format": fmt.description,
        "size": f"{media.stat().st_size / 1024:.0f} KiB",
    }


def render_readme(rows: list[dict[str, str]], espeak: str) -> str:
    """The ``data/sample/README.md`` text describing the generated corpus."""
    table = [
        "| file | topic | duration | voice(s) | speed | sentences | cues | size |",
        "|---|---|---|---|---|---|---|---|",
    ]
    table += [
        f"| `{r['file']}` | {r['title']} | {r['duration']} | {r['voices']} | {r['speed']} "
        f"| {r['sentences']} | {r['cues']} | {r['size']} |"
        for r in rows
    ]
    formats = [f"- `{r['file']}`: {r['format']}" for r in rows]
    return "\n".join(
        [
            "# Sample corpus",
            "",
            "A tiny, self-contained stand-in for speech downloaded from the web, used by the",
            'tests and the demo pipeline run. Five short "videos" of English speech were',
            "synthesised with espeak-ng from hand-written sentences and encoded into the",
            "containers a yt-dlp download typically yields. Each media file has a yt-dlp style",
            "`<stem>.en.vtt` subtitle with the true text. As in real uploads, a cue holds one to",
            "three sentences, so pauses fall inside cues as well as between them, and cue times",
            "are not exact: they are computed from sample counts (espeak's own leading and",
            f"trailing silence trimmed), then {JITTER_SHARE:.0%} of the cue edges are moved by up "
            f"to {JITTER_S * 1000:.0f} ms,",
            "early or late (seeded pseudo-random).",
            "",
            *table,
            "",
            "Containers and rates:",
            "",
            *formats,
            "",
            "Sentences are synthesised phrase by phrase (split at commas), with pauses of "
            f"{PHRASE_PAUSE_RANGE_S[0]}-{PHRASE_PAUSE_RANGE_S[1]} s",
            f"at commas and {PAUSE_RANGE_S[0]}-{PAUSE_RANGE_S[1]} s between sentences "
            f"(seeded pseudo-random), with {LEAD_IN_S} s of lead-in",
            f"and {TAIL_S} s of tail; white noise at {NOISE_DBFS:.0f} dBFS RMS lies under "
            "everything so no file is digitally silent.",
            "`bicycle-repair` is an interview: host and mechanic use different voices.",
            "",
            f"Generated with {espeak} and the ffmpeg shipped by `imageio-ffmpeg`.",
            "",
            "## Licence",
            "",
            "Generated by this project; the text, audio and subtitles are dedicated to the public",
            "domain under [CC0 1.0](https://creativecommons.org/publicdomain/zero/1.0/).",
            "",
            "## Rebuilding",
            "",
            "```sh",
            "python scripts/make_sample.py",
            "```",
            "",
            "Needs espeak-ng on the PATH and the `imageio-ffmpeg` package; the output is",
            "deterministic for a given espeak-ng and ffmpeg build.",
            "",
        ]
    )


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    """Command-line options."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out-dir", type=Path, default=DEFAULT_OUT_DIR,
                        help="where to write the corpus (default: %(default)s)")  # fmt: skip
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    """Rebuild the whole sample corpus into ``--out-dir``."""
    args = parse_args(argv)
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.INFO,
                        format="%(levelname)s %(name)s: %(message)s")  # fmt: skip
    if shutil.which("espeak-ng") is None:
        LOG.error("espeak-ng not found on PATH")
        return 1
    espeak = espeak_version()
    LOG.info("using %s", espeak)
    out_dir: Path = args.out_dir
    out_dir.mkdir(parents=True, exist_ok=True)
    rows = []
    with tempfile.TemporaryDirectory(prefix="make_sample.") as tmp:
        for index, video in enumerate(VIDEOS):
            rows.append(make_video(video, index, out_dir, Path(tmp)))
    readme = render_readme(rows, " ".join(espeak.split("Data at:")[0].split()))
    (out_dir / "README.md").write_text(readme, encoding="utf-8", newline="\n")
    total = sum(p.stat().st_size for p in out_dir.iterdir() if p.is_file())
    print(f"wrote {len(rows)} media files to {out_dir} ({total / 1024:.0f} KiB in total)")
    for row in rows:
        print(f"  {row['file']:<22} {row['duration']:>8} {row['size']:>9}  {row['voices']}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
