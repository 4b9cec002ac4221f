"""Per-item bookkeeping shared by every stage that processes a list of items.

A stage processes many items (videos, audio files, chunks). One bad item must not sink the
others: each failure is recorded with its reason and the good items are kept. A source
whose every item failed (a removed video, a typo in a path) leaves empty, reported outputs
and the pipeline goes on with the other sources (``split`` names it); only ``strict`` runs
fail the stage. A source's items are listed in its ``manifest.csv`` (MANIFEST_COLUMNS),
whether they were downloaded (tubetune.sources) or are a corpus's groups (tubetune.corpus).
"""

from __future__ import annotations

import json
import logging
from dataclasses import asdict, dataclass, field
from pathlib import Path

from tubetune.errors import StageError
from tubetune.fsutil import atomic_write_text

__all__ = ["Failure", "ItemReport", "StageError"]

log = logging.getLogger(__name__)

MANIFEST_COLUMNS = (
    "item",
    "media",
    "id",
    "extractor",
    "title",
    "uploader",
    "channel",
    "license",
    "duration_s",
    "upload_date",
    "webpage_url",
    "input_url",
    "language",
    "subtitles",
    "size",
    "sha256",
)


@dataclass(frozen=True)
class Failure:
    """One item that could not be processed."""

    item: str
    reason: str


@dataclass
class ItemReport:
    """What happened to the items of one stage run over one source."""

    stage: str
    source: str
    ok: list[str] = field(default_factory=list)
    skipped: list[Failure] = field(default_factory=list)
    failed: list[Failure] = field(default_factory=list)

    def fail(self, item: str, reason: str) -> None:
        """Record a failed item and log it as one clear line."""
        reason = " ".join(str(reason).split())
        self.failed.append(Failure(item, reason))
        log.error("%s %s: %s: %s", self.stage, self.source, item, reason)

    def skip(self, item: str, reason: str) -> None:
        """Record an item left out on purpose (filtered), not an error."""
        self.skipped.append(Failure(item, reason))
        log.info("%s %s: skipped %s: %s", self.stage, self.source, item, reason)

    def summary(self) -> str:
        """One line: counts of ok / skipped / failed items."""
        return (
            f"{self.stage} {self.source}: {len(self.ok)} ok, {len(self.skipped)} skipped, "
            f"{len(self.failed)} failed"
        )

    def write(self, path: Path) -> None:
        """Write the report as JSON (sorted, stable) atomically."""
        data = asdict(self)
        for key in ("skipped", "failed"):
            data[key] = sorted(data[key], key=lambda f: (f["item"], f["reason"]))
        data["ok"] = sorted(data["ok"])
        atomic_write_text(path, json.dumps(data, indent=2, ensure_ascii=False) + "\n")

    def finish(self, path: Path | None = None, strict: bool = False) -> None:
        """Write the report (if ``path``), log the summary; raise in ``strict`` mode when an
        item failed. A source with nothing usable is a loud warning, not a failed stage."""
        if path is not None:
            self.write(path)
        log.info(self.summary())
        if self.failed and strict:
            raise StageError(f"{self.summary()} (strict mode); first: {self.failed[0].reason}")
        if not self.ok and self.failed:
            log.warning("%s: nothing usable, the source is left out; first: %s",
                        self.summary(), self.failed[0].reason)
