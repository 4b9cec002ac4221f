"""Tests of tubetune.audio: probing, extraction, resampling, loading, and the two stages.

Inputs are generated at test time with the same static ffmpeg the pipeline uses.
"""

from __future__ import annotations

import json
import logging
import math
import subprocess
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import soundfile as sf

from tubetune import audio, vad
from tubetune.audio import AudioInfo, MediaError
from tubetune.fsutil import sha256_file

SIX_CHANNEL_LEVELS = (0.1, 0.2, 0.3, 0.4, 0.5, 0.6)


def ffmpeg(*args: str | Path) -> None:
    """Run the pipeline's ffmpeg to make a test input."""
    cmd = [audio.ffmpeg_exe(), "-hide_banner", "-nostdin", "-v", "error", "-y", *map(str, args)]
    subprocess.run(cmd, check=True)


def lavfi(spec: str) -> list[str]:
    return ["-f", "lavfi", "-i", spec]


def sine(seconds: float, rate: int = 44100) -> list[str]:
    return lavfi(f"sine=f=440:r={rate}:d={seconds}")


def video(seconds: float) -> list[str]:
    return lavfi(f"color=c=blue:s=64x64:r=5:d={seconds}")


@pytest.fixture(scope="module")
def media(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """One small file per case, made once for the module, by file name."""
    d = tmp_path_factory.mktemp("media")
    av = ["-ac", "2", "-c:a", "aac", "-c:v", "libx264", "-shortest", "-movflags", "+faststart"]
    ffmpeg(*sine(3), *video(3), *av, d / "av.mp4")
    ffmpeg(*sine(10), *video(10), *av, d / "long.mp4")
    ffmpeg(*sine(2, 48000), "-c:a", "libopus", d / "audio.webm")
    ffmpeg(*sine(2), "-ac", "2", "-c:a", "libmp3lame", d / "audio.mp3")
    ffmpeg(*sine(2, 8000), "-c:a", "pcm_s16le", d / "mono8k.wav")
    levels = "|".join(map(str, SIX_CHANNEL_LEVELS))  # one constant per channel of 5.1
    ffmpeg(*lavfi(f"aevalsrc={levels}:s=96000:c=5.1:d=2"), "-c:a", "flac", d / "six.mka")
    ffmpeg(*video(2), "-c:v", "libx264", d / "video.mp4")
    ffmpeg(*lavfi("anullsrc=r=44100:cl=stereo"), "-t", "2", "-c:a", "aac", d / "silence.m4a")
    ffmpeg(*sine(2, 22050), "-c:a", "adpcm_ima_qt", d / "adpcm.mov")  # Matroska can't hold it
    (d / "empty.mp4").write_bytes(b"")
    ffmpeg(*sine(1), "-t", "0", "-c:a", "pcm_s16le", d / "no-samples.wav")  # no samples
    (d / "random.bin").write_bytes(np.random.default_rng(0).bytes(20000))
    long_bytes = (d / "long.mp4").read_bytes()  # moov first (faststart): cut the media data
    (d / "truncated.mp4").write_bytes(long_bytes[: len(long_bytes) * 4 // 10])
    ffmpeg("-i", d / "long.mp4", "-map", "0:a", "-c:a", "copy", d / "long.mka")
    garbled = bytearray((d / "long.mka").read_bytes())  # packets garbled from 25 % to 75 %
    quarter = len(garbled) // 4
    garbled[quarter : 3 * quarter] = np.random.default_rng(1).bytes(2 * quarter)
    (d / "garbled.mka").write_bytes(bytes(garbled))
    return {p.name: p for p in d.iterdir()}


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        ("av.mp4", AudioInfo(3.0, 44100, 2, "aac")),
        ("audio.webm", AudioInfo(2.0, 48000, 1, "opus")),
        ("audio.mp3", AudioInfo(2.0, 44100, 2, "mp3")),
        ("mono8k.wav", AudioInfo(2.0, 8000, 1, "pcm_s16le")),
        ("six.mka", AudioInfo(2.0, 96000, 6, "flac")),
    ],
)
def test_probe_reads_rate_channels_codec(media: dict[str, Path], name: str, expected: AudioInfo):
    info = audio.probe(media[name])
    assert (info.sample_rate, info.channels, info.codec) == (
        expected.sample_rate,
        expected.channels,
        expected.codec,
    )
    assert info.duration_s == pytest.approx(expected.duration_s, abs=0.1)


@pytest.mark.parametrize(
    ("name", "reason"),
    [
        ("video.mp4", "no audio stream"),
        ("empty.mp4", "empty file"),
        ("random.bin", "cannot decode: "),
        ("missing.mp4", "file not found"),
    ],
)
def test_probe_rejects_unusable_files(media: dict[str, Path], name: str, reason: str):
    path = media.get(name, media["av.mp4"].with_name(name))
    with pytest.raises(MediaError, match=f"^{reason}"):
        audio.probe(path)


def test_extract_is_a_bit_exact_stream_copy(media: dict[str, Path], tmp_path: Path):
    dst = tmp_path / "av.mka"
    info = audio.extract_audio(media["av.mp4"], dst)
    assert info == AudioInfo(3.0, 44100, 2, "aac")
    assert audio.probe(dst).codec == "aac"
    original = audio.load_audio(media["av.mp4"], sample_rate=44100)
    np.testing.assert_array_equal(audio.load_audio(dst, sample_rate=44100), original)


def test_extract_falls_back_to_flac_losslessly(media: dict[str, Path], tmp_path: Path):
    dst = tmp_path / "adpcm.mka"
    info = audio.extract_audio(media["adpcm.mov"], dst)
    assert (info.codec, info.sample_rate, info.channels) == ("flac", 22050, 1)
    assert audio.probe(dst).codec == "flac"
    original = audio.load_audio(media["adpcm.mov"], sample_rate=22050)
    np.testing.assert_array_equal(audio.load_audio(dst, sample_rate=22050), original)


@pytest.mark.parametrize(
    ("name", "reason"),
    [
        ("truncated.mp4", r"truncated or corrupt: copied \d+\.\d s of the 10\.0 s declared \(.+"),
        ("video.mp4", "no audio stream"),
        ("random.bin", "cannot decode: .+"),
        ("empty.mp4", "empty file"),
        ("no-samples.wav", "cannot decode: no audio data"),
    ],
)
def test_extract_rejects_with_a_clear_reason(
    media: dict[str, Path], tmp_path: Path, name: str, reason: str
):
    dst = tmp_path / "out.mka"
    with pytest.raises(MediaError, match=f"^{reason}$"):
        audio.extract_audio(media[name], dst)
    assert not dst.exists()
    assert list(tmp_path.iterdir()) == []  # no temp leftovers


def test_resample_rejects_audio_that_does_not_decode(media: dict[str, Path], tmp_path: Path):
    # convert copies these packets (with a warning): the resample pass proves decoding and
    # fails the item with a reason.
    dst = tmp_path / "out.wav"
    reason = r"truncated or corrupt: decoded \d+\.\d s of the 10\.0\d? s declared \(.+\)"
    with pytest.raises(MediaError, match=f"^{reason}$"):
        audio.resample_to_wav(media["garbled.mka"], dst)
    assert list(tmp_path.iterdir()) == []


def test_resample_downmixes_six_channels_to_their_mean(media: dict[str, Path], tmp_path: Path):
    dst = tmp_path / "six.wav"
    info = audio.resample_to_wav(media["six.mka"], dst)
    assert info == AudioInfo(2.0, 16000, 1, "pcm_s16le")
    samples, rate = sf.read(dst, dtype="int16")
    assert rate == 16000 and samples.ndim == 1
    expected = round(np.mean(SIX_CHANNEL_LEVELS) * 32768)  # 0.35 -> 11469
    steady = samples[1000:-1000]  # away from the resampler's edge transients
    assert np.abs(steady.astype(int) - expected).max() <= 1


@pytest.mark.parametrize("name", ["mono8k.wav", "audio.webm", "av.mp4"])
def test_resample_any_rate_to_16k_mono_s16(media: dict[str, Path], tmp_path: Path, name: str):
    dst = tmp_path / "out.wav"
    info = audio.resample_to_wav(media[name], dst)
    sfinfo = sf.info(dst)
    assert (sfinfo.samplerate, sfinfo.channels, sfinfo.subtype) == (16000, 1, "PCM_16")
    assert info.duration_s == pytest.approx(audio.probe(media[name]).duration_s, abs=0.05)


def test_resample_output_is_deterministic(media: dict[str, Path], tmp_path: Path):
    first, second = tmp_path / "a.wav", tmp_path / "b.wav"
    audio.resample_to_wav(media["av.mp4"], first)
    audio.resample_to_wav(media["av.mp4"], second)
    assert first.read_bytes() == second.read_bytes()
    assert b"LIST" not in first.read_bytes()[:100]  # no encoder tag in the header


def test_load_audio_scales_int16_to_float32(tmp_path: Path):
    values = np.array([16384, -32768, 32767, 0, -16384], dtype=np.int16)
    path = tmp_path / "known.wav"
    sf.write(path, np.tile(values, 3200), 16000, subtype="PCM_16")
    samples = audio.load_audio(path)
    assert samples.dtype == np.float32
    np.testing.assert_array_equal(samples[:5], [0.5, -1.0, 32767 / 32768, 0.0, -0.5])
    span = audio.load_audio(path, start_s=0.5, duration_s=0.25)
    assert len(span) == 4000
    np.testing.assert_array_equal(span[:5], samples[8000:8005])


def test_load_audio_averages_stereo_wav(tmp_path: Path):
    path = tmp_path / "stereo.wav"
    left = np.full(1600, 16384, np.int16)
    sf.write(path, np.stack([left, np.zeros_like(left)], axis=1), 16000, subtype="PCM_16")
    np.testing.assert_array_equal(audio.load_audio(path), np.full(1600, 0.25, np.float32))


def test_load_audio_through_ffmpeg_keeps_scale(tmp_path: Path):
    exact = tmp_path / "half.mka"
    ffmpeg(*lavfi("aevalsrc=0.5:s=16000:d=1"), "-c:a", "pcm_s16le", exact)
    samples = audio.load_audio(exact, start_s=0.25, duration_s=0.5)
    assert samples.dtype == np.float32 and len(samples) == 8000
    np.testing.assert_array_equal(samples, np.full(8000, 0.5, np.float32))
    square = tmp_path / "square.mka"
    full_scale = lavfi("aevalsrc='if(lt(mod(t*50,1),0.5),1,-1)':s=44100:d=1")
    ffmpeg(*full_scale, "-c:a", "pcm_s16le", square)
    samples = audio.load_audio(square)
    assert samples.dtype == np.float32
    assert samples.min() >= -1.0 and samples.max() <= 1.0  # resampler overshoot is clipped
    assert np.abs(samples).mean() > 0.9


def test_rms_dbfs_levels(tmp_path: Path):
    t = np.arange(16000 * 3) / 16000
    cases = {
        "square.wav": (np.where(np.sin(2 * np.pi * 100 * t) >= 0, 1.0, -1.0), 0.0),
        "sine.wav": (0.5 * np.sin(2 * np.pi * 440 * t), 20 * math.log10(0.5 / math.sqrt(2))),
    }
    for name, (signal, expected) in cases.items():
        path = tmp_path / name
        sf.write(path, signal, 16000, subtype="FLOAT")
        assert audio.rms_dbfs(path, block_s=0.7) == pytest.approx(expected, abs=0.01)
        # The resample stage takes the level from the VAD scores' per-window RMS instead.
        level = vad.level_dbfs(vad.score_file(path), len(signal))
        assert level == pytest.approx(audio.rms_dbfs(path), abs=1e-4)
    silent = tmp_path / "silent.wav"
    sf.write(silent, np.zeros(16000), 16000, subtype="PCM_16")
    assert audio.rms_dbfs(silent) == float("-inf")
    assert vad.level_dbfs(vad.score_file(silent), 16000) == float("-inf")


def make_raw_source(media: dict[str, Path], raw_dir: Path, items: dict[str, str]) -> None:
    """A download-stage output: media files plus manifest.csv."""
    raw_dir.mkdir(parents=True)
    rows = []
    for item, name in items.items():
        media_name = f"{item}{media[name].suffix}"
        (raw_dir / media_name).write_bytes(media[name].read_bytes())
        rows.append(dict(item=item, media=media_name, language="en", subtitles="", duration_s=0))
    pd.DataFrame(rows).to_csv(raw_dir / "manifest.csv", index=False)


GOOD = {
    "talk-mp4": "av.mp4",
    "talk-webm": "audio.webm",
    "quiet": "silence.m4a",
    "surround": "six.mka",
}
BAD = {
    "broken": "random.bin",
    "cut-short": "truncated.mp4",
    "no-sound": "video.mp4",
    "zero": "empty.mp4",
}

GARBLED = {"garbled": "garbled.mka"}  # container copies, audio does not decode: resample fails it


def run_stages(media: dict[str, Path], root: Path) -> tuple[Path, Path]:
    raw, converted, resampled = root / "raw", root / "converted", root / "resampled"
    make_raw_source(media, raw, {**GOOD, **GARBLED, **BAD})
    audio.convert_source(raw, converted, "src")
    audio.resample_source(converted, resampled, "src")
    return converted, resampled


def test_stages_keep_good_items_and_record_failures(media: dict[str, Path], tmp_path: Path):
    converted, resampled = run_stages(media, tmp_path)
    report = json.loads((converted / "report.json").read_text())
    assert report["ok"] == sorted({**GOOD, **GARBLED})
    reasons = {f["item"]: f["reason"] for f in report["failed"]}
    assert sorted(reasons) == sorted(BAD)
    assert reasons["no-sound"] == "no audio stream"
    assert reasons["zero"] == "empty file"
    assert reasons["broken"].startswith("cannot decode: ")
    assert reasons["cut-short"].startswith("truncated or corrupt: ")

    table = pd.read_csv(converted / "audio.csv")
    assert list(table.columns) == audio.CONVERTED_COLUMNS
    assert list(table["item"]) == sorted({**GOOD, **GARBLED})
    assert sorted(p.name for p in converted.iterdir()) == sorted(
        [f"{item}.mka" for item in {**GOOD, **GARBLED}] + ["audio.csv", "report.json"]
    )
    row = table.set_index("item").loc["surround"]
    assert (row["sample_rate"], row["channels"], row["codec"]) == (96000, 6, "flac")

    report = json.loads((resampled / "report.json").read_text())
    assert report["ok"] == sorted(GOOD)
    assert [f["item"] for f in report["failed"]] == ["garbled"]
    assert report["failed"][0]["reason"].startswith("truncated or corrupt: decoded ")
    table = pd.read_csv(resampled / "audio.csv").set_index("item")
    assert list(table.reset_index().columns) == audio.RESAMPLED_COLUMNS
    assert set(table["sample_rate"]) == {16000} and set(table["channels"]) == {1}
    assert table.loc["quiet", "near_silent"]
    assert table.loc["quiet", "rms_dbfs"] < audio.NEAR_SILENT_DBFS
    assert not table.drop(index="quiet")["near_silent"].any()
    assert table.loc["talk-mp4", "path"] == "talk-mp4.wav"
    assert (resampled / "talk-mp4.wav").is_file()
    # The VAD scores the stage stored equal scores computed afresh from the written WAV.
    assert sorted(p.name for p in resampled.glob("*.vad.npy")) == sorted(
        f"{item}.vad.npy" for item in GOOD)
    for item in GOOD:
        stored = np.load(resampled / f"{item}.vad.npy")
        np.testing.assert_array_equal(stored, vad.score_file(resampled / f"{item}.wav"))


def test_stages_are_byte_for_byte_reproducible(media: dict[str, Path], tmp_path: Path):
    first = run_stages(media, tmp_path / "one")
    second = run_stages(media, tmp_path / "two")
    for a, b in zip(first, second, strict=True):
        hashes_a = {p.name: sha256_file(p) for p in sorted(a.iterdir())}
        hashes_b = {p.name: sha256_file(p) for p in sorted(b.iterdir())}
        assert hashes_a == hashes_b


def test_convert_replaces_stale_output_and_reports_when_nothing_converts(
    media: dict[str, Path], tmp_path: Path, caplog: pytest.LogCaptureFixture
):
    raw, out = tmp_path / "raw", tmp_path / "converted"
    make_raw_source(media, raw, BAD)
    out.mkdir()
    (out / "stale.mka").write_bytes(b"old")
    with caplog.at_level(logging.WARNING):
        report = audio.convert_source(raw, out, "src")  # the source is left out, not fatal
    assert not report.ok and any("nothing usable" in r.message for r in caplog.records)
    assert sorted(p.name for p in out.iterdir()) == ["audio.csv", "report.json"]
    assert len(json.loads((out / "report.json").read_text())["failed"]) == len(BAD)
