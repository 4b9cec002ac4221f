"""Test helpers: a throw-away copy of the project, a command runner, params edits."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[2]
VENV_BIN = Path(sys.executable).parent


def run(
    cmd: list[str], cwd: Path, check: bool = True, timeout: float = 900,
    env: dict[str, str] | None = None, via_file: bool = False,
) -> subprocess.CompletedProcess:
    """Run a command with the test's virtualenv first on PATH and ``cwd``'s own ``tubetune``
    package first on the import path (a project copy runs its own code); output captured as
    text. ``env`` adds variables. ``via_file``: output goes through a temporary file, not
    pipes, for a command that leaves a background process holding them open (DVC's queue
    worker): through pipes, this call would wait for that process too."""
    env = {**os.environ, "PATH": f"{VENV_BIN}{os.pathsep}{os.environ.get('PATH', '')}",
           "PYTHONPATH": str(cwd), "TOKENIZERS_PARALLELISM": "false", "DVC_NO_ANALYTICS": "1",
           **(env or {})}
    if via_file:
        with tempfile.TemporaryFile("w+") as out:
            proc = subprocess.run(cmd, cwd=cwd, env=env, stdout=out, stderr=subprocess.STDOUT,
                                  text=True, timeout=timeout)
            out.seek(0)
            proc.stdout, proc.stderr = out.read(), ""
    else:
        proc = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True,
                              timeout=timeout)
    if check and proc.returncode != 0:
        raise AssertionError(
            f"{' '.join(cmd)} exited {proc.returncode}\n--- stdout\n{proc.stdout[-4000:]}"
            f"\n--- stderr\n{proc.stderr[-4000:]}"
        )
    return proc


def project_files() -> list[str]:
    """Tracked and untracked-but-not-ignored files: what a fresh clone of this tree holds."""
    out = subprocess.run(
        ["git", "ls-files", "-co", "--exclude-standard", "-z"], cwd=ROOT, capture_output=True,
        check=True,
    ).stdout.decode()
    return [f for f in out.split("\0") if f and (ROOT / f).is_file()]


def copy_project(dest: Path) -> Path:
    """Copy the project into ``dest`` as a fresh git repository (DVC experiments need git)."""
    for rel in project_files():
        target = dest / rel
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(ROOT / rel, target)
    for stale in ("dvc.lock",):
        (dest / stale).unlink(missing_ok=True)
    run(["git", "init", "-q"], dest)
    run(["git", "config", "user.email", "tests@tubetune.invalid"], dest)
    run(["git", "config", "user.name", "tubetune tests"], dest)
    run(["git", "add", "-A"], dest)
    run(["git", "commit", "-qm", "test copy"], dest)
    return dest


def edit_params(repo: Path, **changes: object) -> None:
    """Set dotted keys in ``repo/params.yaml`` (``{"train.max_steps": 2}``); None deletes."""
    path = repo / "params.yaml"
    data = yaml.safe_load(path.read_text())
    for dotted, value in changes.items():
        node = data
        *parents, last = dotted.split(".")
        for key in parents:
            node = node[key]
        if value is None and last in node:
            del node[last]
        else:
            node[last] = value
    path.write_text(yaml.safe_dump(data, sort_keys=False, allow_unicode=True))
