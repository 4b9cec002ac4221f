"""Labelled corpora as sources: each layout through the stage functions, bad input reported
line by line, fixed test sources, long utterances, the teacher as an opt-in cross-check."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import soundfile as sf
import yaml

from helpers.corpora import (
    KOREAN,
    pcm16,
    speechlike,
    wav_bytes,
    write_commonvoice,
    write_hf_dataset,
    write_ksponspeech,
)
from helpers.project import copy_project, run
from helpers.tiny_whisper import make_tiny_whisper
from tubetune.audio import ffmpeg_exe
from tubetune.corpus import (
    convert_corpus,
    decode_text,
    index_corpus,
    resample_corpus,
    utterance_cues,
)
from tubetune.items import StageError
from tubetune.labels import label_source
from tubetune.params import CorpusParams, LabelParams, ParamsError, SplitParams, parse_params
from tubetune.segment import corpus_spans, segment_source
from tubetune.split import build_splits, load_videos
from tubetune.subtitles import Cue
from tubetune.vad import save_scores, scores_path

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def tokenizer_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A Hugging Face model dir: its tokenizer counts the corpus labels' tokens."""
    return make_tiny_whisper(tmp_path_factory.mktemp("tiny") / "hf")


def run_chain(name: str, corpus: CorpusParams, language: str, tokenizer: Path,
              method: str = "fixed", labels: LabelParams | None = None,
              teacher: Path | None = None) -> dict[str, Path]:
    """download -> convert -> resample -> segment -> pseudo-label of one corpus source, in
    the working directory with the stages' relative paths."""
    d = {stage: Path("data") / stage / name
         for stage in ("raw", "converted", "resampled", "segments", "labels")}
    index_corpus(name, corpus, d["raw"], language)
    convert_corpus(d["raw"], d["converted"], name)
    resample_corpus(d["converted"], d["resampled"], name, score_speech=method == "vad")
    segment_source(d["resampled"], d["segments"], name, method, 10, 2, 1.0, 30, 200,
                   path_prefix=d["segments"], utterances=utterance_cues(d["resampled"]))
    label_source(d["segments"], d["raw"], d["labels"], name,
                 model_dir=teacher or Path("no-teacher"), language=language,
                 task="transcribe", params=labels or LabelParams(), hf_dir=tokenizer)
    return d


def report(stage_dir: Path) -> dict[str, str]:
    """origin -> reason of every failure in a stage's report.json."""
    data = json.loads((stage_dir / "report.json").read_text())
    return {f["item"]: f["reason"] for f in data["failed"]}


def test_ksponspeech_cp949_notation_becomes_clean_korean_targets(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, tokenizer_dir: Path
) -> None:
    monkeypatch.chdir(tmp_path)
    targets = write_ksponspeech(Path("kspon"), {"KsponSpeech_0001": [0, 1, 2],
                                                "KsponSpeech_0002": [3, 4]})
    targets |= write_ksponspeech(Path("kspon"), {"KsponSpeech_0003": [5]}, encoding="utf-8")
    d = run_chain("kspon", CorpusParams(format="ksponspeech", path="kspon"), "ko",
                  tokenizer_dir, method="vad")
    labels = pd.read_csv(d["labels"] / "labels.csv", keep_default_na=False)
    assert labels["text"].tolist() == list(targets.values())  # folder, then file order
    assert set(labels["label_source"]) == {"corpus"}
    assert labels["item"].unique().tolist() == [f"corpus-KsponSpeech_000{i}" for i in (1, 2, 3)]
    manifest = pd.read_csv(d["raw"] / "manifest.csv", keep_default_na=False)
    assert manifest["language"].tolist() == ["ko"] * 3  # one item (split unit) per folder
    first = labels.iloc[0]
    assert json.loads(first["timings"]) == [[0, first["end_ms"] - first["start_ms"],
                                             targets[Path("kspon/KsponSpeech_0001/"
                                                           "KsponSpeech_0001_000000.pcm")]]]
    for (pcm, _), row in zip(targets.items(), labels.itertuples(), strict=True):
        chunk, rate = sf.read(row.path, dtype="int16")
        original = np.fromfile(pcm, dtype="<i2")
        assert rate == 16000 and np.array_equal(chunk[: len(original)], original)  # exact
        assert not chunk[len(original):].any() and len(chunk) - len(original) < 16
    assert (d["resampled"] / "corpus-KsponSpeech_0001.vad.npy").is_file()


def test_commonvoice_groups_by_speaker_and_resamples_mp3(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, tokenizer_dir: Path
) -> None:
    monkeypatch.chdir(tmp_path)
    write_commonvoice(Path("cv"), [("aa11", "c1.mp3", "오늘은 날씨가 좋네요."),
                                   ("bb22", "c2.mp3", "저는 학생입니다."),
                                   ("aa11", "c3.mp3", "\"안녕하세요\" 하고 말했다.")])
    d = run_chain("cv", CorpusParams(format="commonvoice", path="cv"), "ko", tokenizer_dir)
    labels = pd.read_csv(d["labels"] / "labels.csv")
    assert labels["text"].tolist() == ["오늘은 날씨가 좋네요.", "\"안녕하세요\" 하고 말했다.",
                                       "저는 학생입니다."]  # quotes kept (QUOTE_NONE)
    assert labels["item"].nunique() == 2  # one per client_id
    assert labels["duration_s"].tolist() == pytest.approx([1.5, 1.7, 1.6], abs=0.06)
    probed = pd.read_csv(d["converted"] / "utterances.csv")
    assert set(probed["sample_rate"]) == {48000} and set(probed["channels"]) == {2}


def test_manifest_spans_pcm_and_compressed_audio(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, tokenizer_dir: Path
) -> None:
    monkeypatch.chdir(tmp_path)
    folder = Path("data/my_corpus")
    folder.mkdir(parents=True)
    sf.write(folder / "long.wav", speechlike(6.0, 1, 44100, 2), 44100, subtype="PCM_16")
    pcm16(speechlike(2.0, 2)).tofile(folder / "clip.pcm")
    raw = folder / "talk.raw"
    pcm16(speechlike(5.0, 3)).tofile(raw)
    subprocess.run([ffmpeg_exe(), "-v", "error", "-f", "s16le", "-ar", "16000", "-ac", "1",
                    "-i", str(raw), "-c:a", "aac", str(folder / "talk.m4a")], check=True)
    (folder / "index.csv").write_text(
        "path,text,start_s,end_s,language,group\n"
        "long.wav,The first span.,0.5,2.5,en,\n"
        "long.wav,The second span.,3.0,5.5,en,\n"
        "clip.pcm,A whole clip.,,,en,speaker-1\n"
        "talk.m4a,Compressed audio read in process.,1.0,3.0,en,speaker-1\n"
        "talk.m4a,\"Quoted, with a comma.\",3.0,4.5,en,speaker-1\n", encoding="utf-8")
    d = run_chain("mine", CorpusParams(format="manifest", path=str(folder / "index.csv")),
                  "ko", tokenizer_dir)
    labels = pd.read_csv(d["labels"] / "labels.csv")
    assert labels["text"].tolist() == ["The first span.", "The second span.", "A whole clip.",
                                       "Compressed audio read in process.",
                                       "Quoted, with a comma."]
    assert labels["duration_s"].tolist() == pytest.approx([2.0, 2.5, 2.0, 2.0, 1.5], abs=0.002)
    manifest = pd.read_csv(d["raw"] / "manifest.csv")
    assert manifest["title"].tolist() == ["long.wav", "speaker-1"]  # a file, then a group
    assert set(manifest["language"]) == {"en"}  # the rows' own language, not the source's


def test_hf_dataset_bytes_and_paths_without_torchcodec(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, tokenizer_dir: Path
) -> None:
    monkeypatch.chdir(tmp_path)
    sf.write("outside.wav", speechlike(1.8, 4), 16000, subtype="PCM_16")
    rows = [
        {"audio": {"bytes": wav_bytes(speechlike(1.2, 5, 22050), 22050, "FLAC"), "path": None},
         "sentence": "我们今天去软件公司", "speaker": "s1"},
        {"audio": {"bytes": None, "path": str(Path("outside.wav").resolve())},
         "sentence": "看看信息", "speaker": "s2"},
        {"audio": {"bytes": wav_bytes(speechlike(1.4, 6), 16000), "path": "x.wav"},
         "sentence": "好吗", "speaker": "s1"},
    ]
    write_hf_dataset(Path("saved"), rows)
    corpus = CorpusParams(format="hf_dataset", path="saved", text_column="sentence",
                          group_column="speaker")
    d = run_chain("hf", corpus, "zh-TW", tokenizer_dir)
    labels = pd.read_csv(d["labels"] / "labels.csv")
    assert labels["text"].tolist() == ["我們今天去軟體公司", "好嗎", "看看資訊"]  # OpenCC s2twp
    assert labels["duration_s"].tolist() == pytest.approx([1.2, 1.4, 1.8], abs=0.002)
    assert labels["item"].tolist()[:2] == ["corpus-s1"] * 2


def test_bad_corpus_input_is_named_by_file_and_line_and_the_rest_kept(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, tokenizer_dir: Path
) -> None:
    monkeypatch.chdir(tmp_path)
    folder = Path("bad")
    folder.mkdir()
    for name in ("good.wav", "other.wav"):
        sf.write(folder / name, speechlike(2.0, 7), 16000, subtype="PCM_16")
    (folder / "odd.pcm").write_bytes(pcm16(speechlike(1.0, 8)).tobytes() + b"\x00")
    (folder / "noise.wav").write_bytes(b"RIFF not really a wave file" * 50)
    lines = [
        b"path,text,start_s,end_s",
        b"good.wav,kept here,,",
        b"missing.wav,no audio,,",
        b"other.wav,,,",
        b"good.wav,twice,,",
        b"other.wav,too,many,fields,here",
        b"other.wav,bad time,abc,",
        b"other.wav,\xff\xfe\xfd broken bytes,,",
        b"odd.pcm,truncated pcm,,",
        b"noise.wav,undecodable,,",
        b"other.wav,past the end,1.0,9.0",
        b"other.wav,also kept,0.5,1.5",
    ]
    (folder / "index.csv").write_bytes(b"\n".join(lines) + b"\n")
    d = run_chain("bad", CorpusParams(format="manifest", path="bad/index.csv"), "en",
                  tokenizer_dir)
    assert report(d["raw"]) == {
        "bad/index.csv:3": "audio file not found: missing.wav",
        "bad/index.csv:4": "empty transcript",
        "bad/index.csv:5": "duplicate of bad/index.csv:2 (the same audio and span)",
        "bad/index.csv:6": "unreadable row: 5 fields where the header has 4",
        "bad/index.csv:7": "unreadable row: could not convert string to float: 'abc'",
        "bad/index.csv:8": "not UTF-8 or CP949 text (byte 0xff at offset 10)",
    }
    converted = report(d["converted"])
    assert converted["bad/index.csv:9"] == "truncated: an odd number of bytes is not 16-bit PCM"
    assert converted["bad/index.csv:10"].startswith("cannot decode: ")
    assert converted["bad/index.csv:11"] == ("the span ends at 9 s, past the end of its audio "
                                             "(2.000 s)")
    labels = pd.read_csv(d["labels"] / "labels.csv")
    assert sorted(labels["text"]) == ["also kept", "kept here"]


def test_bad_ksponspeech_files_are_reported_and_skipped(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, tokenizer_dir: Path
) -> None:
    monkeypatch.chdir(tmp_path)
    targets = write_ksponspeech(Path("k"), {"f1": [0, 1, 4]})
    pcm = list(targets)
    pcm[0].with_suffix(".txt").write_bytes(b"\x80\x80\x80")  # neither UTF-8 nor CP949
    pcm[1].with_suffix(".txt").unlink()
    (Path("k/f1/orphan.txt")).write_bytes("고아 전사".encode("cp949"))
    (Path("k/f1/noise_only.pcm")).write_bytes(pcm16(speechlike(1.0, 9)).tobytes())
    (Path("k/f1/noise_only.txt")).write_bytes("b/ n/".encode("cp949"))
    d = run_chain("k", CorpusParams(format="ksponspeech", path="k"), "ko", tokenizer_dir)
    assert report(d["raw"]) == {
        "k/f1/f1_000000.txt": "not UTF-8 or CP949 text (byte 0x80 at offset 0)",
        "k/f1/f1_000001.pcm": "no transcript f1_000001.txt next to it",
        "k/f1/orphan.txt": "no audio file next to the transcript",
    }
    assert pd.read_csv(d["labels"] / "labels.csv")["text"].tolist() == [KOREAN[4][1]]
    rejects = pd.read_csv(d["labels"] / "rejects.csv")
    assert rejects[["reason", "label_source"]].values.tolist() == [["empty", "corpus"]]


def test_missing_or_empty_corpus_fails_with_one_line_naming_it(tmp_path: Path) -> None:
    out = tmp_path / "raw"
    with pytest.raises(StageError, match=r"corpus path '/no/such/corpus' does not exist "
                                         r"\(sources.k.corpus.path\)"):
        index_corpus("k", CorpusParams(format="ksponspeech", path="/no/such/corpus"), out, "ko")
    (tmp_path / "empty").mkdir()
    with pytest.raises(StageError, match="has no utterances"):
        index_corpus("k", CorpusParams(format="ksponspeech", path=str(tmp_path / "empty")),
                     out, "ko")
    (tmp_path / "m.csv").write_text("file,sentence\na.wav,hi\n")
    with pytest.raises(StageError, match=r"no column\(s\) path, text in its header"):
        index_corpus("m", CorpusParams(format="manifest", path=str(tmp_path / "m.csv")), out,
                     "en")
    (tmp_path / "gone.csv").write_text("path,text\ngone.wav,hi\n")
    gone = CorpusParams(format="manifest", path=str(tmp_path / "gone.csv"))
    assert not index_corpus("g", gone, out, "en").ok  # reported, left out like a dead URL
    with pytest.raises(StageError, match="strict mode"):
        index_corpus("g", gone, out, "en", strict=True)


def test_corpus_outputs_are_byte_identical(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                           tokenizer_dir: Path) -> None:
    trees = []
    for copy in ("a", "b"):
        (tmp_path / copy).mkdir()
        monkeypatch.chdir(tmp_path / copy)
        write_ksponspeech(Path("kspon"), {"s1": [0, 1], "s2": [2]})
        run_chain("k", CorpusParams(format="ksponspeech", path="kspon"), "ko", tokenizer_dir,
                  method="vad")
        trees.append({p.relative_to("data").as_posix(): p.read_bytes()
                      for p in sorted(Path("data").rglob("*")) if p.is_file()})
    assert len(trees[0]) > 15 and trees[0] == trees[1]


def test_text_decoding_is_utf8_then_cp949() -> None:
    assert decode_text("네 알겠어요".encode("cp949")) == "네 알겠어요"
    assert decode_text("\ufeff네".encode()) == "네"
    with pytest.raises(UnicodeDecodeError):
        decode_text("네".encode("cp949"), "utf-8")


def test_a_long_utterance_is_split_at_a_clause_pause_or_rejected(tmp_path: Path) -> None:
    wav = tmp_path / "group.wav"
    sf.write(wav, np.zeros(40 * 16000, dtype=np.int16), 16000, subtype="PCM_16")
    scores = np.full((40_000 // 32, 2), 0.9, dtype=np.float32)
    scores[17_000 // 32 : 18_000 // 32] = 0.0  # a pause after 17 s of speech
    save_scores(scores_path(wav), scores)
    text = "가나다라마바사아자차, 카타파하가나다라마바"  # the comma falls half way through
    utterances = [Cue(0, 35_000, text), Cue(35_000, 38_000, "짧은 말")]
    chunks, rejects = corpus_spans(wav, utterances, "vad", 30, 300)
    assert [(c.span.start_ms, c.span.end_ms, c.cues[0].text) for c in chunks] == [
        (0, chunks[0].span.end_ms, "가나다라마바사아자차,"),
        (chunks[1].span.start_ms, 35_000, "카타파하가나다라마바"), (35_000, 38_000, "짧은 말")]
    assert 16_900 <= chunks[0].span.end_ms < chunks[1].span.start_ms <= 18_100 and not rejects
    chunks, rejects = corpus_spans(wav, utterances, "fixed", 30, 300)
    assert len(chunks) == 1 and [r.reason for r in rejects] == ["utterance_too_long"]


def test_teacher_cross_check_rejects_disagreeing_corpus_text(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, tokenizer_dir: Path
) -> None:
    from tubetune.conversion import convert_hf_to_ct2

    teacher = tmp_path / "teacher"
    convert_hf_to_ct2(make_tiny_whisper(tmp_path / "hf"), teacher, "int8")
    monkeypatch.chdir(tmp_path)
    write_ksponspeech(Path("kspon"), {"s1": [0, 4]})
    strict = LabelParams(max_corpus_disagreement=0.0, beam_size=1, temperatures=[0.0])
    d = run_chain("k", CorpusParams(format="ksponspeech", path="kspon"), "ko", tokenizer_dir,
                  labels=strict, teacher=teacher)
    rejects = pd.read_csv(d["labels"] / "rejects.csv")
    assert set(rejects["reason"]) == {"corpus_disagrees"} and len(rejects) == 2
    assert rejects["disagreement"].gt(0).all() and rejects["avg_logprob"].notna().all()


def test_test_sources_hold_every_corpus_utterance_and_rounds_take_corpus_slices(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, tokenizer_dir: Path
) -> None:
    monkeypatch.chdir(tmp_path)
    write_ksponspeech(Path("slice1"), {f"a{i}": [0, 4] for i in range(3)})
    write_ksponspeech(Path("slice2"), {f"b{i}": [1, 3] for i in range(2)})
    write_ksponspeech(Path("eval"), {"eval_clean": [2, 3, 5]})
    for name in ("slice1", "slice2", "eval"):
        run_chain(name, CorpusParams(format="ksponspeech", path=name), "ko", tokenizer_dir)
    videos = load_videos({"slice1": "ko", "slice2": "ko", "eval": "ko"}, Path("data/raw"),
                         Path("data/resampled"), Path("data/labels"))
    frames = build_splits(videos, Path("split"), Path("split.json"),
                          SplitParams(test_sources=["eval"], validation_fraction=0.2),
                          rounds={"r1": ["slice1"], "r2": ["slice2"]}, language="ko")
    assert frames["test"]["text"].tolist() == [KOREAN[i][1] for i in (2, 3, 5)]
    assert set(frames["test"]["reference"]) == {"corpus"}
    assert "eval" not in {*frames["train"]["source"], *frames["validation"]["source"]}
    assert len(frames["validation"]) == 2  # one whole folder
    for name, source in (("r1", "slice1"), ("r2", "slice2")):
        slice_ = pd.read_csv(Path("split/rounds") / name / "train.csv")
        assert len(slice_) and set(slice_["source"]) == {source}
        assert not set(slice_["item"]) & set(frames["validation"]["item"])


@pytest.mark.parametrize(("source", "split", "message"), [
    ({"corpus": {"format": "kaldi", "path": "x"}}, {},
     "sources.s.corpus.format: expected one of manifest, ksponspeech, commonvoice"),
    ({"corpus": {"format": "manifest", "path": "x", "tsv": "a.tsv"}}, {},
     "sources.s.corpus.tsv: not a manifest option (only commonvoice)"),
    ({"corpus": {"format": "ksponspeech", "path": "x", "encoding": "klingon"}}, {},
     "sources.s.corpus.encoding: expected auto or a text encoding"),
    ({"corpus": {"format": "ksponspeech"}}, {}, "sources.s.corpus.path: required key"),
    ({"url": "a.mp4", "corpus": {"format": "manifest", "path": "x"}}, {},
     "sources.s: give either url"),
    ({"corpus": {"format": "manifest", "path": "x"}}, {"test_sources": ["nope"]},
     "split.test_sources: unknown source 'nope'"),
    ({"corpus": {"format": "manifest", "path": "x"}}, {"test_sources": ["s"]},
     "rounds.round1.sources: 's' is in split.test_sources"),
    ({"corpus": {"format": "manifest", "path": "x"}},
     {"test_sources": ["s"], "external_test": "data/evalsets/x.csv"},
     "split.test_sources: cannot be combined with split.external_test"),
])
def test_corpus_params_errors_name_the_key(source: dict, split: dict, message: str) -> None:
    raw = {"sources": {"s": source, "t": "a.mp4"}, "split": split,
           "rounds": {"round1": {"sources": ["s"]}} if "rounds" in message else None}
    with pytest.raises(ParamsError, match=message.replace("(", r"\(").replace(")", r"\)")):
        parse_params(raw)


def test_examples_are_complete_valid_params() -> None:
    zh = parse_params(yaml.safe_load((ROOT / "examples/zh-tw-youtube.yaml").read_text()))
    assert zh.language == "zh-TW" and zh.labels.model == "ADT109119/whisper-small-zh-TW"
    assert zh.base_model == "openai/whisper-small"
    assert zh.sources["food-vlog"].urls == ["https://www.youtube.com/watch?v=HvugeIKJ9ok"]
    ko = parse_params(yaml.safe_load((ROOT / "examples/ko-course.yaml").read_text()))
    assert list(ko.rounds) == [f"round{i}" for i in range(1, 6)]
    assert [r.init for r in ko.rounds.values()] == ["models/base/hf"] + [
        f"models/rounds/round{i}" for i in range(1, 5)]
    assert [r.sources for r in ko.rounds.values()] == [[f"kspon-0{i}"] for i in range(1, 6)]
    assert ko.split.test_sources == ["kspon-eval"] and ko.language == "ko"
    assert {s.corpus.format for s in ko.sources.values()} == {"ksponspeech"}


@pytest.mark.slow
def test_korean_course_example_runs_five_rounds_on_a_fixed_test_set(tmp_path: Path) -> None:
    # examples/ko-course.yaml as it ships, on a tiny KsponSpeech of our own (CP949 .txt per
    # .pcm in the slices, a UTF-8 eval_clean.trn script for the test set) and a tiny Whisper.
    corpus = tmp_path / "KsponSpeech"
    for i in range(1, 6):
        write_ksponspeech(corpus / f"KsponSpeech_0{i}",
                          {f"KsponSpeech_0{i}{g:02d}": [g, g + 3] for g in range(3)})
    eval_dir = corpus / "KsponSpeech_eval/eval_clean"
    targets = write_ksponspeech(eval_dir.parent, {"eval_clean": [1, 2, 5]})
    (corpus / "KsponSpeech_scripts").mkdir()
    script = [f"{pcm.relative_to(corpus).as_posix()} :: "
              + pcm.with_suffix(".txt").read_bytes().decode("cp949") for pcm in targets]
    (corpus / "KsponSpeech_scripts/eval_clean.trn").write_text("\n".join(script) + "\n")
    for pcm in targets:
        pcm.with_suffix(".txt").unlink()  # the eval set's text lives in the script only

    repo = copy_project(tmp_path / "repo")
    params = yaml.safe_load((repo / "examples/ko-course.yaml").read_text())
    params["base_model"] = str(make_tiny_whisper(tmp_path / "tiny", mute=True))
    for source in params["sources"].values():
        source["corpus"]["path"] = source["corpus"]["path"].replace("/data/KsponSpeech",
                                                                    str(corpus))
    params["train"].update(max_steps=1, per_device_batch_size=2, gradient_accumulation_steps=1,
                           warmup_steps=0, eval_steps=0, save_steps=10, logging_steps=1,
                           predict_with_generate=False, gradient_checkpointing=False,
                           dataloader_num_workers=0, spec_augment=False)
    params["export"].update(interpolation=[1.0], checkpoints=False)
    params["evaluate"].update(beam_size=1, device="cpu")
    params["labels"]["device"] = "cpu"
    (repo / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False,
                                                     allow_unicode=True))
    run(["git", "commit", "-qam", "the Korean course on fixtures"], repo)
    run(["dvc", "repro"], repo, timeout=1500)  # ~50 stage runs: 8.5 min on a slow 2-core box
    assert json.loads(run(["dvc", "status", "--json"], repo).stdout) == {}

    split = json.loads((repo / "metrics/split.json").read_text())
    assert [v.split("/")[0] for v in split["test"]["videos"]] == ["kspon-eval"]
    assert split["test"]["reference"] == ["corpus"]
    for i in range(1, 6):  # each round trains on its own slice only
        videos = split["rounds"][f"round{i}"]["videos"]
        assert videos and {v.split("/")[0] for v in videos} == {f"kspon-0{i}"}
    test = pd.read_csv(repo / "data/split/test.csv")
    assert test["text"].tolist() == list(targets.values())  # gold, notation resolved
    metrics = json.loads((repo / "metrics/eval.json").read_text())
    assert {"baseline", "round1", "round4", "finetuned"} <= set(metrics)
    assert metrics["finetuned"]["cer"] >= 0
    lock = yaml.safe_load((repo / "dvc.lock").read_text())["stages"]
    assert "models/rounds/round4" in {d["path"] for d in lock["train@round5"]["deps"]}
