"""Tests of tubetune.segment: fixed windows, VAD chunking, chunk files and the segment stage.

Speech for the VAD is synthesised at test time: vowel-like syllables (a pitched sawtooth
shaped by formant resonances) that Silero VAD recognises as speech, separated by silences
at known places.
"""

from __future__ import annotations

import json
from itertools import pairwise
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import soundfile as sf
from faster_whisper.vad import get_vad_model

from tubetune import audio, segment, vad
from tubetune.audio import RESAMPLED_COLUMNS, load_audio
from tubetune.fsutil import sha256_file
from tubetune.segment import Span
from tubetune.subtitles import read_vtt

SAMPLE = Path(__file__).resolve().parents[1] / "data" / "sample"

SR = 16000
VOWEL_FORMANTS = [(730, 1090, 2440), (270, 2290, 3010), (300, 870, 2240), (530, 1840, 2480)]
# (kind, seconds): speech bursts ("b") and silences ("s"); the last burst is longer than max_s.
LAYOUT = [
    ("s", 1.0),
    ("b", 3.0),
    ("s", 0.8),
    ("b", 2.5),
    ("s", 1.5),
    ("b", 4.0),
    ("s", 0.6),
    ("b", 9.0),
    ("s", 3.0),
    ("b", 24.0),
    ("s", 1.0),
]


def babble(seconds: float, seed: int) -> np.ndarray:
    """Vowel-like syllables of 150-300 ms with 20-80 ms between them."""
    rng = np.random.default_rng(seed)
    parts: list[np.ndarray] = []
    total = 0
    while total < seconds * SR:
        n = int(rng.uniform(0.15, 0.3) * SR)
        t = np.arange(n) / SR
        f0 = 120 + 20 * np.sin(2 * np.pi * 2 * t) + rng.uniform(-15, 15)
        pulses = (np.cumsum(f0 / SR) % 1.0) * 2 - 1
        freqs = np.fft.rfftfreq(n, 1 / SR)
        formants = VOWEL_FORMANTS[rng.integers(len(VOWEL_FORMANTS))]
        gain = sum(1 / np.sqrt(1 + ((freqs - f) / 40) ** 2) for f in formants)
        syllable = np.fft.irfft(np.fft.rfft(pulses) * gain, n) * np.sin(np.pi * np.arange(n) / n)
        gap = np.zeros(int(rng.uniform(0.02, 0.08) * SR))
        parts += [0.3 * syllable / np.abs(syllable).max(), gap]
        total += n + len(gap)
    return np.concatenate(parts)[: int(seconds * SR)]


def make_speech(path: Path, layout: list[tuple[str, float]] = LAYOUT) -> list[tuple[int, int]]:
    """Write the layout as 16 kHz mono s16 WAV; return the silences as (start_ms, end_ms)."""
    parts, silences, t_ms = [], [], 0
    for k, (kind, seconds) in enumerate(layout):
        parts.append(babble(seconds, k) if kind == "b" else np.zeros(int(seconds * SR)))
        if kind == "s":
            silences.append((t_ms, t_ms + round(seconds * 1000)))
        t_ms += round(seconds * 1000)
    sf.write(path, np.concatenate(parts), SR, subtype="PCM_16")
    return silences


@pytest.fixture(scope="module")
def speech(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, list[tuple[int, int]]]:
    path = tmp_path_factory.mktemp("speech") / "talk.wav"
    return path, make_speech(path)


def spans(*pairs: tuple[int, int]) -> list[Span]:
    return [Span(a, b) for a, b in pairs]


@pytest.mark.parametrize(
    ("duration_ms", "length_s", "overlap_s", "expected"),
    [
        (25000, 10, 2, spans((0, 10000), (8000, 18000), (16000, 25000))),
        (20000, 10, 2, spans((0, 10000), (8000, 18000), (16000, 20000))),
        (18000, 10, 2, spans((0, 10000), (8000, 18000))),
        (10000, 10, 2, spans((0, 10000))),
        (20500, 10, 0, spans((0, 10000), (10000, 20000))),  # 0.5 s tail < min_s: dropped
        (21000, 10, 0, spans((0, 10000), (10000, 20000), (20000, 21000))),  # 1.0 s tail kept
        (999, 10, 2, []),
        (1000, 10, 2, spans((0, 1000))),
    ],
)
def test_fixed_spans(duration_ms: int, length_s: float, overlap_s: float, expected: list[Span]):
    assert segment.fixed_spans(duration_ms, length_s, overlap_s, min_s=1.0) == expected


@pytest.mark.parametrize(
    ("kwargs", "bad"),
    [
        ({"length_s": 10, "overlap_s": 10}, "overlap_s"),
        ({"length_s": 10, "overlap_s": -1}, "overlap_s"),
        ({"length_s": 31, "overlap_s": 2}, "length_s"),
        ({"length_s": 0, "overlap_s": 0}, "length_s"),
        ({"length_s": 10, "overlap_s": 2, "min_s": -1}, "min_s"),
        ({"method": "silence"}, "method"),
        ({"method": "vad", "max_s": 31}, "max_s"),
        ({"method": "vad", "min_s": 20, "max_s": 20}, "min_s"),
        ({"method": "vad", "pad_ms": -1}, "pad_ms"),
        ({"method": "vad", "min_s": 5, "max_s": 6, "pad_ms": 500}, "pad_ms"),
    ],
)
def test_segment_source_validates_parameters(tmp_path: Path, kwargs: dict, bad: str):
    params = dict(method="fixed", length_s=10, overlap_s=2, min_s=1.0, max_s=30, pad_ms=200)
    params.update(kwargs)
    with pytest.raises(ValueError, match=f"^{bad} "):
        segment.segment_source(tmp_path / "in", tmp_path / "out", "src", **params)
    assert not (tmp_path / "out").exists()


def plan(probs: list[float], energy: list[float] | None = None, **overrides) -> list[Span]:
    """Run the VAD planner on hand-made per-window (32 ms) probabilities."""
    params = dict(min_s=1.0, max_s=10.0, pad_ms=200, threshold=0.5, min_silence_ms=100)
    params.update(min_speech_ms=250, max_gap_s=2.0)
    params.update(overrides)
    probs_arr = np.asarray(probs, dtype=np.float32)
    energy_arr = np.ones(len(probs)) if energy is None else np.asarray(energy)
    return segment._plan_spans(probs_arr, energy_arr, len(probs) * 32, **params)


def windows(pattern: list[tuple[float, float]]) -> list[float]:
    """Per-window probabilities from (probability, seconds) pieces."""
    return [p for p, seconds in pattern for _ in range(round(seconds * 1000 / 32))]


def test_plan_merges_across_short_pauses_and_pads_into_silence():
    probs = windows([(0, 1.6), (0.9, 3.2), (0, 0.96), (0.9, 3.2), (0, 0.32), (0.9, 3.2), (0, 1.6)])
    # speech 1600-4800, 5760-8960, 9280-12480 ms: all three do not fit in 10 s, so the cut
    # goes at the longest pause (960 ms), not where a left-to-right greedy fill would put it.
    assert plan(probs) == spans((1400, 5000), (5560, 12680))


def test_plan_uses_the_fewest_chunks():
    probs = windows(
        [(0, 1.0), (0.9, 1.6), (0, 0.96), (0.9, 4.0), (0, 0.32), (0.9, 4.0), (0, 0.48),
         (0.9, 1.6), (0, 1.0)]
    )
    # Merging the shortest pauses first joins the two 4 s runs and then fits nothing else in
    # 10 s: three chunks, two of them short. Two chunks fit, cut at the 320 ms pause.
    assert plan(probs) == spans((792, 7712), (7712, 14152))


def test_plan_pads_at_most_half_a_pause_and_never_overlaps():
    probs = windows([(0.9, 6.4), (0, 0.192), (0.9, 6.4)])
    chunks = plan(probs, max_s=8.0)
    assert chunks == spans((0, 6496), (6496, 12992))


def test_plan_never_bridges_a_long_pause_or_keeps_mostly_silence():
    probs = windows([(0, 1.0), (0.9, 1.6), (0, 2.4), (0.9, 1.6), (0, 1.0)])
    assert plan(probs, max_s=30.0) == spans((792, 2792), (4792, 6792))
    assert plan(probs, max_s=30.0, max_gap_s=3.0) == spans((792, 6792))
    sparse = windows([(0, 1.0), (0.9, 0.64), (0, 1.92), (0.9, 0.64), (0, 1.0)])
    assert plan(sparse) == spans((792, 1832), (3352, 4392))  # merged would be 60 % silence
    tiny = windows([(0, 2.0), (0.9, 0.32), (0, 2.0)])  # 0.32 s of speech in a 1.52 s chunk
    assert plan(tiny, min_s=0.5, pad_ms=600) == []


def test_plan_drops_chunks_shorter_than_min_s_and_clicks():
    probs = windows([(0, 1.0), (0.9, 0.64), (0, 3.0), (0.9, 0.16), (0, 3.0), (0.9, 2.0), (0, 1.0)])
    assert plan(probs, pad_ms=100) == spans((7708, 9892))


def test_plan_splits_long_speech_at_the_quietest_point():
    probs = windows([(0, 0.64), (0.9, 19.2), (0, 0.64)])
    energy = np.ones(len(probs))
    energy[318:323] = 0.01  # 160 ms pause-like dip centred on window 320 (10.24 s)
    chunks = plan(probs, energy.tolist(), max_s=12.0)
    assert chunks == spans((440, 10256), (10256, 20040))


def test_plan_split_pieces_respect_max_s_and_min_s():
    probs = windows([(0.9, 61.0)])
    chunks = plan(probs, max_s=10.0, min_s=2.0)
    assert len(chunks) == 7
    assert all(2000 <= c.end_ms - c.start_ms <= 10000 for c in chunks)
    assert all(a.end_ms == b.start_ms for a, b in pairwise(chunks))  # no gap, no overlap


def test_streamed_vad_probabilities_equal_a_whole_file_run(speech):
    path, _ = speech
    scores = vad.score_file(path, block_windows=100)
    probs, energy = scores[:, 0], scores[:, 1]
    samples = load_audio(path)
    whole = get_vad_model()(np.pad(samples, (0, 512 - len(samples) % 512)))
    n = len(samples) // 512
    assert len(scores) == -(-len(samples) // 512)
    np.testing.assert_allclose(probs[:n], np.asarray(whole).reshape(-1)[:n], atol=1e-4)
    frames = samples[: n * 512].reshape(n, 512).astype(np.float64)
    np.testing.assert_allclose(energy[:n], np.sqrt((frames**2).mean(axis=1)), rtol=1e-5)


def test_scores_fed_in_any_pieces_equal_the_file_scores(speech):
    path, _ = speech
    samples = sf.read(path, dtype="float32")[0]
    scorer = vad.SpeechScorer(block_windows=100)
    rng = np.random.default_rng(1)
    start = 0
    while start < len(samples):  # uneven pieces, as a pipe delivers them
        size = int(rng.integers(1, 40000))
        scorer.feed(samples[start : start + size])
        start += size
    np.testing.assert_array_equal(scorer.finish(), vad.score_file(path, block_windows=100))


def test_long_files_are_scored_in_pieces_independent_of_cores(speech, monkeypatch):
    path, _ = speech
    whole = vad.SpeechScorer()
    whole.feed(sf.read(path, dtype="float32")[0])
    expected = whole.finish()
    monkeypatch.setattr(vad, "PIECE_WINDOWS", 150)  # 4.8 s pieces: several in this file
    one, two = vad.score_file(path, workers=1), vad.score_file(path, workers=2)
    np.testing.assert_array_equal(one, two)
    assert one.shape == expected.shape
    np.testing.assert_allclose(one[:, 1], expected[:, 1], rtol=1e-5)  # RMS: exact per window
    speech_whole, speech_pieces = expected[:, 0] > 0.5, one[:, 0] > 0.5
    assert (speech_whole == speech_pieces).mean() > 0.98  # a fresh state settles fast


def test_vad_chunks_cut_inside_silences(speech):
    path, silences = speech
    max_s, min_s = 12.0, 1.0
    chunks = segment.vad_spans(path, min_s=min_s, max_s=max_s, pad_ms=200)
    assert chunks == sorted(chunks)
    assert all(min_s * 1000 <= c.end_ms - c.start_ms <= max_s * 1000 for c in chunks)
    assert all(a.end_ms <= b.start_ms for a, b in pairwise(chunks))
    long_burst = (silences[-2][1], silences[-1][0])  # 24 s of speech: must be split inside
    for boundary in {c.start_ms for c in chunks} | {c.end_ms for c in chunks}:
        in_silence = any(a <= boundary <= b for a, b in silences)
        assert in_silence or long_burst[0] < boundary < long_burst[1], boundary
    # every burst is covered: speech is kept, only silence is left out
    bursts = [(a_end, b_start) for (_, a_end), (b_start, _) in pairwise(silences)]
    for start, end in bursts:
        covered = sum(
            min(end, c.end_ms) - max(start, c.start_ms)
            for c in chunks
            if c.start_ms < end and c.end_ms > start
        )
        assert covered >= 0.95 * (end - start), (start, end)


@pytest.mark.parametrize("stem", sorted(p.name.split(".")[0] for p in SAMPLE.glob("*.en.vtt")))
def test_vad_never_cuts_inside_a_sentence_of_the_sample(tmp_path: Path, stem: str):
    # Project defaults. The gold cues span exactly each audible sentence, so a cut (the
    # padded boundary, where the audio really ends) strictly inside a cue would cut a word.
    (media,) = [p for p in SAMPLE.glob(f"{stem}.*") if p.suffix not in (".vtt", ".md")]
    audio.extract_audio(media, tmp_path / "a.mka")
    audio.resample_to_wav(tmp_path / "a.mka", tmp_path / "a.wav")
    chunks = segment.vad_spans(tmp_path / "a.wav", min_s=1.0, max_s=30, pad_ms=200)
    cues = read_vtt(SAMPLE / f"{stem}.en.vtt")
    assert cues and chunks
    for boundary in [ms for c in chunks for ms in (c.start_ms, c.end_ms)]:
        inside = [cue.text for cue in cues if cue.start_ms < boundary < cue.end_ms]
        assert not inside, (boundary, inside)
    for cue in cues:  # and every sentence is kept whole in one chunk
        assert any(c.start_ms <= cue.start_ms and cue.end_ms <= c.end_ms for c in chunks), cue


def test_write_chunks_cuts_exact_samples_deterministically(speech, tmp_path: Path):
    path, _ = speech
    chosen = spans((0, 1000), (1500, 4250), (20000, 20001))
    written = segment.write_chunks(path, chosen, tmp_path / "a", "talk")
    assert [p.name for p in written] == [
        "talk_000000000_000001000.wav",
        "talk_000001500_000004250.wav",
        "talk_000020000_000020001.wav",
    ]
    source, _ = sf.read(path, dtype="int16")
    for span, chunk_path in zip(chosen, written, strict=True):
        chunk, rate = sf.read(chunk_path, dtype="int16")
        info = sf.info(chunk_path)
        assert (rate, info.channels, info.subtype) == (16000, 1, "PCM_16")
        np.testing.assert_array_equal(chunk, source[span.start_ms * 16 : span.end_ms * 16])
    again = segment.write_chunks(path, chosen, tmp_path / "b", "talk")
    assert [p.read_bytes() for p in written] == [p.read_bytes() for p in again]


ITEMS = ("talk", "blip", "broken")


def make_resampled_source(root: Path, speech_path: Path) -> Path:
    """A resample-stage output with the speech file, a short clip and an unreadable item."""
    out = root / "resampled" / "src"
    out.mkdir(parents=True)
    (out / "talk.wav").write_bytes(speech_path.read_bytes())
    sf.write(out / "blip.wav", np.zeros(8000), SR, subtype="PCM_16")  # 0.5 s of silence
    (out / "broken.wav").write_bytes(b"RIFF....WAVEnot really")
    rows = [[item, f"{item}.wav", 0, SR, 1, "pcm_s16le", -20.0, False] for item in ITEMS]
    pd.DataFrame(rows, columns=RESAMPLED_COLUMNS).to_csv(out / "audio.csv", index=False)
    return out


@pytest.mark.parametrize("method", ["fixed", "vad"])
def test_segment_source_end_to_end(speech, tmp_path: Path, method: str):
    resampled = make_resampled_source(tmp_path, speech[0])
    params = dict(method=method, length_s=10, overlap_s=2, min_s=1.0, max_s=15, pad_ms=200)
    params["path_prefix"] = Path("data/segments/src")
    runs = []
    for run in ("one", "two"):
        out = tmp_path / run / "segments" / "src"
        report = segment.segment_source(resampled, out, "src", **params)
        assert report.ok == ["talk"]
        assert [f.item for f in report.skipped] == ["blip"]
        assert [f.item for f in report.failed] == ["broken"]
        runs.append(out)

    table = pd.read_csv(runs[0] / "segments.csv")
    assert list(table.columns) == segment.SEGMENT_COLUMNS
    assert set(table["source"]) == {"src"} and set(table["item"]) == {"talk"}
    assert list(table["start_ms"]) == sorted(table["start_ms"])
    assert ((table["duration_s"] * 1000).round() == table["end_ms"] - table["start_ms"]).all()
    for row in table.itertuples():
        name = f"talk_{row.start_ms:09d}_{row.end_ms:09d}.wav"
        assert row.path == f"data/segments/src/{name}"
        assert sf.info(runs[0] / name).frames == (row.end_ms - row.start_ms) * 16
    if method == "fixed":
        assert list(table["start_ms"][:3]) == [0, 8000, 16000]
    assert json.loads((runs[0] / "report.json").read_text())["failed"][0]["item"] == "broken"

    files = sorted(p.name for p in runs[0].iterdir())
    assert files == sorted([*(Path(p).name for p in table["path"]), "segments.csv", "report.json"])
    assert [sha256_file(runs[0] / f) for f in files] == [sha256_file(runs[1] / f) for f in files]
