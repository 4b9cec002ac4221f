"""The documentation a newcomer reads first stays short, linked and true to the code."""

from __future__ import annotations

import dataclasses
import re
import subprocess
import sys
from pathlib import Path

import yaml

from tubetune.params import Params, load_params

ROOT = Path(__file__).resolve().parents[1]


def test_readme_is_short_and_every_link_exists() -> None:
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    assert len(readme.encode("utf-8")) <= 12 * 1024
    links = re.findall(r"\]\(([^)#\s]+)(?:#[^)]*)?\)", readme)
    local = [link for link in links if "://" not in link]
    assert local, "the README links to docs/"
    missing = [link for link in local if not (ROOT / link).exists()]
    assert not missing


def test_every_module_is_listed_in_the_readme() -> None:
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    modules = sorted(p.name for p in (ROOT / "tubetune").glob("*.py") if p.name != "__init__.py")
    assert [m for m in modules if f"tubetune/{m}" not in readme] == []


def test_parameter_reference_is_generated_from_params_yaml() -> None:
    proc = subprocess.run([sys.executable, "scripts/params_doc.py", "--check"], cwd=ROOT,
                          capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr


def test_params_yaml_values_equal_the_code_defaults() -> None:
    # Sections other than the project's own sources and rounds: params.yaml spells out
    # every default, so a value there must be what the code would use without it.
    raw = yaml.safe_load((ROOT / "params.yaml").read_text())
    loaded = load_params(ROOT / "params.yaml")
    defaults = Params(sources={})
    differing = []
    for field in dataclasses.fields(Params):
        if field.name in ("sources", "rounds"):
            continue
        assert field.name in raw, f"params.yaml lacks {field.name}"
        value, default = getattr(loaded, field.name), getattr(defaults, field.name)
        if dataclasses.is_dataclass(value):
            for sub in dataclasses.fields(value):
                if getattr(value, sub.name) != getattr(default, sub.name):
                    differing.append(f"{field.name}.{sub.name}")
        elif value != default:
            differing.append(field.name)
    assert differing == []
