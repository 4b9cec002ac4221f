"""Rewrite the code deps of every stage in dvc.yaml from the import graph.

    python scripts/sync_stage_deps.py

Each stage's ``deps`` get its script and every ``tubetune`` module it runs (imports followed
transitively, lazy ones included; tests/helpers/stage_deps.py), in sorted order before the
data deps, which stay as they are. Comments and layout are kept (ruamel.yaml, which DVC
itself uses). tests/test_stage_deps.py fails when this has not been run after an import
changed.
"""

from __future__ import annotations

import sys
from pathlib import Path

from ruamel.yaml import YAML

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))
from helpers.stage_deps import SCRIPT_IN_CMD, required_deps  # noqa: E402

CODE = ("stages/", "tubetune/")


def main() -> int:
    yaml = YAML()
    yaml.preserve_quotes = True
    yaml.width = 100
    yaml.indent(mapping=2, sequence=4, offset=2)
    path = ROOT / "dvc.yaml"
    pipeline = yaml.load(path)
    for stage in pipeline["stages"].values():
        body = stage.get("do", stage)
        match = SCRIPT_IN_CMD.search(body["cmd"])
        if not match:
            continue
        script = match.group(1)
        deps = body["deps"]
        for i in reversed(range(len(deps))):
            if isinstance(deps[i], str) and deps[i].startswith(CODE):
                del deps[i]
        code = [script, *sorted(required_deps(script) - {script})]
        for i, dep in enumerate(code):
            deps.insert(i, dep)
    yaml.dump(pipeline, path)
    return 0


if __name__ == "__main__":
    sys.exit(main())
