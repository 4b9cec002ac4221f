"""Labelled corpora as sources: utterances with their text, read in place, never copied raw.

A source may be a labelled corpus (``sources.NAME.corpus``) instead of media to download. It
runs through the same stages as media and leaves the same per-source outputs, so ``split``,
``train`` and ``evaluate`` know one data model:

- ``download@S`` indexes the corpus (:func:`index_corpus`): every utterance with its audio (a
  span of it, for a manifest), its text and its group. An utterance with a missing audio file,
  an empty or undecodable transcript, a duplicated path or an unreadable index row is
  reported in ``report.json`` with its file and line and skipped; the rest is kept. Each
  group is one item of ``manifest.csv``: the unit the split keeps whole, so no speaker or
  session lands in two splits (KsponSpeech: its folders of consecutive utterances of one
  conversation; Common Voice: the speaker, ``client_id``; a manifest: its ``group`` column,
  else the audio file, so spans of one recording stay together; a Hugging Face dataset:
  ``group_column``, else each row).
- ``convert@S`` probes each utterance's audio (:func:`convert_corpus`): format, rate,
  channels, length, a span past the end, truncated PCM.
- ``resample@S`` decodes each utterance in this process (:func:`resample_corpus`): numpy for
  headerless ``.pcm``, soundfile for WAV/FLAC/MP3/Ogg, PyAV for other compressed formats;
  mean of the channels and soxr to 16 kHz as the media path does; 16 kHz 16-bit mono input is
  copied sample for sample. Each group becomes one WAV, its utterances back to back (each
  padded with under a millisecond of silence, so utterances start on whole milliseconds),
  with Silero VAD scores like media, and ``utterances.csv`` gives each utterance's span.
- ``segment@S`` cuts each utterance out whole as its own chunk (no re-segmentation); only one
  longer than ``segment.max_s`` is split, at a pause where its text has a clause boundary
  (tubetune.segment.corpus_spans), or rejected.
- ``pseudo-label@S`` takes the corpus text as the label (``label_source: corpus``),
  normalised per language; the text filters apply and the teacher runs only as an opt-in
  cross-check (``labels.max_corpus_disagreement``).

A corpus is identified by its path, like local media: the index records each audio file's
size, not its content, so after changing a corpus in place run ``dvc repro -f download@NAME``
(and ``-f resample@NAME`` when audio changed at the same size).
"""

from __future__ import annotations

import csv
import dataclasses
import io
import json
import logging
import os
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import soundfile as sf
import soxr
from tqdm import tqdm

from tubetune.audio import (
    NEAR_SILENT_DBFS,
    RESAMPLED_COLUMNS,
    MediaError,
    read_table,
    rms_dbfs,
)
from tubetune.constants import SAMPLE_RATE
from tubetune.fsutil import atomic_path, atomic_write_text, safe_stem
from tubetune.items import MANIFEST_COLUMNS, ItemReport, StageError
from tubetune.params import LANGUAGE_RE, CorpusParams
from tubetune.subtitles import Cue
from tubetune.vad import level_dbfs, save_scores, score_file, scores_path

log = logging.getLogger(__name__)

CORPUS_JSON = "corpus.json"
"""The corpus's reading options (format, path, columns), handed from stage to stage."""
UTTERANCES_CSV = "utterances.csv"
INDEX_COLUMNS = ["item", "audio", "start_s", "end_s", "text", "size", "origin"]
"""``download``: ``audio`` is a path relative to the corpus's audio root, or a Hugging Face
row number; ``start_s``/``end_s`` empty for the whole file; ``origin`` the file (and line)
the utterance was read from, which every report names."""
PROBED_COLUMNS = [*INDEX_COLUMNS, "sample_rate", "channels", "duration_s"]
"""``convert``: the index with each utterance's audio described."""
SPAN_COLUMNS = ["item", "start_ms", "end_ms", "text", "origin"]
"""``resample``: where each utterance lies in its group's 16 kHz WAV."""
KSPON_AUDIO = (".pcm", ".wav", ".flac")  # KsponSpeech ships .pcm; converted copies are common
TRN_SEPARATOR = " :: "
_END_TOLERANCE_S = 0.05  # a span may end this much past the decoded audio (rounded times)
_WAV_LIMIT_BYTES = 2**32 - 2**20  # larger groups are written as RF64 (WAV's 4 GB limit)


@dataclass(frozen=True)
class Utterance:
    """One utterance as a corpus layout lists it."""

    group: str
    audio: str
    text: str
    origin: str
    start_s: float | None = None
    end_s: float | None = None
    language: str = ""


Found = Utterance | tuple[str, str]  # an utterance, or (origin, reason) of a bad entry


# ------------------------------------------------------------------------------ text


def decode_text(data: bytes, encoding: str = "auto") -> str:
    """Transcript bytes as text: ``auto`` tries UTF-8 (a BOM dropped), then CP949
    (KsponSpeech's own encoding); raises UnicodeDecodeError when neither fits."""
    if encoding != "auto":
        return data.decode(encoding)
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError:
        return data.decode("cp949")


def _undecodable(exc: UnicodeDecodeError, encoding: str) -> str:
    wanted = "UTF-8 or CP949" if encoding == "auto" else encoding
    return f"not {wanted} text (byte 0x{exc.object[exc.start]:02x} at offset {exc.start})"


def _table(path: Path, shown: str, encoding: str, delimiter: str, required: set[str],
           quoting: int = csv.QUOTE_MINIMAL) -> Iterator[tuple[str, dict[str, str] | str]]:
    """Rows of a CSV/TSV index with a header line, one utterance a line, each with its
    origin ``shown:line``; lines that cannot be read come out as ``(origin, reason)``."""
    header: list[str] | None = None
    for number, raw in enumerate(path.read_bytes().splitlines(), 1):
        origin = f"{shown}:{number}"
        if not raw.strip():
            continue
        try:
            line = decode_text(raw, encoding)
            fields = next(csv.reader([line], delimiter=delimiter, quoting=quoting))
        except UnicodeDecodeError as exc:
            if header is None:
                raise StageError(f"{origin}: cannot read the header: "
                                 f"{_undecodable(exc, encoding)}") from None
            yield origin, _undecodable(exc, encoding)
            continue
        except csv.Error as exc:
            yield origin, f"unreadable row: {exc}"
            continue
        if header is None:
            header = [name.strip().lstrip("\ufeff") for name in fields]
            missing = sorted(required - set(header))
            if missing:
                raise StageError(f"{shown}: no column(s) {', '.join(missing)} in its header "
                                 f"(found: {', '.join(header)})")
            continue
        if len(fields) != len(header):
            yield origin, (f"unreadable row: {len(fields)} fields where the header has "
                           f"{len(header)}")
            continue
        yield origin, dict(zip(header, fields, strict=True))


def _seconds(row: dict[str, str], key: str) -> float | None:
    """An optional time column in seconds; ValueError naming it when it is not one."""
    value = row.get(key, "").strip()
    if not value:
        return None
    seconds = float(value)
    if not seconds >= 0:
        raise ValueError(f"{key} {value!r} is not a time in seconds >= 0")
    return seconds


# --------------------------------------------------------------------------- layouts


def _manifest(corpus: CorpusParams) -> Iterator[Found]:
    """``path,text[,start_s,end_s][,language][,group]`` rows; paths relative to the file."""
    path = Path(corpus.path)
    tsv = path.suffix.lower() == ".tsv"
    rows = _table(path, corpus.path, corpus.encoding, "\t" if tsv else ",", {"path", "text"},
                  csv.QUOTE_NONE if tsv else csv.QUOTE_MINIMAL)
    for found in rows:
        if not isinstance(found[1], dict):
            yield found
            continue
        origin, row = found
        try:
            start, end = _seconds(row, "start_s"), _seconds(row, "end_s")
        except ValueError as exc:
            yield origin, f"unreadable row: {exc}"
            continue
        if start is not None and end is not None and end <= start:
            yield origin, f"unreadable row: end_s {end:g} is not after start_s {start:g}"
            continue
        language = row.get("language", "").strip()
        if language and not LANGUAGE_RE.match(language):
            yield origin, f"unreadable row: language {language!r} is not a code like ko or zh-TW"
            continue
        audio = row["path"].strip()
        yield Utterance(row.get("group", "").strip() or audio, audio, row["text"], origin,
                        start, end, language)


def _ksponspeech(corpus: CorpusParams) -> Iterator[Found]:
    """Audio files each with a ``.txt`` transcript next to it (or the lines of a ``trn``
    script, ``path :: text``), grouped by folder."""
    root = Path(corpus.path)
    if corpus.trn:
        shown = f"{corpus.path}/{corpus.trn}"
        for number, raw in enumerate((root / corpus.trn).read_bytes().splitlines(), 1):
            origin = f"{shown}:{number}"
            if not raw.strip():
                continue
            try:
                line = decode_text(raw, corpus.encoding)
            except UnicodeDecodeError as exc:
                yield origin, _undecodable(exc, corpus.encoding)
                continue
            audio, sep, text = line.partition(TRN_SEPARATOR)
            if not sep:
                yield origin, f"unreadable line: no {TRN_SEPARATOR.strip()!r} between path and text"
                continue
            audio = audio.strip()
            yield Utterance(_folder(audio, root), audio, text, origin)
        return
    for folder, dirs, files in os.walk(root):
        dirs.sort()
        here = Path(folder)
        split = [os.path.splitext(name) for name in sorted(files)]
        audio_stems = {stem for stem, ext in split if ext.lower() in KSPON_AUDIO}
        transcripts = {stem for stem, ext in split if ext == ".txt"}
        for stem, ext in split:
            rel = (here / (stem + ext)).relative_to(root).as_posix()
            origin = f"{corpus.path}/{rel}"
            if ext == ".txt" and stem not in audio_stems:
                yield origin, "no audio file next to the transcript"
            if ext.lower() not in KSPON_AUDIO:
                continue
            if stem not in transcripts:
                yield origin, f"no transcript {stem}.txt next to it"
                continue
            try:
                text = decode_text((here / f"{stem}.txt").read_bytes(), corpus.encoding)
            except UnicodeDecodeError as exc:
                yield f"{origin[: -len(ext)]}.txt", _undecodable(exc, corpus.encoding)
                continue
            yield Utterance(_folder(rel, root), rel, text, origin)


def _folder(audio: str, root: Path) -> str:
    """An utterance's group by folder: its parent folder, or the corpus's own name."""
    parent = Path(audio).parent.as_posix()
    return root.name if parent == "." else parent


def _commonvoice(corpus: CorpusParams) -> Iterator[Found]:
    """``clips/`` and a clip list (``path``, ``sentence``, ``client_id``): the speaker is
    the group (a clip on its own where the list has no ``client_id``)."""
    shown = f"{corpus.path}/{corpus.tsv}"
    rows = _table(Path(corpus.path) / corpus.tsv, shown, corpus.encoding, "\t",
                  {"path", "sentence"}, csv.QUOTE_NONE)
    for found in rows:
        if not isinstance(found[1], dict):
            yield found
            continue
        origin, row = found
        audio = f"clips/{row['path'].strip()}"
        yield Utterance(row.get("client_id", "").strip() or audio, audio, row["sentence"], origin)


def _hf_dataset(corpus: CorpusParams) -> Iterator[Found]:
    """Rows of a ``save_to_disk`` folder: text and group from their columns, the audio
    referred to by row number (it is read from the dataset again when decoded)."""
    import pyarrow.compute as pc

    dataset = _load_dataset(corpus)
    columns = [c for c in (corpus.text_column, corpus.audio_column, corpus.group_column) if c]
    missing = [c for c in columns if c not in dataset.column_names]
    if missing:
        raise StageError(f"{corpus.path}: no column {missing[0]!r} in the dataset (columns: "
                         f"{', '.join(dataset.column_names)})")
    texts = list(dataset[corpus.text_column])
    groups = list(dataset[corpus.group_column]) if corpus.group_column else None
    audio = dataset.select_columns([corpus.audio_column]).with_format("arrow")
    row = 0
    for batch in audio.iter(batch_size=1024):
        column = batch.column(corpus.audio_column)
        has_audio = pc.or_(pc.is_valid(pc.struct_field(column, "bytes")),
                           pc.is_valid(pc.struct_field(column, "path"))).to_pylist()
        for present in has_audio:
            origin = f"{corpus.path} row {row}"
            group = groups[row] if groups is not None else f"row-{row}"
            if not present:
                yield origin, "no audio (neither bytes nor a path)"
            elif group is None or str(group) == "":
                yield origin, f"empty {corpus.group_column!r}"
            else:
                yield Utterance(str(group), str(row), texts[row] or "", origin)
            row += 1


def _load_dataset(corpus: CorpusParams):
    """The dataset at ``corpus.path`` (``split`` of a DatasetDict), audio not decoded."""
    import datasets

    try:
        dataset = datasets.load_from_disk(corpus.path)
    except (FileNotFoundError, ValueError) as exc:
        raise StageError(f"{corpus.path}: not a dataset saved with save_to_disk ({exc})") from None
    if isinstance(dataset, datasets.DatasetDict):
        if corpus.split not in dataset:
            raise StageError(f"{corpus.path}: a dataset with splits {', '.join(dataset)}; name "
                             f"one as corpus.split (got {corpus.split!r})")
        dataset = dataset[corpus.split]
    if corpus.audio_column in dataset.column_names:
        dataset = dataset.cast_column(corpus.audio_column, datasets.Audio(decode=False))
    return dataset


LAYOUTS: dict[str, Callable[[CorpusParams], Iterator[Found]]] = {
    "manifest": _manifest, "ksponspeech": _ksponspeech, "commonvoice": _commonvoice,
    "hf_dataset": _hf_dataset,
}


def audio_root(corpus: CorpusParams) -> Path:
    """The folder an utterance's ``audio`` path is relative to."""
    path = Path(corpus.path)
    return path.parent if corpus.format == "manifest" else path


# -------------------------------------------------------------------------- download


def index_corpus(name: str, corpus: CorpusParams, out_dir: Path, language: str,
                 strict: bool = False) -> ItemReport:
    """Download stage of a corpus source: ``manifest.csv`` (one item per group),
    ``utterances.csv`` (the index), ``corpus.json`` and ``report.json`` in ``out_dir``,
    which is replaced as a whole.

    StageError (one line naming the path) when the corpus is missing or lists no utterance
    at all; bad utterances are reported and skipped (``strict``: the stage fails after
    writing its report when any was bad).
    """
    if not Path(corpus.path).exists():
        raise StageError(f"download {name}: corpus path {corpus.path!r} does not exist "
                         f"(sources.{name}.corpus.path)")
    if corpus.format == "ksponspeech" and corpus.trn and not (Path(corpus.path) / corpus.trn
                                                              ).is_file():
        raise StageError(f"download {name}: no script {corpus.trn!r} in {corpus.path!r} "
                         f"(sources.{name}.corpus.trn)")
    if corpus.format == "commonvoice" and not (Path(corpus.path) / corpus.tsv).is_file():
        raise StageError(f"download {name}: no clip list {corpus.tsv!r} in {corpus.path!r} "
                         f"(sources.{name}.corpus.tsv)")
    report = ItemReport("download", name)
    root = audio_root(corpus)
    rows: list[dict[str, object]] = []
    seen: dict[tuple[str, float | None, float | None], str] = {}
    items: dict[str, tuple[str, str]] = {}  # item -> (group, language)
    sizes: dict[str, int] = {}
    found = 0
    for entry in tqdm(LAYOUTS[corpus.format](corpus), desc=f"index {name}", unit="utt",
                      disable=None):
        found += 1
        if isinstance(entry, tuple):
            report.fail(*entry)
            continue
        text = " ".join(entry.text.split())
        if corpus.format != "hf_dataset":  # ./a.wav and a.wav are one file
            entry = dataclasses.replace(entry, audio=Path(entry.audio).as_posix())
        key = (entry.audio, entry.start_s, entry.end_s)
        item = "corpus-" + safe_stem(entry.group)
        if not text:
            report.fail(entry.origin, "empty transcript")
            continue
        if key in seen:
            report.fail(entry.origin, f"duplicate of {seen[key]} (the same audio and span)")
            continue
        if corpus.format == "hf_dataset":
            size = 0
        else:
            try:
                size = (root / entry.audio).stat().st_size
            except OSError:
                report.fail(entry.origin, f"audio file not found: {entry.audio}")
                continue
        group_language = items.setdefault(item, (entry.group, entry.language))[1]
        if entry.language != group_language:
            report.fail(entry.origin, f"group {entry.group!r} mixes languages "
                        f"({group_language or 'unset'}, then {entry.language or 'unset'}); give "
                        "each language its own group")
            continue
        seen[key] = entry.origin
        sizes[item] = sizes.get(item, 0) + size
        rows.append({"item": item, "audio": entry.audio, "start_s": entry.start_s,
                     "end_s": entry.end_s, "text": text, "size": size, "origin": entry.origin})
    if not found:
        raise StageError(f"download {name}: corpus {corpus.path!r} ({corpus.format}) has no "
                         "utterances")
    rows.sort(key=lambda row: row["item"])  # stable: the layout's order within a group
    kept = {row["item"] for row in rows}
    manifest = [
        {"item": item, "media": "", "id": f"{corpus.path}#{group}", "extractor": "corpus",
         "title": group, "input_url": corpus.path, "webpage_url": corpus.path,
         "language": lang or language, "subtitles": "", "size": sizes[item], "sha256": ""}
        for item, (group, lang) in sorted(items.items()) if item in kept
    ]
    report.ok.extend(row["item"] for row in manifest)
    with atomic_path(out_dir) as tmp:
        tmp.mkdir()
        _write(tmp / "manifest.csv", manifest, list(MANIFEST_COLUMNS))
        _write(tmp / UTTERANCES_CSV, rows, INDEX_COLUMNS)
        _write_corpus_json(tmp, corpus)
        report.write(tmp / "report.json")
    log.info("download %s: %d utterances in %d groups indexed from %s", name, len(rows),
             len(manifest), corpus.path)
    report.finish(strict=strict)
    return report


def drop_index(out_dir: Path) -> None:
    """Remove a corpus index from a source's download folder (the source became media)."""
    for name in (CORPUS_JSON, UTTERANCES_CSV):
        (Path(out_dir) / name).unlink(missing_ok=True)


def is_corpus(stage_dir: Path) -> bool:
    """Whether a source's stage folder (raw or converted) holds a corpus."""
    return (Path(stage_dir) / CORPUS_JSON).is_file()


def _write_corpus_json(out_dir: Path, corpus: CorpusParams) -> None:
    data = json.dumps(dataclasses.asdict(corpus), indent=2, sort_keys=True)
    atomic_write_text(out_dir / CORPUS_JSON, data + "\n")


def read_corpus_json(stage_dir: Path) -> CorpusParams:
    """The corpus options a download stage recorded."""
    return CorpusParams(**json.loads((Path(stage_dir) / CORPUS_JSON).read_text()))


def _write(path: Path, rows: list[dict[str, object]], columns: list[str]) -> None:
    frame = pd.DataFrame(rows, columns=columns)
    atomic_write_text(path, frame.to_csv(index=False, lineterminator="\n"))


def _read_index(path: Path, columns: list[str]) -> pd.DataFrame:
    """A stage's utterance table, in item order (utterance order kept within an item);
    ``start_s``/``end_s`` NaN for a whole file."""
    frame = read_table(path, columns)
    for key in ("start_s", "end_s"):
        frame[key] = pd.to_numeric(frame[key].where(frame[key] != ""))
    return frame


def _span(value: float) -> float | None:
    return None if pd.isna(value) else float(value)


# ----------------------------------------------------------------------------- audio


@dataclass(frozen=True)
class Described:
    """What convert learns about one utterance's audio."""

    sample_rate: int
    channels: int
    duration_s: float  # of the whole file


class CorpusAudio:
    """Opens the audio of a corpus's utterances: files under its audio root, or the rows
    of a Hugging Face dataset. Decodes in this process, never one ffmpeg per utterance."""

    def __init__(self, corpus: CorpusParams) -> None:
        self.corpus = corpus
        self.root = audio_root(corpus)
        self._dataset = None
        self._whole: tuple[str, np.ndarray] | None = None  # the last file decoded whole

    def _open(self, ref: str) -> Path | io.BytesIO:
        if self.corpus.format != "hf_dataset":
            return self.root / ref
        if self._dataset is None:
            self._dataset = _load_dataset(self.corpus)
        value = self._dataset[int(ref)][self.corpus.audio_column]
        if value.get("bytes"):
            return io.BytesIO(value["bytes"])
        path = Path(value["path"])
        return path if path.is_absolute() else self.root / path

    def _pcm(self, ref: str) -> bool:
        return self.corpus.format != "hf_dataset" and ref.lower().endswith(".pcm")

    def describe(self, ref: str, size: int) -> Described:
        """Rate, channels and length of an utterance's audio; MediaError saying why not."""
        if self._pcm(ref):
            if size == 0:
                raise MediaError("empty file")
            if size % 2:
                raise MediaError("truncated: an odd number of bytes is not 16-bit PCM")
            return Described(self.corpus.sample_rate, 1, size / 2 / self.corpus.sample_rate)
        source = self._open(ref)
        try:
            info = sf.info(source)
        except (sf.SoundFileError, RuntimeError):  # not a format libsndfile reads: PyAV
            return _av_describe(_rewound(source))
        return Described(info.samplerate, info.channels, info.frames / info.samplerate)

    def read(self, ref: str, start_s: float | None, end_s: float | None) -> np.ndarray:
        """The utterance as 16 kHz mono int16; MediaError when it does not decode."""
        start = start_s or 0.0
        try:
            if self._pcm(ref):
                rate = self.corpus.sample_rate
                first = round(start * rate)
                count = -1 if end_s is None else round(end_s * rate) - first
                samples = np.fromfile(self.root / ref, dtype="<i2", count=count,
                                      offset=2 * first)
                return samples if rate == SAMPLE_RATE else _to_16k(samples / 32768.0, rate)
            source = self._open(ref)
            try:
                fh = sf.SoundFile(source)
            except (sf.SoundFileError, RuntimeError):  # not a format libsndfile reads: PyAV
                return self._span_of_whole(ref, source, start, end_s)
            with fh:
                rate = fh.samplerate
                first = min(round(start * rate), fh.frames)
                fh.seek(first)
                frames = -1 if end_s is None else round(end_s * rate) - first
                if rate == SAMPLE_RATE and fh.channels == 1:
                    return fh.read(frames, dtype="int16")
                mono = fh.read(frames, dtype="float32", always_2d=True).mean(axis=1)
                return _to_16k(mono, rate)
        except sf.LibsndfileError as exc:
            raise MediaError(f"cannot decode: {exc.error_string}") from None
        except OSError as exc:  # its str() names the (machine-dependent) path
            raise MediaError(f"cannot read: {exc.strerror or type(exc).__name__}") from None

    def _span_of_whole(self, ref: str, source: Path | io.BytesIO, start_s: float,
                       end_s: float | None) -> np.ndarray:
        """A span of a file PyAV decodes whole; the last one is kept, as a manifest's spans
        of one long recording come one after another."""
        if self._whole is None or self._whole[0] != ref:
            self._whole = (ref, _av_decode(_rewound(source)))
        end = None if end_s is None else round(end_s * SAMPLE_RATE)
        return self._whole[1][round(start_s * SAMPLE_RATE) : end]


def _rewound(source: Path | io.BytesIO) -> Path | io.BytesIO:
    if isinstance(source, io.BytesIO):
        source.seek(0)
    return source


def _to_16k(mono: np.ndarray, rate: int) -> np.ndarray:
    """Float mono at ``rate`` as 16 kHz int16 (soxr, as the media path's resampler)."""
    if rate != SAMPLE_RATE:
        mono = soxr.resample(np.ascontiguousarray(mono, dtype=np.float32), rate, SAMPLE_RATE,
                             quality="HQ")
    return np.clip(np.rint(np.asarray(mono) * 32768.0), -32768, 32767).astype(np.int16)


def _av_error(exc: Exception) -> MediaError:
    """PyAV's error as a reason without the (machine-dependent) path."""
    return MediaError(f"cannot decode: {getattr(exc, 'strerror', None) or type(exc).__name__}")


def _av_describe(source: Path | io.BytesIO) -> Described:
    import av

    try:
        with av.open(source) as container:
            if not container.streams.audio:
                raise MediaError("no audio stream")
            stream = container.streams.audio[0]
            if stream.duration is not None:
                duration = float(stream.duration * stream.time_base)
            elif container.duration is not None:
                duration = container.duration / av.time_base
            else:  # no declared length: count it
                duration = sum(frame.samples for frame in container.decode(stream)) / stream.rate
            return Described(stream.rate, stream.codec_context.layout.nb_channels, duration)
    except av.FFmpegError as exc:
        raise _av_error(exc) from None


def _av_decode(source: Path | io.BytesIO) -> np.ndarray:
    """A whole compressed file as 16 kHz mono int16 (PyAV decodes, soxr resamples)."""
    import av

    try:
        with av.open(source) as container:
            if not container.streams.audio:
                raise MediaError("no audio stream")
            stream = container.streams.audio[0]
            resampler = av.AudioResampler(format="fltp")  # planar float, own layout and rate
            planes = [f.to_ndarray() for frame in container.decode(stream)
                      for f in resampler.resample(frame)]
            planes += [f.to_ndarray() for f in resampler.resample(None)]
            rate = stream.rate
    except av.FFmpegError as exc:
        raise _av_error(exc) from None
    if not planes:
        raise MediaError("cannot decode: no audio data")
    return _to_16k(np.concatenate(planes, axis=1).mean(axis=0), rate)


# --------------------------------------------------------------------------- convert


def convert_corpus(raw_dir: Path, out_dir: Path, source: str) -> ItemReport:
    """Convert stage of a corpus source: each utterance's audio probed (rate, channels,
    length; truncated PCM and spans past the end reported and dropped) into
    ``utterances.csv``, with ``corpus.json`` and ``report.json``; ``out_dir`` is replaced."""
    raw_dir, out_dir = Path(raw_dir), Path(out_dir)
    corpus = read_corpus_json(raw_dir)
    index = _read_index(raw_dir / UTTERANCES_CSV, INDEX_COLUMNS)
    audio = CorpusAudio(corpus)
    report = ItemReport("convert", source)
    rows = []
    for row in tqdm(index.to_dict("records"), desc=f"probe {source}", unit="utt", disable=None):
        try:
            info = audio.describe(row["audio"], int(row["size"]))
            start = _span(row["start_s"]) or 0.0
            end = _span(row["end_s"]) or info.duration_s
            if start >= info.duration_s:
                raise MediaError(f"the span starts at {start:g} s, past the end of its audio "
                                 f"({info.duration_s:.3f} s)")
            if end > info.duration_s + _END_TOLERANCE_S:
                raise MediaError(f"the span ends at {end:g} s, past the end of its audio "
                                 f"({info.duration_s:.3f} s)")
        except MediaError as exc:
            report.fail(row["origin"], str(exc))
            continue
        rows.append({**row, "sample_rate": info.sample_rate, "channels": info.channels,
                     "duration_s": round(min(end, info.duration_s) - start, 3)})
    report.ok.extend(sorted({row["item"] for row in rows}))
    with atomic_path(out_dir) as tmp:
        tmp.mkdir()
        _write(tmp / UTTERANCES_CSV, rows, PROBED_COLUMNS)
        _write_corpus_json(tmp, corpus)
        report.write(tmp / "report.json")
    report.finish()
    return report


# -------------------------------------------------------------------------- resample


def resample_corpus(converted_dir: Path, out_dir: Path, source: str,
                    score_speech: bool = True) -> ItemReport:
    """Resample stage of a corpus source: each group as one 16 kHz mono 16-bit WAV
    (``<item>.wav``, its utterances back to back, each padded to a whole millisecond),
    Silero VAD scores when ``score_speech``, ``audio.csv`` as for media and
    ``utterances.csv`` with each utterance's span in it. Utterances that do not decode are
    reported and left out; ``out_dir`` is replaced."""
    converted_dir, out_dir = Path(converted_dir), Path(out_dir)
    audio = CorpusAudio(read_corpus_json(converted_dir))
    index = _read_index(converted_dir / UTTERANCES_CSV, PROBED_COLUMNS)
    report = ItemReport("resample", source)
    audio_rows: list[dict[str, object]] = []
    spans: list[dict[str, object]] = []
    step = SAMPLE_RATE // 1000
    with atomic_path(out_dir) as tmp_dir:
        tmp_dir.mkdir()
        groups = index.groupby("item", sort=False)
        for item, rows in tqdm(groups, desc=f"resample {source}", unit="group", disable=None):
            wav = tmp_dir / f"{item}.wav"
            expected = 2 * SAMPLE_RATE * pd.to_numeric(rows["duration_s"]).sum()
            written = 0
            with sf.SoundFile(wav, "w", SAMPLE_RATE, 1, "PCM_16",
                              format="RF64" if expected > _WAV_LIMIT_BYTES else "WAV") as out:
                for row in rows.itertuples(index=False):
                    try:
                        samples = audio.read(row.audio, _span(row.start_s), _span(row.end_s))
                        if not len(samples):
                            raise MediaError("cannot decode: no audio data")
                    except MediaError as exc:
                        report.fail(row.origin, str(exc))
                        continue
                    padded = np.concatenate([samples, np.zeros(-len(samples) % step, np.int16)])
                    out.write(padded)
                    spans.append({"item": item, "start_ms": written // step,
                                  "end_ms": (written + len(padded)) // step, "text": row.text,
                                  "origin": row.origin})
                    written += len(padded)
            if not written:
                wav.unlink()
                continue
            if score_speech:
                scores = score_file(wav)
                save_scores(scores_path(wav), scores)
                level = round(level_dbfs(scores, written), 2)
            else:
                level = round(rms_dbfs(wav), 2)
            if level < NEAR_SILENT_DBFS:
                log.warning("resample %s: %s is near-silent (%.1f dBFS); flagged, kept", source,
                            item, level)
            audio_rows.append({"item": item, "path": wav.name,
                               "duration_s": round(written / SAMPLE_RATE, 3),
                               "sample_rate": SAMPLE_RATE, "channels": 1, "codec": "pcm_s16le",
                               "rms_dbfs": level, "near_silent": level < NEAR_SILENT_DBFS})
            report.ok.append(item)
        _write(tmp_dir / "audio.csv", audio_rows, RESAMPLED_COLUMNS)
        _write(tmp_dir / UTTERANCES_CSV, spans, SPAN_COLUMNS)
        report.write(tmp_dir / "report.json")
    report.finish()
    return report


def utterance_cues(resampled_dir: Path) -> dict[str, list[Cue]] | None:
    """Each item's utterances (span in its WAV and text) of a corpus source, None for media.
    The segment stage cuts them out; their text becomes the label."""
    path = Path(resampled_dir) / UTTERANCES_CSV
    if not path.is_file():
        return None
    frame = pd.read_csv(path, dtype={"item": str, "text": str}, keep_default_na=False)
    cues: dict[str, list[Cue]] = {}
    for row in frame.itertuples(index=False):
        cues.setdefault(row.item, []).append(Cue(int(row.start_ms), int(row.end_ms), row.text))
    return cues


def item_languages(raw_dir: Path) -> dict[str, str] | None:
    """The language of each item of a corpus source (its manifest's), None for media."""
    if not is_corpus(raw_dir):
        return None
    manifest = pd.read_csv(Path(raw_dir) / "manifest.csv", dtype=str, keep_default_na=False)
    return dict(zip(manifest["item"], manifest["language"], strict=True))
