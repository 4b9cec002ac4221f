"""The entry-point wrapper every ``stages/*.py`` script uses.

It configures logging once and turns the project's expected errors (``TubetuneError``: bad
params, an unusable model or media file, a stage with nothing to work on) into one line on
stderr naming the stage, and exit status 1. Any other exception is a bug and keeps its
traceback.
"""

from __future__ import annotations

import logging
import os
import sys
from collections.abc import Callable
from pathlib import Path

from tubetune.errors import TubetuneError

log = logging.getLogger("tubetune")


def setup_logging() -> None:
    """Log to stderr at INFO (``TUBETUNE_LOG_LEVEL`` overrides), quiet noisy libraries."""
    level = os.environ.get("TUBETUNE_LOG_LEVEL", "INFO").upper()
    logging.basicConfig(level=level, format="%(levelname)s %(name)s: %(message)s")
    for noisy in ("faster_whisper", "httpx", "urllib3", "filelock", "datasets"):
        logging.getLogger(noisy).setLevel(logging.WARNING)


def stage_name(argv: list[str]) -> str:
    """The DVC stage a script runs (``stages/pseudo_label.py X`` -> ``pseudo-label@X``)."""
    name = Path(argv[0]).stem.replace("_", "-")
    return f"{name}@{argv[1]}" if len(argv) > 1 else name


def run(main: Callable[[list[str]], None]) -> None:
    """Run a stage's ``main(argv)``; exit 1 with one line on the project's expected errors."""
    setup_logging()
    try:
        main(sys.argv[1:])
    except TubetuneError as exc:
        print(f"error: {stage_name(sys.argv)}: {exc}", file=sys.stderr)
        sys.exit(1)
