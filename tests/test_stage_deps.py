"""dvc.yaml lists every module (and data file) each stage runs, so code changes rerun it."""

from __future__ import annotations

import copy

import yaml

from helpers.stage_deps import ROOT, closure, missing_deps


def test_every_stage_depends_on_the_code_it_runs() -> None:
    pipeline = yaml.safe_load((ROOT / "dvc.yaml").read_text())
    assert missing_deps(pipeline) == {}


def test_a_removed_dep_is_found_and_named() -> None:
    pipeline = yaml.safe_load((ROOT / "dvc.yaml").read_text())
    broken = copy.deepcopy(pipeline)
    deps = broken["stages"]["evaluate"]["deps"]
    deps.remove("tubetune/metrics.py")
    assert missing_deps(broken) == {"evaluate": ["tubetune/metrics.py"]}


def test_lazy_imports_inside_functions_are_followed() -> None:
    # tubetune.evaluation imports tubetune.transcribe inside a function only.
    assert "tubetune/transcribe.py" in closure("tubetune/evaluation.py")
