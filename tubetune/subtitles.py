"""WebVTT subtitles: parse cues, and turn them into labels for a span of audio.

Uploader subtitles are the closest thing to gold text that web video offers. This module
reads them (including YouTube's rolling auto-captions, whose cues repeat the previous
line) and joins the text of consecutive cues. The segment stage cuts subtitled videos along
their cues (tubetune.segment), so a chunk holds whole cues; for chunks cut otherwise, a cue
belongs to a chunk when most of it lies inside.
"""

from __future__ import annotations

import html
import json
import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from tubetune.text import base_language

_TIME = r"(?:(\d+):)?(\d{1,2}):(\d{2})[.,](\d{3})"
_CUE_TIMING = re.compile(rf"^\s*{_TIME}\s*-->\s*{_TIME}")
_TAG = re.compile(r"<[^>]*>")
_UNSPACED = re.compile(r"[\u3000-\u30ff\u3400-\u9fff\uf900-\ufaff\uff00-\uffef]")
"""Chinese and Japanese characters and punctuation: text written without spaces between them."""


@dataclass(frozen=True)
class Cue:
    """One subtitle cue: times in milliseconds and its plain text."""

    start_ms: int
    end_ms: int
    text: str

    @property
    def duration_ms(self) -> int:
        """Length of the cue."""
        return self.end_ms - self.start_ms


@dataclass(frozen=True)
class CoveredCue:
    """A cue that a chunk covers, or a piece of one (a cue too long for a chunk, split at a
    pause): ``index`` is the cue's position in the item's cues, times (ms on the item's
    timeline, the uploader's) and text are the cue's, or the piece's."""

    index: int
    start_ms: int
    end_ms: int
    text: str

    @property
    def duration_ms(self) -> int:
        """Length of the cue or piece."""
        return self.end_ms - self.start_ms


def dump_covered(covered: Sequence[CoveredCue]) -> str:
    """Covered cues as a CSV cell: a JSON list of ``[index, start_ms, end_ms, text]``."""
    rows = [[c.index, c.start_ms, c.end_ms, c.text] for c in covered]
    return json.dumps(rows, ensure_ascii=False, separators=(",", ":")) if rows else ""


def load_covered(cell: object) -> list[CoveredCue]:
    """The inverse of :func:`dump_covered`; an empty or missing cell is no cues."""
    if not isinstance(cell, str) or not cell:
        return []
    return [CoveredCue(int(i), int(a), int(b), str(t)) for i, a, b, t in json.loads(cell)]


def _ms(h: str | None, m: str, s: str, ms: str) -> int:
    return ((int(h or 0) * 60 + int(m)) * 60 + int(s)) * 1000 + int(ms)


def parse_vtt(text: str) -> list[Cue]:
    """Parse WebVTT text into cues sorted by start time; tags and entities removed."""
    cues: list[Cue] = []
    blocks = re.split(r"\r?\n\s*\r?\n", text.replace("\ufeff", ""))
    for block in blocks:
        lines = block.strip().splitlines()
        for i, line in enumerate(lines):
            match = _CUE_TIMING.match(line)
            if not match:
                continue
            g = match.groups()
            start, end = _ms(*g[:4]), _ms(*g[4:])
            body = " ".join(html.unescape(_TAG.sub("", t)).strip() for t in lines[i + 1 :])
            body = re.sub(r"\s+", " ", body).strip()
            if body and end > start:
                cues.append(Cue(start, end, body))
            break
    return _drop_rolling_repeats(sorted(cues, key=lambda c: (c.start_ms, c.end_ms)))


def _drop_rolling_repeats(cues: list[Cue]) -> list[Cue]:
    """Remove the text that rolling captions repeat from the previous cue."""
    out: list[Cue] = []
    for cue in cues:
        if out and cue.text.startswith(out[-1].text) and cue.start_ms <= out[-1].end_ms + 50:
            rest = cue.text[len(out[-1].text) :].strip()
            if not rest:
                continue
            cue = Cue(cue.start_ms, cue.end_ms, rest)
        out.append(cue)
    return out


def read_vtt(path: Path) -> list[Cue]:
    """Parse a .vtt file."""
    return parse_vtt(Path(path).read_text(encoding="utf-8", errors="replace"))


def join_texts(texts: Sequence[str]) -> str:
    """Consecutive cue texts as one text: a space between them, none between two Chinese or
    Japanese characters (``你好`` + ``今天`` is ``你好今天``; Korean keeps its spaces)."""
    joined = ""
    for text in (t.strip() for t in texts):
        if not text:
            continue
        unspaced = joined and _UNSPACED.match(joined[-1]) and _UNSPACED.match(text[0])
        joined = f"{joined}{text}" if unspaced or not joined else f"{joined} {text}"
    return joined


def _overlap(cue: Cue | CoveredCue, start_ms: int, end_ms: int) -> int:
    return min(cue.end_ms, end_ms) - max(cue.start_ms, start_ms)


def cues_in_span(cues: list[Cue], start_ms: int, end_ms: int, min_inside: float = 0.5) -> list[int]:
    """Indices of the cues that lie mostly (``min_inside`` of their length) inside the span."""
    return [
        i for i, cue in enumerate(cues)
        if (overlap := _overlap(cue, start_ms, end_ms)) > 0
        and overlap >= min_inside * cue.duration_ms
    ]


def text_in_span(cues: list[Cue], start_ms: int, end_ms: int, min_inside: float = 0.5) -> str:
    """Text of the cues that lie mostly (``min_inside`` of their length) inside the span."""
    return join_texts([cues[i].text for i in cues_in_span(cues, start_ms, end_ms, min_inside)])


def cut_fraction(cues: list[Cue], start_ms: int, end_ms: int) -> float:
    """Fraction of subtitle time in the span that belongs to cues cut by its edges."""
    inside = cut = 0
    for cue in cues:
        overlap = _overlap(cue, start_ms, end_ms)
        if overlap <= 0:
            continue
        inside += overlap
        if overlap < cue.duration_ms:
            cut += overlap
    return cut / inside if inside else 0.0


def misplaced_fraction(
    cues: list[Cue], covered: Sequence[CoveredCue], start_ms: int, end_ms: int
) -> float:
    """For a chunk that names the cues it covers: the share of its subtitle time in cues on
    the wrong side of its edges.

    Wrong: a covered cue (or piece) lying mostly outside the span, or another of the item's
    ``cues`` lying mostly inside it. Edges that trim silence off an early or late cue move no
    cue to the wrong side, so this stays 0 for a chunk cut along its cues; it guards that.
    """
    wrong = sum(c.duration_ms for c in covered if 2 * _overlap(c, start_ms, end_ms) < c.duration_ms)
    total = sum(c.duration_ms for c in covered)
    indices = {c.index for c in covered}
    for i in cues_in_span(cues, start_ms, end_ms):
        if i not in indices:
            wrong += _overlap(cues[i], start_ms, end_ms)
            total += _overlap(cues[i], start_ms, end_ms)
    return wrong / total if total else 0.0


def pick_subtitle(raw_dir: Path, names: str, language: str) -> Path | None:
    """The subtitle file in ``language`` among a manifest's ``;``-joined ``subtitles``.

    Files are named ``<item>.<lang>.vtt``; ``en`` matches ``en-US`` too.
    """
    lang = base_language(language)
    for name in str(names or "").split(";"):
        parts = name.split(".")
        path = Path(raw_dir) / name
        if len(parts) >= 3 and base_language(parts[-2]) == lang and path.is_file():
            return path
    return None


def item_cues(raw_dir: Path, language: str | None) -> dict[str, list[Cue]]:
    """Subtitle cues per item of a download manifest, in ``language`` (an item's own language
    first); items without a subtitle file, or with an empty one, are left out."""
    manifest_path = Path(raw_dir) / "manifest.csv"
    if not manifest_path.is_file():
        return {}
    manifest = pd.read_csv(manifest_path, dtype=str, keep_default_na=False)
    cues = {}
    for row in manifest.itertuples(index=False):
        path = pick_subtitle(raw_dir, row.subtitles, row.language or language or "")
        if path is not None and (parsed := read_vtt(path)):
            cues[row.item] = parsed
    return cues


def label_cues(raw_dir: Path, language: str | None, label_source: str) -> dict[str, list[Cue]]:
    """The cues of the items whose labels come from their subtitles under ``labels.source``
    (``auto``, ``subtitles``: every subtitled item; ``pseudo``: none). The segment stage cuts
    these items along their cues, the label stage takes their text from them."""
    return {} if label_source == "pseudo" else item_cues(raw_dir, language)
