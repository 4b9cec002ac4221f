"""Render docs/parameters.md from params.yaml: every key, its default and its comment.

    python scripts/params_doc.py            # rewrite docs/parameters.md
    python scripts/params_doc.py --check    # exit 1 when it is out of date (tests do this)

params.yaml is the one place parameters are described (its values equal the code defaults in
tubetune/params.py, which a test checks), so the reference is generated from it, never
edited by hand.
"""

from __future__ import annotations

import argparse
import re
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PARAMS = ROOT / "params.yaml"
DOC = ROOT / "docs" / "parameters.md"
_KEY = re.compile(
    r"^(?P<indent> *)(?P<key>[A-Za-z_][\w.-]*):(?P<value>[^#]*)(?:#\s?(?P<note>.*))?$")
_NOTE = re.compile(r"^ *#\s?(?P<note>.*)$")

HEADER = """# Parameters (`params.yaml`)

Generated from `params.yaml` by `python scripts/params_doc.py`; do not edit by hand. Every key
is validated before a stage does any work (`tubetune/params.py`): a typo, a wrong type or a
bad value stops the stage with a message naming the key, e.g. `params.yaml: train.max_steps:
expected an integer, got 'many'`. Change values with `dvc exp run -S key=value` or by editing
`params.yaml`.
"""


def rows(text: str) -> list[tuple[str, str, str]]:
    """(dotted key, default as written, description) per key, in file order."""
    out: list[list[str]] = []
    path: list[tuple[int, str]] = []
    pending: list[str] = []  # comment lines above a key
    last_indent = -1
    for line in text.splitlines():
        if not line.strip():
            pending = []
            continue
        note = _NOTE.match(line)
        if note:
            indent = len(line) - len(line.lstrip())
            if out and indent > last_indent and not pending:  # a key's comment, continued
                out[-1][2] = f"{out[-1][2]} {note['note'].strip()}".strip()
            else:
                pending.append(note["note"].strip())
            continue
        match = _KEY.match(line)
        if not match:
            continue
        indent = len(match["indent"])
        path = [(i, k) for i, k in path if i < indent] + [(indent, match["key"])]
        dotted = ".".join(k for _, k in path)
        description = " ".join([*pending, (match["note"] or "").strip()]).strip()
        out.append([dotted, match["value"].strip(), description])
        pending, last_indent = [], indent
    return [tuple(r) for r in out]


def render(text: str) -> str:
    lines = [HEADER, "| key | default | meaning |", "|---|---|---|"]
    for key, value, note in rows(text):
        shown = f"`{value}`" if value else ""
        note = " ".join(note.replace("|", "/").split())
        lines.append(f"| `{key}` | {shown} | {note} |")
    return "\n".join(lines) + "\n"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true")
    args = parser.parse_args()
    wanted = render(PARAMS.read_text(encoding="utf-8"))
    if args.check:
        current = DOC.read_text(encoding="utf-8") if DOC.is_file() else ""
        if current != wanted:
            print(f"{DOC.relative_to(ROOT)} is out of date: run python scripts/params_doc.py",
                  file=sys.stderr)
            return 1
        return 0
    DOC.write_text(wanted, encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main())
