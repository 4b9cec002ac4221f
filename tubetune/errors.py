"""The project's expected errors: one base class, so a stage reports them in one line.

An expected error is a failure the user can act on: a bad parameter, a model or media file
that cannot be used, a corpus line that cannot be read, a stage with nothing to work on. Its
message says what and why in one line; ``tubetune.stage.run`` prints it once, naming the
stage, and exits 1. Anything else is a bug and keeps its traceback.
"""

from __future__ import annotations


class TubetuneError(Exception):
    """An expected failure; the message is one human line."""


class StageError(TubetuneError, RuntimeError):
    """A stage cannot produce its outputs."""
