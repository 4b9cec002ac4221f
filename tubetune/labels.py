"""Labels for the training chunks: subtitles where the video has them, the teacher elsewhere.

Every chunk is transcribed by the teacher. With ``source: auto`` (default) a chunk whose
video has uploader subtitles takes the subtitle text as its label: the segment stage cut
such videos along their cues, so the label is the text of exactly the whole cues the chunk
covers, and ``timings`` holds their times within the chunk. The teacher's transcript serves
as a check: a chunk where the two disagree (subtitles out of sync or not verbatim) is
rejected. ``pseudo`` always uses the teacher; ``subtitles`` uses only chunks that have
subtitles, and with ``max_subtitle_disagreement: null`` trusts them without running the
teacher at all (no model work: for corpora with reliable subtitles, and for benchmarks of
everything else).

Every chunk ends in exactly one of two CSVs: ``labels.csv`` (kept, with the teacher's
scores so filters can be tuned without re-transcribing) or ``rejects.csv`` (with a
reason code and its detail), and so does the subtitle time the segment stage could not
chunk (its ``rejects.csv``); ``subtitles.json`` says how much of the subtitle time the kept
labels hold. Teacher labels go through :mod:`tubetune.filters`; every label is normalised
per language (:func:`tubetune.text.normalize_target`).

A labelled corpus source (:mod:`tubetune.corpus`) is labelled by its own text
(``label_source: corpus``, whatever ``source`` says): each chunk is one utterance, its text
normalised like any target and checked by the text filters; the teacher runs on it only as
a cross-check, when ``max_corpus_disagreement`` is set.

``max_subtitle_disagreement`` defaults to 50 % rather than distil-whisper's 10 %: there
the check guards the *pseudo-label*; here the subtitle is the target and the teacher (often
a small base model, worse than the subtitles) only serves to catch out-of-sync or
non-verbatim subtitles, so a strict bound would mostly throw away good subtitles.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable, Iterator
from dataclasses import asdict, fields
from pathlib import Path

import pandas as pd
from tqdm import tqdm

from tubetune.corpus import item_languages
from tubetune.engines import DecodeOptions, Transcript, pick_beam_size
from tubetune.filters import Rejection, teacher_rejection, text_rejection
from tubetune.fsutil import atomic_path, atomic_write_text
from tubetune.items import ItemReport
from tubetune.metrics import utterance_error_rate
from tubetune.params import LabelParams, ScaleParams
from tubetune.sharding import TeacherSpec, gpu_count, transcribe_batches
from tubetune.subtitles import (
    CoveredCue,
    Cue,
    cues_in_span,
    cut_fraction,
    join_texts,
    label_cues,
    load_covered,
    misplaced_fraction,
)
from tubetune.text import normalize_target

log = logging.getLogger(__name__)

LABEL_COLUMNS = [
    "path", "text", "label_source", "source", "item", "start_ms", "end_ms", "duration_s",
    "language", "language_probability", "avg_logprob", "no_speech_prob", "compression_ratio",
    "num_tokens", "pseudo_text", "disagreement", "timings",
]
"""``timings``: a JSON list of ``[start_ms, end_ms, text]`` relative to the chunk start: the
cues a subtitle label covers (clamped to the chunk), or the teacher's segments; empty where
the times are unknown. Training turns them into Whisper's timestamp tokens."""
SUBTITLE_TIME_JSON = "subtitles.json"
TRANSCRIPT_COLUMNS = [f.name for f in fields(Transcript)]
FLOAT_COLUMNS = ("language_probability", "avg_logprob", "no_speech_prob", "compression_ratio")


def subtitle_rejection(
    subtitle: str, cut: float, disagreement: float | None, params: LabelParams
) -> Rejection | None:
    """Why a chunk's subtitle text is not a usable label, or None."""
    if not subtitle:
        return "no_subtitle", "no subtitle text in the chunk"
    if cut > params.max_subtitle_cut:
        return "subtitle_cut", f"{cut:.0%} of the chunk's subtitle time is in cut cues"
    bound = params.max_subtitle_disagreement
    if disagreement is not None and bound is not None and disagreement > bound:
        return "subtitle_disagrees", f"subtitle vs teacher error rate {disagreement:.0f}%"
    return None


def corpus_rejection(
    text: str, num_tokens: int, duration_s: float, disagreement: float | None, language: str,
    params: LabelParams,
) -> Rejection | None:
    """Why a corpus utterance's text is not a usable label, or None: nothing left after
    normalisation (noise tags only), the teacher disagreeing (when it runs as a check), or a
    text filter (speaking rate, repetition, length)."""
    if not text:
        return "empty", "no text left after normalisation (notation or noise tags only)"
    bound = params.max_corpus_disagreement
    if disagreement is not None and bound is not None and disagreement > bound:
        return "corpus_disagrees", f"corpus text vs teacher error rate {disagreement:.0f}%"
    return text_rejection(text, num_tokens, duration_s, language, params)


def _token_counter(hf_dir: Path) -> Callable[[str], int]:
    """Whisper tokens of a text (no special tokens), by the model's own tokenizer."""
    from tokenizers import Tokenizer

    tokenizer = Tokenizer.from_file(str(hf_dir / "tokenizer.json"))
    return lambda text: len(tokenizer.encode(text, add_special_tokens=False).ids)


def _batches(chunks: pd.DataFrame, size: int) -> Iterator[list]:
    rows = list(chunks.itertuples(index=False))
    for i in range(0, len(rows), size):
        yield rows[i : i + size]


def label_source(
    segments_dir: Path,
    raw_dir: Path,
    out_dir: Path,
    source: str,
    model_dir: Path,
    language: str | None,
    task: str,
    params: LabelParams,
    hf_dir: Path | None = None,
    scale: ScaleParams | None = None,
) -> ItemReport:
    """Label every chunk of ``segments_dir/segments.csv`` into ``out_dir``.

    ``model_dir`` is the CTranslate2 teacher, ``hf_dir`` the transformers one (engine
    ``transformers``; its tokenizer also counts corpus labels' tokens). ``language`` None
    lets the teacher detect it per chunk. A corpus source (tubetune.corpus) is labelled by
    its own text, whatever ``params.source``; the teacher runs on it only as a check
    (``max_corpus_disagreement``). ``scale`` spreads the decoding over processes or a Ray
    cluster (default: this process); the outputs are the same byte for byte either way
    (tubetune/sharding.py).
    """
    scale = scale or ScaleParams()
    report = ItemReport("pseudo-label", source)
    chunks = pd.read_csv(segments_dir / "segments.csv", dtype={"item": str, "path": str,
                                                                "cues": str})
    if "cues" not in chunks:  # a segments.csv from before chunks named their cues
        chunks["cues"] = ""
    corpus = item_languages(raw_dir)  # item -> language for a corpus, None for media
    cues = {} if corpus is not None else label_cues(raw_dir, language, params.source)
    hf_dir = hf_dir or model_dir.parent / "hf"
    spec = TeacherSpec(params.engine, model_dir, hf_dir, params.device, params.compute_type,
                       params.cpu_threads)
    beam_size = pick_beam_size(params.beam_size, "cuda" if gpu_count(spec) else "cpu")
    options = DecodeOptions(language, task, beam_size, tuple(params.temperatures))
    batches = list(_batches(chunks, params.batch_size))
    count_tokens = _token_counter(hf_dir) if corpus is not None else None
    if corpus is not None and params.max_corpus_disagreement is None:
        log.info("%s: corpus text taken as it is; the teacher does not run", source)
        outcomes: list = [[None] * len(batch) for batch in batches]
    elif corpus is None and params.source == "subtitles" and (
            params.max_subtitle_disagreement is None):
        log.info("%s: subtitles taken as they are; the teacher does not run", source)
        outcomes = [[None] * len(batch) for batch in batches]
    else:
        with tqdm(total=len(chunks), desc=f"label {source}", unit="chunk") as bar:
            outcomes = transcribe_batches(
                spec, [[Path(row.path) for row in batch] for batch in batches], options,
                scale.label_runner, scale.label_workers, scale.ray_address, bar.update,
            )
    kept, rejected = [], []
    kept_cue_ms: dict[tuple[str, int], int] = {}
    for batch, outcome in zip(batches, outcomes, strict=True):
        if isinstance(outcome, str):  # one bad batch must not sink the source
            for row in batch:
                report.fail(Path(row.path).name, outcome)
            continue
        for row, t in zip(batch, outcome, strict=True):
            if corpus is not None:
                record, reason, covered = _corpus_label(row, t, source, corpus[row.item] or
                                                        language or "", params, count_tokens)
            else:
                record, reason, covered = _label(row, t, source, cues, language, params)
            name = Path(row.path).name
            if reason:
                rejected.append({**record, "reason": reason[0], "detail": reason[1]})
                report.skip(name, f"{reason[0]}: {reason[1]}")
            else:
                kept.append(record)
                report.ok.append(name)
                for cue in covered:
                    key = (row.item, cue.index)
                    kept_cue_ms[key] = kept_cue_ms.get(key, 0) + cue.duration_ms
    unchunked = _unchunked(segments_dir / "rejects.csv", source, language, params,
                           "subtitles" if corpus is None else "corpus")
    for record in unchunked:
        rejected.append(record)
        report.skip(f"{record['item']} {record['start_ms']}-{record['end_ms']} ms",
                    f"{record['reason']}: {record['detail']}")
    _write_subtitle_time(out_dir / SUBTITLE_TIME_JSON, cues, kept_cue_ms)
    _write_csv(kept, LABEL_COLUMNS, out_dir / "labels.csv")
    _write_csv(rejected, [*LABEL_COLUMNS, "reason", "detail"], out_dir / "rejects.csv")
    report.finish(out_dir / "report.json")
    return report


def _label(
    row, t: Transcript | None, source: str, cues: dict[str, list[Cue]], language: str | None,
    params: LabelParams,
) -> tuple[dict, Rejection | None, list[CoveredCue]]:
    """The label record of one chunk, why it is rejected (None: kept) and the subtitle cues
    its label holds.

    ``t`` None: the teacher did not run (subtitles only); its columns stay empty.
    """
    target_lang = language or (t.language if t else "")
    record, pseudo = _record(row, t, source, target_lang, params)
    duration_s = record["duration_s"]
    covered: list[CoveredCue] = []
    if row.item in cues:
        item_cues = cues[row.item]
        covered = load_covered(row.cues)
        if covered:  # cut along its cues by the segment stage
            cut = misplaced_fraction(item_cues, covered, row.start_ms, row.end_ms)
        else:  # a chunk cut otherwise (segments.csv from elsewhere): the cues mostly inside
            covered = [CoveredCue(i, item_cues[i].start_ms, item_cues[i].end_ms, item_cues[i].text)
                       for i in cues_in_span(item_cues, row.start_ms, row.end_ms)]
            cut = cut_fraction(item_cues, row.start_ms, row.end_ms)
        subtitle, timings = _cue_text(covered, row.start_ms, row.end_ms, target_lang, params)
        disagreement = (utterance_error_rate(subtitle, pseudo, target_lang)
                        if subtitle and t is not None else None)
        record.update(text=subtitle, label_source="subtitles", disagreement=disagreement,
                      timings=timings)
        reason = subtitle_rejection(subtitle, cut, disagreement, params)
    elif params.source == "subtitles":
        record.update(text="", label_source="none")
        reason = ("no_subtitles", "video has no subtitles (labels.source: subtitles)")
    else:
        record.update(text=pseudo, label_source="pseudo",
                      timings=_teacher_timings(t.timings, target_lang, params))
        reason = teacher_rejection(t, duration_s, language, params)
        if reason is None and pseudo != t.text:  # normalisation can change the text
            reason = text_rejection(pseudo, t.num_tokens, duration_s, target_lang, params)
    return record, reason, covered


def _record(row, t: Transcript | None, source: str, language: str,
            params: LabelParams) -> tuple[dict, str]:
    """A chunk's label record without its label yet (the teacher's scores, when it ran),
    and the teacher's transcript normalised as a target."""
    pseudo = normalize_target(t.text, language, params.normalize) if t else ""
    scores = asdict(t) if t else dict.fromkeys(TRANSCRIPT_COLUMNS)
    return {
        "path": row.path, "source": source, "item": row.item,
        "start_ms": row.start_ms, "end_ms": row.end_ms,
        "duration_s": round((row.end_ms - row.start_ms) / 1000, 3),
        **scores, "pseudo_text": pseudo, "disagreement": None, "timings": "",
    }, pseudo


def _corpus_label(
    row, t: Transcript | None, source: str, language: str, params: LabelParams,
    count_tokens: Callable[[str], int],
) -> tuple[dict, Rejection | None, list[CoveredCue]]:
    """The label record of a corpus chunk: the text of the utterance it holds, normalised,
    timed as spanning the chunk (the corpus cut the utterance around its speech); why it is
    rejected (None: kept). A corpus holds no subtitle time: no cues are returned."""
    record, pseudo = _record(row, t, source, language, params)
    text, timings = _cue_text(load_covered(row.cues), row.start_ms, row.end_ms, language,
                              params)
    disagreement = utterance_error_rate(text, pseudo, language) if text and t else None
    record.update(text=text, label_source="corpus", disagreement=disagreement, timings=timings)
    return record, corpus_rejection(text, count_tokens(text), record["duration_s"],
                                    disagreement, language, params), []


def _teacher_timings(timings: str, language: str, params: LabelParams) -> str:
    """The teacher's segment times with each segment's text normalised like the label."""
    if not timings:
        return ""
    segments = [[start, end, normalize_target(text, language, params.normalize)]
                for start, end, text in json.loads(timings)]
    return json.dumps(segments, ensure_ascii=False, separators=(",", ":"))


def _cue_text(covered: list[CoveredCue], start_ms: int, end_ms: int, language: str,
              params: LabelParams) -> tuple[str, str]:
    """The label of a chunk's cues (their normalised texts joined) and its ``timings``."""
    texts = [normalize_target(c.text, language, params.normalize) for c in covered]
    length = end_ms - start_ms
    timings = [[min(max(c.start_ms - start_ms, 0), length),
                min(max(c.end_ms - start_ms, 0), length), text]
               for c, text in zip(covered, texts, strict=True)]
    return join_texts(texts), (json.dumps(timings, ensure_ascii=False, separators=(",", ":"))
                               if timings else "")


def _unchunked(rejects_csv: Path, source: str, language: str | None,
               params: LabelParams, label_source: str) -> Iterator[dict]:
    """Reject records for the subtitle time (or corpus utterances) the segment stage left
    without a chunk."""
    if not rejects_csv.is_file():
        return
    frame = pd.read_csv(rejects_csv, dtype={"item": str, "cues": str, "detail": str},
                        keep_default_na=False)
    for row in frame.itertuples(index=False):
        text, timings = _cue_text(load_covered(row.cues), row.start_ms, row.end_ms,
                                  language or "", params)
        yield {**dict.fromkeys(LABEL_COLUMNS), "path": "", "text": text,
               "label_source": label_source, "source": source, "item": row.item,
               "start_ms": row.start_ms, "end_ms": row.end_ms,
               "duration_s": round((row.end_ms - row.start_ms) / 1000, 3), "timings": timings,
               "reason": row.reason, "detail": row.detail}


def _write_subtitle_time(path: Path, cues: dict[str, list[Cue]],
                         kept_cue_ms: dict[tuple[str, int], int]) -> None:
    """How much of the source's subtitle time the kept labels hold (a cue split into pieces
    counts by the pieces kept)."""
    total = sum(c.duration_ms for item_cues in cues.values() for c in item_cues)
    kept = sum(min(ms, cues[item][index].duration_ms)
               for (item, index), ms in kept_cue_ms.items())
    data = {"subtitle_s": round(total / 1000, 3), "kept_s": round(kept / 1000, 3)}
    atomic_write_text(path, json.dumps(data, indent=2, sort_keys=True) + "\n")


def label_report(labels_dir: Path, sources: list[str], out_path: Path) -> dict:
    """Counts and hours kept/rejected per reason and per source, as a DVC metric, with the
    share of the subtitle time that the kept labels hold (``subtitle_time_kept``; null
    without subtitles).

    Prints a table and writes ``out_path`` (JSON).
    """
    per_source: dict[str, dict] = {}
    totals: dict[str, dict] = {"kept": {"chunks": 0, "hours": 0.0}, "rejected": {}}
    subtitle_s = kept_s = 0.0
    for source in sources:
        kept = _read(labels_dir / source / "labels.csv")
        rejects = _read(labels_dir / source / "rejects.csv")
        entry = {
            "kept": _count(kept),
            "kept_by_label_source": {
                k: _count(g) for k, g in kept.groupby("label_source")
            } if len(kept) else {},
            "rejected": {k: _count(g) for k, g in rejects.groupby("reason")}
            if len(rejects) else {},
        }
        time_path = labels_dir / source / SUBTITLE_TIME_JSON
        times = json.loads(time_path.read_text()) if time_path.is_file() else {}
        subtitle_s += times.get("subtitle_s", 0.0)
        kept_s += times.get("kept_s", 0.0)
        entry.update(_subtitle_time(times.get("subtitle_s", 0.0), times.get("kept_s", 0.0)))
        per_source[source] = entry
        _add(totals["kept"], entry["kept"])
        for reason, c in entry["rejected"].items():
            _add(totals["rejected"].setdefault(reason, {"chunks": 0, "hours": 0.0}), c)
    for c in [totals["kept"], *totals["rejected"].values()]:
        c["hours"] = round(c["hours"], 4)
    totals.update(_subtitle_time(subtitle_s, kept_s))
    result = {"total": totals, "sources": per_source}
    atomic_write_text(out_path, json.dumps(result, indent=2, sort_keys=True) + "\n")
    print(f"{'source':<24} {'reason':<22} {'chunks':>7} {'hours':>8}")
    for source, entry in per_source.items():
        print(f"{source:<24} {'kept':<22} {entry['kept']['chunks']:>7} "
              f"{entry['kept']['hours']:>8.3f}")
        for reason, c in sorted(entry["rejected"].items()):
            print(f"{source:<24} {reason:<22} {c['chunks']:>7} {c['hours']:>8.3f}")
    print(f"{'TOTAL':<24} {'kept':<22} {totals['kept']['chunks']:>7} "
          f"{totals['kept']['hours']:>8.3f}")
    for reason, c in sorted(totals["rejected"].items()):
        print(f"{'TOTAL':<24} {reason:<22} {c['chunks']:>7} {c['hours']:>8.3f}")
    for source, entry in [*per_source.items(), ("TOTAL", totals)]:
        if entry["subtitle_time_kept"] is not None:
            print(f"{source:<24} {'subtitle time kept':<22} "
                  f"{entry['subtitle_time_kept']:>16.1%} of {entry['subtitle_hours']:.3f} h")
    return result


def _subtitle_time(subtitle_s: float, kept_s: float) -> dict:
    """Report keys: subtitle hours and the share of them in kept labels (None: no subtitles)."""
    return {"subtitle_hours": round(subtitle_s / 3600, 4),
            "subtitle_time_kept": round(kept_s / subtitle_s, 4) if subtitle_s else None}


def _read(path: Path) -> pd.DataFrame:
    return pd.read_csv(path, dtype=str, keep_default_na=False) if path.is_file() else (
        pd.DataFrame(columns=["duration_s", "reason", "label_source"]))


def _count(frame: pd.DataFrame) -> dict:
    return {"chunks": len(frame),
            "hours": round(pd.to_numeric(frame["duration_s"]).sum() / 3600, 4)}


def _add(total: dict, c: dict) -> None:
    total["chunks"] += c["chunks"]
    total["hours"] += c["hours"]


def _write_csv(rows: list[dict], columns: list[str], path: Path) -> None:
    frame = pd.DataFrame(rows, columns=columns).sort_values(["item", "start_ms"], kind="stable")
    for col in FLOAT_COLUMNS:
        frame[col] = frame[col].astype(float).round(4)
    with atomic_path(path) as tmp:
        frame.to_csv(tmp, index=False, lineterminator="\n")
