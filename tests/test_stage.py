"""Stage scripts end every expected error in one line naming the stage; bugs keep tracebacks."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = textwrap.dedent("""
    import sys
    from tubetune import stage
    from tubetune.audio import MediaError
    from tubetune.errors import StageError
    from tubetune.models import ModelError
    from tubetune.params import ParamsError

    ERRORS = {"params": ParamsError, "stage": StageError, "model": ModelError,
              "media": MediaError, "bug": KeyError}

    def main(argv):
        raise ERRORS[argv[0]]("what went wrong, and why")

    stage.run(main)
""")


@pytest.mark.parametrize("kind", ["params", "stage", "model", "media"])
def test_expected_errors_end_in_one_line_naming_the_stage(kind: str, tmp_path: Path) -> None:
    script = tmp_path / "pseudo_label.py"
    script.write_text(SCRIPT)
    proc = subprocess.run([sys.executable, str(script), kind], capture_output=True, text=True,
                          cwd=ROOT)
    assert proc.returncode == 1
    assert proc.stderr.strip().splitlines() == [
        f"error: pseudo-label@{kind}: what went wrong, and why"]


def test_a_bug_keeps_its_traceback(tmp_path: Path) -> None:
    script = tmp_path / "split.py"
    script.write_text(SCRIPT)
    proc = subprocess.run([sys.executable, str(script), "bug"], capture_output=True, text=True,
                          cwd=ROOT)
    assert proc.returncode != 0 and "Traceback" in proc.stderr and "KeyError" in proc.stderr
