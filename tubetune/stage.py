"""The entry-point wrapper every ``stages/*.py`` script uses.

It configures logging once and turns expected failures (bad params, a stage with nothing
to work on) into one clear line on stderr and exit status 1 instead of a traceback.
"""

from __future__ import annotations

import logging
import os
import sys
from collections.abc import Callable

from tubetune.items import StageError
from tubetune.params import ParamsError

log = logging.getLogger("tubetune")


def setup_logging() -> None:
    """Log to stderr at INFO (``TUBETUNE_LOG_LEVEL`` overrides), quiet noisy libraries."""
    level = os.environ.get("TUBETUNE_LOG_LEVEL", "INFO").upper()
    logging.basicConfig(level=level, format="%(levelname)s %(name)s: %(message)s")
    for noisy in ("faster_whisper", "httpx", "urllib3", "filelock", "datasets"):
        logging.getLogger(noisy).setLevel(logging.WARNING)


def run(main: Callable[[list[str]], None]) -> None:
    """Run a stage's ``main(argv)``; exit 1 with a one-line message on known errors."""
    setup_logging()
    try:
        main(sys.argv[1:])
    except (ParamsError, StageError, ValueError) as exc:
        log.error("%s", exc)
        print(f"error: {exc}", file=sys.stderr)
        sys.exit(1)
