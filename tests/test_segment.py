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

from tubetune import segment, vad
from tubetune.audio import RESAMPLED_COLUMNS, load_audio
from tubetune.fsutil import sha256_file
from tubetune.segment import Span
from tubetune.subtitles import Cue, load_covered

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
    assert files == sorted([*(Path(p).name for p in table["path"]), "segments.csv", "rejects.csv",
                            "report.json"])
    assert [sha256_file(runs[0] / f) for f in files] == [sha256_file(runs[1] / f) for f in files]


# A subtitled talk like real uploads: cues of several phrases with pauses inside them, cue
# times early or late, a cue over max_s (12 s here) whose text has a sentence end in its
# longest pause, one without any, a "[Music]" cue over silence, and a short cue alone
# between long pauses. Per cue: (pause before it in s, phrases as (seconds, text), pauses
# between the phrases, jitter of its start and end in ms). Texts have 10 letters per second
# of speech, so that proportional character time is exact.
TALK = [
    (1.0, [(2.0, "sunny quiet river stone,"), (1.5, "cloud maple green.")], [0.5], (-200, 0)),
    (0.8, [(2.5, "lemon sunny quiet river stone,"), (2.0, "cloud maple green lemon,"),
           (1.0, "sunny quiet.")], [0.6, 0.4], (200, -200)),
    (0.7, [(4.0, "river stone cloud maple green lemon sunny quiet."),
           (5.0, "river stone cloud maple green lemon sunny quiet river stone"),
           (4.5, "cloud maple green lemon sunny quiet river stone cloud.")], [0.7, 0.3],
     (-100, 200)),
    (1.0, [(6.5, "maple green lemon sunny quiet river stone cloud maple green lemon sunny quiet"),
           (6.5, "river stone cloud maple green lemon sunny quiet river stone cloud maple green")],
     [0.5], (0, 0)),
    (0.9, [(2.5, "lemon sunny quiet river stone.")], [], (200, -200)),
    (3.0, [(1.5, "cloud maple green.")], [], (-150, 0)),
    (3.0, [(0.5, "lemon.")], [], (0, 0)),
]
TALK_TAIL_S = 1.0
MUSIC = Cue(45800, 47800, "[Music]")  # in the 3 s pause after the fifth cue
TALK_PARAMS = dict(min_s=1.0, max_s=12.0, pad_ms=200, cue_snap_ms=300)


def make_talk(path: Path) -> tuple[list[Cue], list[list[tuple[int, int]]]]:
    """Write TALK as 16 kHz mono WAV; return its jittered cues (MUSIC among them) and the
    true speech of each phrase of each TALK cue, (start_ms, end_ms)."""
    parts, cues, phrases, t = [], [], [], 0
    for k, (pause, spoken, inner, (early, late)) in enumerate(TALK):
        parts.append(np.zeros(round(pause * SR)))
        t += round(pause * 1000)
        phrases.append([])
        for n, (seconds, _) in enumerate(spoken):
            if n:
                parts.append(np.zeros(round(inner[n - 1] * SR)))
                t += round(inner[n - 1] * 1000)
            parts.append(babble(seconds, 100 + 10 * k + n))
            phrases[-1].append((t, t + round(seconds * 1000)))
            t += round(seconds * 1000)
        text = " ".join(words for _, words in spoken)
        cues.append(Cue(phrases[-1][0][0] + early, phrases[-1][-1][1] + late, text))
    parts.append(np.zeros(round(TALK_TAIL_S * SR)))
    sf.write(path, np.concatenate(parts), SR, subtype="PCM_16")
    return sorted([*cues, MUSIC], key=lambda c: c.start_ms), phrases


@pytest.fixture(scope="module")
def talk(tmp_path_factory: pytest.TempPathFactory):
    path = tmp_path_factory.mktemp("talk") / "talk.wav"
    cues, phrases = make_talk(path)
    vad.save_scores(vad.scores_path(path), vad.score_file(path))
    return path, cues, phrases


def test_subtitled_chunks_hold_whole_cues_cut_in_silence(talk):
    path, cues, phrases = talk
    chunks, rejects = segment.subtitle_spans(path, cues, "vad", **TALK_PARAMS)
    music = cues.index(MUSIC)
    index = [i for i in range(len(cues)) if i != music]  # TALK cue k is cues[index[k]]
    speech = [p for cue in phrases for p in cue]
    assert chunks and all(a.span.end_ms <= b.span.start_ms for a, b in pairwise(chunks))
    for chunk in chunks:
        start, end = chunk.span.start_ms, chunk.span.end_ms
        assert 1000 <= end - start <= 12000
        # Edges lie in true silence, so no word is cut: at most a pause inside a cue over
        # max_s, split where its text ends a sentence.
        assert not [p for p in speech if p[0] < start < p[1] or p[0] < end < p[1]], chunk
        held = [p for p in speech if start <= p[0] and p[1] <= end]
        covered = [(c.index, c.text) for c in chunk.cues]
        expected = [p for k, cue in enumerate(phrases) for p in cue
                    if index[k] in {i for i, _ in covered}]
        if index[2] in {i for i, _ in covered}:  # the long cue: only the piece(s) it holds
            expected = [p for p in expected if p in held]
        assert held == expected, (chunk, held)
        for i, text in covered:  # whole cues, their own text
            assert text == cues[i].text or i == index[2]
    pieces = [c.text for chunk in chunks for c in chunk.cues if c.index == index[2]]
    assert pieces == ["river stone cloud maple green lemon sunny quiet.",
                      "river stone cloud maple green lemon sunny quiet river stone "
                      "cloud maple green lemon sunny quiet river stone cloud."]
    kept = {c.index for chunk in chunks for c in chunk.cues}
    assert kept == {index[k] for k in (0, 1, 2, 4, 5)}
    reasons = {c.index: r.reason for r in rejects for c in r.cues}
    assert reasons == {index[3]: "cue_too_long", music: "no_speech", index[6]: "too_short"}
    detail = next(r.detail for r in rejects if r.reason == "cue_too_long")
    assert "no clause boundary of its text falls in one of its pauses" in detail


def test_cue_edges_snap_to_silence_within_the_window():
    runs = [(1000, 3000), (3500, 6000)]  # speech; the cue times are 250 ms off it
    cues = [Cue(1250, 2750, "one two."), Cue(3250, 6000, "three four.")]
    (chunk,), _ = segment.cue_spans(cues, runs, 7000, 1.0, 30.0, 200, 300)
    assert chunk.span == Span(800, 6200)  # speech 1000-6000, padded into silence
    (first, second), _ = segment.cue_spans(cues, runs, 7000, 1.0, 4.0, 200, 300)
    assert (first.span, second.span) == (Span(800, 3200), Span(3300, 6200))  # half the pause
    (first, second), _ = segment.cue_spans(cues, runs, 7000, 1.0, 30.0, 200, 200)
    # 250 ms is beyond a 200 ms window: the first cue's edges stay at its times, inside
    # speech, unpadded; the speech after it belongs to neither cue, so the two stay apart.
    assert (first.span, second.span) == (Span(1250, 2750), Span(3300, 6200))


def test_fixed_cuts_subtitled_audio_at_the_cue_times(talk):
    path, cues, _ = talk
    chunks, rejects = segment.subtitle_spans(path, cues, "fixed", **TALK_PARAMS)
    edges = {ms for cue in cues for ms in (cue.start_ms, cue.end_ms)}
    for chunk in chunks:
        first, last = chunk.cues[0], chunk.cues[-1]
        assert first.start_ms - 200 <= chunk.span.start_ms <= first.start_ms
        assert last.end_ms <= chunk.span.end_ms <= last.end_ms + 200
        assert {c.start_ms for c in chunk.cues} <= edges
    long = {r.cues[0].text[:11] for r in rejects if r.reason == "cue_too_long"}
    assert long == {"river stone", "maple green"}  # no VAD: no pause to split at
    assert all("there is no pause in it" in r.detail for r in rejects
               if r.reason == "cue_too_long")


def test_overlong_cue_without_a_matching_boundary_is_rejected_not_guessed():
    runs = [(0, 8000), (8500, 16000)]
    # The only pause is at 8 s of 15.5 s of speech; the text's only comma comes after a
    # quarter of it: a split there would be a guess.
    text = "a" * 40 + ", " + "b" * 120
    _, (reject,) = segment.cue_spans([Cue(0, 16000, text)], runs, 16000, 1.0, 12.0, 200, 300)
    assert reject.reason == "cue_too_long"
    matching = "a" * 80 + ", " + "b" * 75  # 80 of 155 letters: 8.0 s of 15.5 s
    (one, two), rejects = segment.cue_spans([Cue(0, 16000, matching)], runs, 16000, 1.0, 12.0,
                                            200, 300)
    assert not rejects
    assert (one.cues[0].text, two.cues[0].text) == ("a" * 80 + ",", "b" * 75)
    assert one.span.end_ms <= 8250 <= two.span.start_ms  # cut in the pause


def test_subtitled_source_end_to_end_is_deterministic(talk, tmp_path: Path):
    path, cues, _ = talk
    resampled = tmp_path / "resampled"
    resampled.mkdir()
    for suffix in (".wav", vad.SUFFIX):
        (resampled / f"talk{suffix}").write_bytes(path.with_suffix(suffix).read_bytes())
    pd.DataFrame([["talk", "talk.wav", 0, SR, 1, "pcm_s16le", -20.0, False]],
                 columns=RESAMPLED_COLUMNS).to_csv(resampled / "audio.csv", index=False)
    runs = []
    for run in ("one", "two"):
        out = tmp_path / run
        segment.segment_source(resampled, out, "src", "vad", 10, 2, 1.0, 12.0, 200,
                               path_prefix=Path("seg"), cues={"talk": cues}, cue_snap_ms=300)
        runs.append(out)
    files = sorted(p.name for p in runs[0].iterdir())
    assert [sha256_file(runs[0] / f) for f in files] == [sha256_file(runs[1] / f) for f in files]
    table = pd.read_csv(runs[0] / "segments.csv", dtype={"cues": str})
    assert len(table) + 3 == len(files)  # every chunk file, both CSVs and the report
    chunks, rejects = segment.subtitle_spans(path, cues, "vad", **TALK_PARAMS)
    assert [load_covered(cell) for cell in table["cues"]] == [list(c.cues) for c in chunks]
    rejected = pd.read_csv(runs[0] / "rejects.csv")
    assert list(rejected.columns) == segment.REJECT_COLUMNS
    assert list(rejected["reason"]) == [r.reason for r in rejects]


@pytest.mark.parametrize("seed", range(4))
def test_cue_spans_never_overlap_and_account_for_every_cue(seed: int):
    # Random speech and cues (overlapping, off their speech, over max_s, past the audio).
    rng = np.random.default_rng(seed)
    for _ in range(50):
        duration = int(rng.integers(5000, 120000))
        runs, t = [], int(rng.integers(0, 2000))
        while t < duration - 300:
            end = min(duration, t + int(rng.integers(100, 8000)))
            runs.append((t, end))
            t = end + int(rng.integers(50, 3000))
        cues, t = [], int(rng.integers(-500, 3000))
        while t < duration + 2000:
            start = t + int(rng.integers(-800, 1500))
            t = start + int(rng.integers(50, 35000 if rng.random() < 0.1 else 8000))
            words = rng.choice(["alpha", "beta,", "gamma.", "你好，"], int(rng.integers(1, 40)))
            cues.append(Cue(max(start, 0), t, " ".join(words)))
        cues = sorted({c for c in cues if c.end_ms > c.start_ms},
                      key=lambda c: (c.start_ms, c.end_ms))  # as read_vtt orders them
        max_s = float(rng.choice([5.0, 12.0, 30.0]))
        chunks, rejects = segment.cue_spans(cues, runs, duration, 1.0, max_s,
                                            int(rng.choice([0, 200])), int(rng.choice([0, 300])))
        spans = [c.span for c in chunks]
        assert all(0 <= s.start_ms < s.end_ms <= duration for s in spans)
        assert all(s.end_ms - s.start_ms <= max_s * 1000 for s in spans)
        assert all(a.end_ms <= b.start_ms for a, b in pairwise(spans))
        placed = [c.index for part in [*chunks, *rejects] for c in part.cues]
        assert set(placed) == set(range(len(cues)))
        assert all([c.index for c in ch.cues] == sorted(c.index for c in ch.cues) for ch in chunks)
