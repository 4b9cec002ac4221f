"""Probe, extract, resample and load audio; the only module that runs ffmpeg.

ffmpeg is always the static binary shipped by ``imageio-ffmpeg``: users have no ``ffprobe``,
so files are probed by parsing what ``ffmpeg -i FILE`` prints. Each stage step is one ffmpeg
process per item, never one per chunk, and ffmpeg streams: no stage holds a whole file.

- convert: stream-copy the first audio track into an audio-only Matroska file (bit-exact,
  source rate; FLAC when the codec cannot be copied). Copying reads every packet, so a
  truncated download ("partial file", broken container) is caught here, almost for free.
- resample: one ffmpeg pass to 16 kHz mono 16-bit WAV (mean of the channels, soxr). This
  pass decodes everything anyway, so it is also the decodability check: no audio decoded, or
  decoder errors with audio missing, fail the item with the reason. Silero VAD then scores
  the WAV (tubetune.vad, on every core) and the scores are stored for the segment stage.
- load: float32 mono in [-1, 1], reading only the requested span.

Why not decode in convert too: a decode-to-null check there costs as much as the resample
itself (1.6-1.7x the one-pass floor in total). Split as above, convert+resample stay within
1.5x of a single ffmpeg decode to 16 kHz (see benchmarks/prep.py), every bad file is still
reported with a clear reason in the stage's report.json, and no bad file stops a stage.
"""

from __future__ import annotations

import functools
import logging
import math
import re
import subprocess
from dataclasses import dataclass
from pathlib import Path

import imageio_ffmpeg
import numpy as np
import pandas as pd
import soundfile as sf
from tqdm import tqdm

from tubetune.constants import SAMPLE_RATE
from tubetune.errors import TubetuneError
from tubetune.fsutil import atomic_path, atomic_write_text
from tubetune.items import ItemReport, StageError
from tubetune.vad import level_dbfs, save_scores, score_file, scores_path

log = logging.getLogger(__name__)

AUDIO_CSV = "audio.csv"
REPORT_JSON = "report.json"
CONVERTED_COLUMNS = ["item", "path", "duration_s", "sample_rate", "channels", "codec"]
RESAMPLED_COLUMNS = [*CONVERTED_COLUMNS, "rms_dbfs", "near_silent"]
NEAR_SILENT_DBFS = -60.0
"""RMS level below which a resampled file is flagged ``near_silent`` (kept, not dropped)."""

_SOUNDFILE_FORMATS = {"WAV", "WAVEX", "FLAC"}
_TRUNCATION_TOLERANCE_S = 1.0
_TRUNCATION_TOLERANCE_FRACTION = 0.01
_MAX_REASON_CHARS = 300

_DURATION_RE = re.compile(r"^\s*Duration: (?:N/A|(\d+):(\d+):(\d+(?:\.\d+)?))", re.MULTILINE)
_AUDIO_STREAM_RE = re.compile(r"^\s*Stream #0:\d+\S*: Audio: (.+)$", re.MULTILINE)
_RATE_RE = re.compile(r"^(\d+) Hz$")
_N_CHANNELS_RE = re.compile(r"^(\d+) channels\b")
_LOG_PREFIX_RE = re.compile(r"^(?:\[[^\]]*\]\s*)+")
_WRAPPER_RE = re.compile(r"^Error opening input(?: files)?: ")
_OUT_TIME_RE = re.compile(r"^out_time_us=(\d+)$", re.MULTILINE)


class MediaError(TubetuneError):
    """A media file cannot be used; the message is a one-line human reason."""


@dataclass(frozen=True)
class AudioInfo:
    """What a stage needs to know about one audio track."""

    duration_s: float
    sample_rate: int
    channels: int
    codec: str


@functools.cache
def ffmpeg_exe() -> str:
    """Path of the static ffmpeg binary shipped by imageio-ffmpeg."""
    return imageio_ffmpeg.get_ffmpeg_exe()


def _ffmpeg(args: list[str | Path]) -> subprocess.CompletedProcess[bytes]:
    """Run ffmpeg (no stdin, no banner, overwrite) and capture its output; never raises."""
    cmd = [ffmpeg_exe(), "-hide_banner", "-nostdin", "-y", *map(str, args)]
    return subprocess.run(cmd, capture_output=True, check=False)


def _error_lines(stderr: bytes, *paths: Path) -> list[str]:
    """Distinct ffmpeg error lines, without what varies between runs or repeats itself.

    Drops ``[ctx @ 0x...]`` prefixes, the "Error opening input" wrappers and lines naming our
    paths (temp names), so the same bad input always gives the same reason.
    """
    names = [str(p) for p in paths]
    lines: list[str] = []
    for raw in stderr.decode("utf-8", "replace").splitlines():
        line = _WRAPPER_RE.sub("", _LOG_PREFIX_RE.sub("", raw)).strip()
        if (
            line
            and line not in lines
            and "detected only with low score" not in line
            and not any(name in line for name in names)
        ):
            lines.append(line)
    return lines


def _reason(lines: list[str]) -> str:
    """Condense error lines to one short reason: the first (cause) and the last (effect)."""
    picked = lines[:1] + [line for line in lines[-1:] if line not in lines[:1]]
    return ("; ".join(picked) or "ffmpeg failed without a message")[:_MAX_REASON_CHARS]


@functools.cache
def _layout_channels() -> dict[str, int]:
    """Channel count of every standard layout name, read from ``ffmpeg -layouts``."""
    out = _ffmpeg(["-layouts"]).stdout.decode("utf-8", "replace")
    table = out.split("Standard channel layouts:", 1)[-1]
    counts: dict[str, int] = {}
    for line in table.splitlines():
        parts = line.split()
        if len(parts) == 2 and parts[0] != "NAME":
            counts[parts[0]] = len(parts[1].split("+"))
    return counts


def _channels(layout: str) -> int:
    """Channels of a layout as ffmpeg prints it: ``stereo``, ``5.1(side)``, ``3 channels``."""
    if match := _N_CHANNELS_RE.match(layout):
        return int(match.group(1))
    count = _layout_channels().get(layout)
    if count is None:
        raise MediaError(f"cannot decode: unknown channel layout {layout!r}")
    return count


def probe(path: Path) -> AudioInfo:
    """Describe the first audio stream of a media file using only ``ffmpeg -i``.

    ``duration_s`` is what the container declares (0.0 when it declares none).
    Raises MediaError with ``"empty file"``, ``"no audio stream"`` or ``"cannot decode: ..."``.
    """
    path = Path(path)
    if not path.is_file():
        raise MediaError(f"file not found: {path.name}")
    if path.stat().st_size == 0:
        raise MediaError("empty file")
    result = _ffmpeg(["-i", path])
    stderr = result.stderr.decode("utf-8", "replace")
    if "Input #0" not in stderr:
        raise MediaError(f"cannot decode: {_reason(_error_lines(result.stderr, path))}")
    stream = _AUDIO_STREAM_RE.search(stderr)
    if stream is None:
        # Logged problems (e.g. "partial file") say why a truncated file lost its audio track.
        logged = b"\n".join(line for line in result.stderr.splitlines() if line.startswith(b"["))
        problems = _error_lines(logged, path)
        raise MediaError("no audio stream" + (f" ({_reason(problems)})" if problems else ""))
    fields = [f.strip() for f in stream.group(1).split(",")]
    codec = fields[0].split()[0]
    rate_at = next((i for i, f in enumerate(fields) if _RATE_RE.match(f)), None)
    if rate_at is None or rate_at + 1 >= len(fields):
        raise MediaError(f"cannot decode: audio stream without rate or layout ({stream.group(1)})")
    sample_rate = int(fields[rate_at].split()[0])
    channels = _channels(fields[rate_at + 1])
    if sample_rate <= 0 or channels <= 0:
        raise MediaError(f"cannot decode: audio stream has {sample_rate} Hz, {channels} channels")
    duration_s = 0.0
    if (match := _DURATION_RE.search(stderr)) and match.group(1) is not None:
        hours, minutes, seconds = match.groups()
        duration_s = int(hours) * 3600 + int(minutes) * 60 + float(seconds)
    return AudioInfo(duration_s, sample_rate, channels, codec)


def _out_time_s(result: subprocess.CompletedProcess[bytes]) -> float:
    """Seconds of media ffmpeg wrote, from its ``-progress pipe:1`` report (0.0 if none)."""
    times = _OUT_TIME_RE.findall(result.stdout.decode("ascii", "replace"))
    return int(times[-1]) / 1e6 if times else 0.0


def _check_complete(
    name: str, verb: str, got_s: float, declared_s: float, errors: list[str]
) -> None:
    """Reject audio that did not come through whole; log lesser errors and keep the file.

    MediaError when nothing came through, or when errors left it well short of
    ``declared_s`` (a truncated or corrupt file).
    """
    if got_s <= 0.0:
        detail = f" ({_reason(errors)})" if errors else ""
        raise MediaError(f"cannot decode: no audio data{detail}")
    tolerance = max(_TRUNCATION_TOLERANCE_S, _TRUNCATION_TOLERANCE_FRACTION * declared_s)
    if errors and declared_s - got_s > tolerance:
        raise MediaError(
            f"truncated or corrupt: {verb} {got_s:.1f} s of the {declared_s:.1f} s "
            f"declared ({_reason(errors)})"
        )
    if errors:
        log.warning("%s: %s with errors, kept: %s", name, verb, _reason(errors))


# Output options: audio only, no metadata or chapters, no version strings (stable bytes).
# fmt: off
_CLEAN_OUTPUT = [
    "-vn", "-sn", "-dn", "-map_metadata", "-1", "-map_chapters", "-1",
    "-fflags", "+bitexact", "-flags:a", "+bitexact",
]
# fmt: on


def extract_audio(src: Path, dst: Path) -> AudioInfo:
    """Store the first audio track of ``src`` at its own rate, losslessly, as Matroska ``dst``.

    Stream copy is bit-exact and costs almost nothing; codecs Matroska cannot carry are
    re-encoded to FLAC. Raises MediaError when the track cannot be read, or when the copy
    stops well short of the container's declared duration with errors (a truncated
    download). Decoding is checked by resample_to_wav. Returns the stored track's info.
    """
    src, dst = Path(src), Path(dst)
    info = probe(src)
    with atomic_path(dst) as tmp:
        codec = info.codec
        head = ["-v", "error", "-progress", "pipe:1", "-nostats", "-i", src, "-map", "0:a:0"]
        head += _CLEAN_OUTPUT
        result = _ffmpeg([*head, "-c:a", "copy", "-f", "matroska", tmp])
        if result.returncode != 0:
            log.warning(
                "%s: %s cannot be stream-copied into Matroska (%s); storing FLAC",
                src.name,
                codec,
                _reason(_error_lines(result.stderr, src, tmp)),
            )
            result = _ffmpeg([*head, "-c:a", "flac", "-f", "matroska", tmp])
            codec = "flac"
            if result.returncode != 0:
                raise MediaError(f"cannot decode: {_reason(_error_lines(result.stderr, src, tmp))}")
        stored_s = _out_time_s(result)
        errors = _error_lines(result.stderr, src, tmp)
        _check_complete(src.name, "copied", stored_s, info.duration_s, errors)
    return AudioInfo(round(stored_s, 3), info.sample_rate, info.channels, codec)


def _to_mono_at(channels: int, sample_rate: int) -> str:
    """ffmpeg filter chain: mean of all channels, then soxr resampling to ``sample_rate``."""
    chain = [f"aresample={sample_rate}:resampler=soxr"]
    if channels > 1:
        # '<' renormalises the gains to sum to 1: every channel weighs exactly 1/N (no
        # ffmpeg surround matrix, which would drop LFE and favour the centre).
        chain.insert(0, "pan=mono|c0<" + "+".join(f"c{i}" for i in range(channels)))
    return ",".join(chain)


def resample_to_wav(src: Path, dst: Path, sample_rate: int = SAMPLE_RATE) -> AudioInfo:
    """Write the first audio track of ``src`` as mono 16-bit PCM WAV at ``sample_rate``.

    One ffmpeg pass: downmix (mean of channels), soxr resampling, s16 output, no metadata,
    bit-exact headers so reruns give identical bytes. This is the pass that proves the audio
    decodes: MediaError when nothing decodes, or when decoder errors leave the output well
    short of the declared duration; other decoder errors are logged and the file kept.
    """
    src, dst = Path(src), Path(dst)
    info = probe(src)
    with atomic_path(dst) as tmp:
        to_wav = ["-af", _to_mono_at(info.channels, sample_rate), "-c:a", "pcm_s16le", "-f", "wav"]
        result = _ffmpeg(["-v", "error", "-i", src, "-map", "0:a:0", *_CLEAN_OUTPUT, *to_wav, tmp])
        errors = _error_lines(result.stderr, src, tmp)
        if result.returncode != 0:
            raise MediaError(f"cannot decode: {_reason(errors)}")
        decoded_s = sf.info(str(tmp)).frames / sample_rate
        _check_complete(src.name, "decoded", decoded_s, info.duration_s, errors)
    return AudioInfo(round(decoded_s, 3), sample_rate, 1, "pcm_s16le")


def load_audio(
    path: Path, start_s: float = 0.0, duration_s: float | None = None,
    sample_rate: int = SAMPLE_RATE,
) -> np.ndarray:
    """Float32 mono samples in [-1, 1] at ``sample_rate``, only of the requested span.

    WAV/FLAC already at ``sample_rate`` are read with soundfile (int16 16384 -> 0.5 exactly);
    anything else goes through one ffmpeg pipe (mean of channels, soxr). Never returns raw
    integers: Whisper's feature extractor expects this scale.
    """
    path = Path(path)
    try:
        info = sf.info(str(path))
    except sf.SoundFileError:  # not a format libsndfile knows: ffmpeg will read it
        info = None
    if info is not None and info.format in _SOUNDFILE_FORMATS and info.samplerate == sample_rate:
        with sf.SoundFile(str(path)) as fh:
            fh.seek(min(round(start_s * sample_rate), fh.frames))
            frames = -1 if duration_s is None else round(duration_s * sample_rate)
            samples = fh.read(frames, dtype="float32", always_2d=True)
        mono = samples.mean(axis=1, dtype=np.float32) if samples.shape[1] > 1 else samples[:, 0]
    else:
        channels = probe(path).channels
        span = ["-ss", f"{start_s:.6f}"] if start_s > 0 else []
        if duration_s is not None:
            span += ["-t", f"{duration_s:.6f}"]
        to_f32 = ["-af", _to_mono_at(channels, sample_rate), "-c:a", "pcm_f32le", "-f", "f32le"]
        result = _ffmpeg(["-v", "error", *span, "-i", path, "-map", "0:a:0", *to_f32, "-"])
        if result.returncode != 0:
            raise MediaError(f"cannot decode: {_reason(_error_lines(result.stderr, path))}")
        mono = np.frombuffer(result.stdout, dtype="<f4").astype(np.float32)
        if duration_s is not None:  # ffmpeg cuts the input at its own frame boundaries
            mono = mono[: round(duration_s * sample_rate)]
    return np.clip(mono, -1.0, 1.0)


def rms_dbfs(path: Path, block_s: float = 60.0) -> float:
    """RMS level of a soundfile-readable file in dB relative to full scale, read in blocks.

    A full-scale square wave is 0 dBFS, a full-scale sine about -3 dBFS, digital silence -inf.
    """
    total = 0.0
    count = 0
    with sf.SoundFile(str(Path(path))) as fh:
        blocksize = max(1, round(block_s * fh.samplerate))
        for block in fh.blocks(blocksize=blocksize, dtype="float64", always_2d=True):
            total += float(np.einsum("ij,ij->", block, block))
            count += block.size
    if total == 0.0:
        return float("-inf")
    return 10.0 * math.log10(total / count)


def read_table(path: Path, columns: list[str]) -> pd.DataFrame:
    """Read a stage's input CSV as strings sorted by item; StageError if absent or incomplete."""
    if not path.is_file():
        raise StageError(f"missing input table {path}")
    table = pd.read_csv(path, dtype=str, keep_default_na=False)
    missing = [c for c in columns if c not in table.columns]
    if missing:
        raise StageError(f"{path}: missing column(s) {', '.join(missing)}")
    return table.sort_values("item", kind="stable")


def _write_table(path: Path, rows: list[dict[str, object]], columns: list[str]) -> None:
    """Write rows sorted by item as CSV (stable bytes for identical content)."""
    table = pd.DataFrame(rows, columns=columns).sort_values("item", kind="stable")
    atomic_write_text(path, table.to_csv(index=False, lineterminator="\n"))


def _row(item: str, path: str, info: AudioInfo) -> dict[str, object]:
    return {
        "item": item,
        "path": path,
        "duration_s": info.duration_s,
        "sample_rate": info.sample_rate,
        "channels": info.channels,
        "codec": info.codec,
    }


def convert_source(raw_dir: Path, out_dir: Path, source: str) -> ItemReport:
    """Convert stage for one source: ``<item>.mka`` per manifest item plus ``audio.csv``.

    ``out_dir`` is replaced as a whole when the stage succeeds (no stale items from an older
    run). Bad items are recorded in ``report.json`` with their reason; the stage raises
    StageError only when nothing converted.
    """
    raw_dir, out_dir = Path(raw_dir), Path(out_dir)
    manifest = read_table(raw_dir / "manifest.csv", ["item", "media"])
    report = ItemReport("convert", source)
    rows: list[dict[str, object]] = []
    with atomic_path(out_dir) as tmp_dir:
        tmp_dir.mkdir()
        for item, media in tqdm(
            list(zip(manifest["item"], manifest["media"], strict=True)),
            desc=f"convert {source}",
            unit="item",
            disable=None,
        ):
            name = f"{item}.mka"
            try:
                if not media:
                    raise MediaError("no media file in the manifest")
                info = extract_audio(raw_dir / media, tmp_dir / name)
            except MediaError as exc:
                report.fail(item, str(exc))
                continue
            rows.append(_row(item, name, info))
            report.ok.append(item)
        _write_table(tmp_dir / AUDIO_CSV, rows, CONVERTED_COLUMNS)
        report.write(tmp_dir / REPORT_JSON)
    report.finish()
    return report


def resample_source(
    converted_dir: Path, out_dir: Path, source: str, sample_rate: int = SAMPLE_RATE,
    score_speech: bool = True,
) -> ItemReport:
    """Resample stage for one source: ``<item>.wav`` (mono s16), ``<item>.vad.npy`` (Silero
    speech scores when ``score_speech``, so re-segmenting never reruns the model) plus
    ``audio.csv``.

    Adds each file's RMS level; files under NEAR_SILENT_DBFS are flagged ``near_silent`` and
    logged, but kept (a later stage or a person decides).
    """
    converted_dir, out_dir = Path(converted_dir), Path(out_dir)
    table = read_table(converted_dir / AUDIO_CSV, ["item", "path"])
    report = ItemReport("resample", source)
    rows: list[dict[str, object]] = []
    with atomic_path(out_dir) as tmp_dir:
        tmp_dir.mkdir()
        for item, path in tqdm(
            list(zip(table["item"], table["path"], strict=True)),
            desc=f"resample {source}",
            unit="item",
            disable=None,
        ):
            name = f"{item}.wav"
            try:
                info = resample_to_wav(converted_dir / path, tmp_dir / name, sample_rate)
            except MediaError as exc:
                report.fail(item, str(exc))
                continue
            if score_speech and sample_rate == SAMPLE_RATE:
                scores = score_file(tmp_dir / name)
                save_scores(scores_path(tmp_dir / name), scores)
                level = round(level_dbfs(scores, sf.info(str(tmp_dir / name)).frames), 2)
            else:
                level = round(rms_dbfs(tmp_dir / name), 2)
            near_silent = level < NEAR_SILENT_DBFS
            if near_silent:
                log.warning(
                    "resample %s: %s is near-silent (%.1f dBFS < %.0f dBFS); flagged, kept",
                    source,
                    item,
                    level,
                    NEAR_SILENT_DBFS,
                )
            rows.append({**_row(item, name, info), "rms_dbfs": level, "near_silent": near_silent})
            report.ok.append(item)
        _write_table(tmp_dir / AUDIO_CSV, rows, RESAMPLED_COLUMNS)
        report.write(tmp_dir / REPORT_JSON)
    report.finish()
    return report
