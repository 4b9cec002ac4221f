"""Which ``tubetune`` modules each DVC stage runs, found by following imports.

A stage's outputs can change whenever code it runs changes, so every module a stage script
imports, directly or through other modules, lazily inside functions included, must be a
``deps`` entry of that stage in ``dvc.yaml``; otherwise ``dvc repro`` calls stale outputs
up to date. :func:`missing_deps` lists the gaps; ``scripts/sync_stage_deps.py`` fills them.
"""

from __future__ import annotations

import ast
import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
PACKAGE = "tubetune"
# Modules whose code cannot change a stage's outputs (see the comment in dvc.yaml).
EXEMPT = {"tubetune/__init__.py", "tubetune/stage.py"}
# Data files read by a module: a stage running the module depends on them too.
DATA_FILES = {"tubetune/filters.py": ["tubetune/data/hallucinations"]}
SCRIPT_IN_CMD = re.compile(r"python (?:-m \S+ )?(stages/\w+\.py)")


def imported_modules(path: Path, root: Path = ROOT) -> set[str]:
    """``tubetune/*.py`` files that ``path`` imports anywhere in its body (not transitive)."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    found: set[str] = set()
    for node in ast.walk(tree):
        names: list[str] = []
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names = [node.module] + [f"{node.module}.{alias.name}" for alias in node.names]
        for name in names:
            if name == PACKAGE or not name.startswith(PACKAGE + "."):
                continue
            file = root / (name.replace(".", "/") + ".py")
            if file.is_file():
                found.add(file.relative_to(root).as_posix())
    return found


def closure(script: str, root: Path = ROOT) -> set[str]:
    """Every ``tubetune`` module ``script`` runs: its imports, their imports, and so on."""
    todo, seen = [script], set()
    while todo:
        current = todo.pop()
        for module in imported_modules(root / current, root):
            if module not in seen:
                seen.add(module)
                todo.append(module)
    return seen


def required_deps(script: str, root: Path = ROOT) -> set[str]:
    """The code and data deps a stage running ``script`` needs in ``dvc.yaml``."""
    modules = closure(script, root) - EXEMPT
    data = {d for module in modules for d in DATA_FILES.get(module, [])}
    return {script} | modules | data


def missing_deps(dvc_yaml: dict, root: Path = ROOT) -> dict[str, list[str]]:
    """Stage name -> deps it lacks (sorted); stages lacking nothing are left out."""
    missing = {}
    for name, stage in dvc_yaml["stages"].items():
        body = stage.get("do", stage)
        match = SCRIPT_IN_CMD.search(body["cmd"])
        if not match:
            continue
        listed = {d if isinstance(d, str) else next(iter(d)) for d in body.get("deps", [])}
        gaps = sorted(required_deps(match.group(1), root) - listed)
        if gaps:
            missing[name] = gaps
    return missing
