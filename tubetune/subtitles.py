"""WebVTT subtitles: parse cues, and turn them into labels for a span of audio.

Uploader subtitles are the closest thing to gold text that web video offers. This module
reads them (including YouTube's rolling auto-captions, whose cues repeat the previous
line), and cuts them to chunk times: a cue belongs to a chunk when most of it lies inside.
"""

from __future__ import annotations

import html
import re
from dataclasses import dataclass
from pathlib import Path

from tubetune.text import base_language

_TIME = r"(?:(\d+):)?(\d{1,2}):(\d{2})[.,](\d{3})"
_CUE_TIMING = re.compile(rf"^\s*{_TIME}\s*-->\s*{_TIME}")
_TAG = re.compile(r"<[^>]*>")


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


def text_in_span(cues: list[Cue], start_ms: int, end_ms: int, min_inside: float = 0.5) -> str:
    """Text of the cues that lie mostly (``min_inside`` of their length) inside the span."""
    parts = []
    for cue in cues:
        overlap = min(cue.end_ms, end_ms) - max(cue.start_ms, start_ms)
        if overlap > 0 and overlap >= min_inside * cue.duration_ms:
            parts.append(cue.text)
    return " ".join(parts)


def cut_fraction(cues: list[Cue], start_ms: int, end_ms: int) -> float:
    """Fraction of subtitle time in the span that belongs to cues cut by its edges."""
    inside = cut = 0
    for cue in cues:
        overlap = min(cue.end_ms, end_ms) - max(cue.start_ms, start_ms)
        if overlap <= 0:
            continue
        inside += overlap
        if overlap < cue.duration_ms:
            cut += overlap
    return cut / inside if inside else 0.0


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
