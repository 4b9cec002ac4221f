"""End-to-end: the real pipeline (real yt-dlp, ffmpeg, whisper-base, DVC) in a project copy.

One full ``dvc repro`` runs once per session (train shortened to a few steps); the tests
then check what DVC and the outputs say about it. Slow, and kept in CI on purpose.
"""

from __future__ import annotations

import json
import re
import shutil
import time
from itertools import pairwise
from pathlib import Path

import pandas as pd
import pytest
import yaml

from helpers.project import copy_project, edit_params, run

pytestmark = pytest.mark.slow

# Real models and data; only three of the five sample videos, every fourth held-out clip,
# fewer train steps, validation by loss and greedy decoding, to keep CI short.
HELDOUT_SUBSET = "data/evalsets/heldout/every-fourth.csv"
FAST = {"train.max_steps": 3, "train.per_device_batch_size": 2, "train.warmup_steps": 1,
        "train.freeze_encoder": True, "train.logging_steps": 1, "train.save_steps": 3,
        "export.interpolation": [1.0], "evaluate.heldout": HELDOUT_SUBSET,
        "sources.bicycle-repair": None, "sources.gardening-talk": None}
DATA_STAGES = ("download", "convert", "resample", "segment", "pseudo-label")


@pytest.fixture(scope="module")
def project(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A project copy on which ``dvc repro`` has run once, from scratch."""
    repo = copy_project(tmp_path_factory.mktemp("pipeline") / "repo")
    heldout = pd.read_csv(repo / "data/evalsets/heldout/heldout.csv", dtype=str,
                          keep_default_na=False)
    heldout.iloc[::4].to_csv(repo / HELDOUT_SUBSET, index=False)
    edit_params(repo, **FAST)
    run(["git", "add", HELDOUT_SUBSET], repo)
    run(["git", "commit", "-qam", "fast train params"], repo)
    run(["dvc", "repro"], repo)
    run(["git", "add", "-A"], repo)
    run(["git", "commit", "-qm", "pipeline ran"], repo)
    return repo


def restore(repo: Path) -> None:
    """Back to the committed state after a test changed params or ran an experiment."""
    run(["git", "reset", "-q", "--hard"], repo)
    run(["dvc", "checkout", "-q", "--force"], repo)


def lock_hashes(repo: Path) -> dict[str, str]:
    """Output path -> md5 from dvc.lock."""
    lock = yaml.safe_load((repo / "dvc.lock").read_text())
    return {
        out["path"]: out["md5"]
        for stage in lock["stages"].values()
        for out in stage.get("outs", [])
        if "md5" in out
    }


def test_metrics_report_baseline_and_finetuned(project: Path) -> None:
    metrics = json.loads((project / "metrics/eval.json").read_text())
    for model in ("baseline", "finetuned"):
        assert 0 <= metrics[model]["wer"] < 60, metrics
        assert 0 <= metrics[model]["cer"] < 60, metrics
        assert 0 <= metrics[model]["heldout"]["wer"] < 80, metrics
        sequential = metrics[model]["longform_sequential"]
        assert 0 <= sequential["wer"] < 80 and 0 <= sequential["timestamp_share"] <= 1
        assert 0 <= metrics[model]["longform_vad"]["wer"] < 80
    assert metrics["sets"]["test"]["reference"] == "subtitles"
    headline = json.loads((project / "metrics/headline.json").read_text())
    assert {"test_wer", "test_wer_base", "heldout_wer", "heldout_wer_base", "longform_wer",
            "longform_wer_base", "timestamp_share", "timestamp_share_base",
            "guard_choice"} <= set(headline)
    guard = json.loads((project / "metrics/guard/round1.json").read_text())
    assert guard["chosen"] in ("start", "a=1") and guard["budget"] == 0.05
    shown = json.loads(run(["dvc", "metrics", "show", "--json"], project).stdout)
    (workspace,) = shown.values()  # keyed "" or "workspace", by DVC version
    columns = workspace["data"]
    assert sum(len(f["data"]) for f in columns.values()) <= 40  # readable at a glance
    predictions = pd.read_csv(project / "data/eval/predictions.csv")
    assert {"set", "text", "baseline", "finetuned", "baseline_error"} <= set(predictions.columns)
    test_rows = predictions[predictions["set"] == "test"]
    assert len(test_rows) == metrics["sets"]["test"]["utterances"] > 0
    if guard["chosen"] == "start":  # the base itself ships: scored exactly as the base
        assert predictions["finetuned"].fillna("").equals(predictions["baseline"].fillna(""))


def test_no_video_spans_two_splits(project: Path) -> None:
    items = {
        split: set(pd.read_csv(project / f"data/split/{split}.csv")["item"])
        for split in ("train", "validation", "test")
    }
    assert items["train"] and items["test"]
    assert not items["train"] & items["test"]
    assert not items["train"] & items["validation"]
    assert not items["validation"] & items["test"]


def test_second_repro_is_a_no_op_and_dag_has_every_stage(project: Path) -> None:
    out = run(["dvc", "repro"], project).stdout
    assert "up to date" in out, out
    dag = run(["dvc", "dag"], project).stdout
    for name in ("base-model", "teacher-model", *DATA_STAGES, "split", "train", "guard",
                 "evaluate-baseline", "evaluate"):
        assert name in dag


def ran_stages(output: str) -> set[str]:
    """Stages a ``dvc repro``/``dvc exp run`` actually ran, from its output."""
    return set(re.findall(r"Running stage '([^']+)'", output))


def test_segment_change_reruns_segment_not_upstream(project: Path) -> None:
    edit_params(project, **{"segment.max_s": 20})
    try:
        status = json.loads(run(["dvc", "status", "--json"], project).stdout)
    finally:
        restore(project)
    # Only the segment stages see a change; DVC reruns what depends on their outputs.
    assert set(status) == {f"segment@{s}" for s in ("cooking-tips", "travel-diary",
                                                    "sky-science")}, status


def experiments(shown: list[dict]) -> dict[str, dict]:
    """Experiment name -> its data, from ``dvc exp show --json``."""
    found = {}
    for commit in shown:
        for exp in commit.get("experiments") or []:
            for rev in exp.get("revs") or []:
                if rev.get("name"):
                    found[rev["name"]] = rev["data"]
    return found


def test_queued_experiments_finish_and_apply_restores_one(project: Path) -> None:
    # LoRA at another learning rate (train, guard, export, evaluate rerun) and a split-seed
    # change that runs only up to `split` (a target keeps it cheap), both from DVC's queue:
    # each in a temporary copy of the repository, with only what git and the cache hold.
    run(["dvc", "exp", "run", "--queue", "-S", "train.learning_rate=1e-5", "-S",
         "train.method=lora", "-n", "lr1e5"], project)
    run(["dvc", "exp", "run", "--queue", "split", "-S", "split.seed=7", "-n", "seed7"], project)

    def start_queue() -> None:  # the worker runs in the background, holding its output
        run(["dvc", "queue", "start", "-j", "1"], project, timeout=120, via_file=True)

    try:
        start_queue()
        deadline = time.monotonic() + 1200
        idle_since = None
        while re.search(r"\b(Queued|Running)\b", status := run(["dvc", "queue", "status"],
                                                                project).stdout):
            assert time.monotonic() < deadline, status
            # DVC's worker may exit with tasks still queued (treeverse/dvc#10562, seen on
            # CI: "Queued", "0 active, 0 idle" until the deadline); the documented remedy,
            # as the README says, is another `dvc queue start`.
            stalled = "Running" not in status and "0 active, 0 idle" in status
            idle_since = (idle_since or time.monotonic()) if stalled else None
            if idle_since and time.monotonic() - idle_since > 30:
                start_queue()
                idle_since = None
            time.sleep(3)
        logs = run(["dvc", "queue", "logs", "lr1e5"], project, check=False).stdout
        assert re.search(r"lr1e5\s.*Success", status), status + logs[-3000:]
        assert re.search(r"seed7\s.*Success", status), status
        # export is skipped when the guard hands on the same model as the workspace's run
        ran = ran_stages(logs)
        assert {"train@round1", "guard@round1", "evaluate"} <= ran <= {
            "train@round1", "guard@round1", "export", "evaluate"}, logs[-3000:]

        done = experiments(json.loads(run(["dvc", "exp", "show", "--json"], project).stdout))
        trained = done["lr1e5"]["params"]["params.yaml"]["data"]["train"]
        assert trained["learning_rate"] == 1e-5 and trained["method"] == "lora"
        assert "test_wer" in done["lr1e5"]["metrics"]["metrics/headline.json"]["data"]
        assert done["seed7"]["params"]["params.yaml"]["data"]["split"]["seed"] == 7
        shown = run(["dvc", "exp", "show", "--only-changed"], project,
                    env={"COLUMNS": "120"}).stdout
        # Only what differs, so it fits a terminal: the changed params always; a metric only
        # when the guards' choices differ (on a tiny run both may hand on the start model).
        assert "lr1e5" in shown and "train.learning_rate" in shown, shown
        wer = {n: done[n]["metrics"]["metrics/headline.json"]["data"]["test_wer"]
               for n in ("lr1e5", "seed7")}  # seed7 stops at split: the workspace's metrics
        assert ("test_wer" in shown) == (wer["lr1e5"] != wer["seed7"]), shown

        run(["dvc", "exp", "apply", "lr1e5"], project)
        applied = yaml.safe_load((project / "params.yaml").read_text())
        assert float(applied["train"]["learning_rate"]) == 1e-5  # DVC writes 1e-05 (YAML 1.2)
        assert (json.loads((project / "metrics/headline.json").read_text())
                == done["lr1e5"]["metrics"]["metrics/headline.json"]["data"])
        assert json.loads(run(["dvc", "status", "--json"], project).stdout) == {}
        # The LoRA run exports plain CTranslate2 weights that transcribe and serve load.
        out = run(["python", "-m", "tubetune.transcribe", "models/export/ct2",
                   "data/sample/sky-science.ogg", "--language", "en"], project).stdout
        assert "sky" in out.lower()
        run(["python", "-c", "from tubetune.transcribe import load_whisper; "
             "load_whisper('models/export/ct2')"], project)  # what tubetune.serve loads
    finally:
        restore(project)


def test_adding_a_source_runs_only_that_source(project: Path) -> None:
    edit_params(project, **{"sources.extra": {"url": "data/sample/sky-science.ogg"}})
    try:
        status = json.loads(run(["dvc", "status", "--json"], project).stdout)
    finally:
        restore(project)
    per_source = {s for s in status if "@" in s}
    assert per_source == {f"{stage}@extra" for stage in DATA_STAGES}


def test_a_second_round_starts_from_the_first(project: Path) -> None:
    edit_params(project, **{"rounds.round2": {"init": "models/rounds/round1"}})
    try:
        status = json.loads(run(["dvc", "status", "--json"], project).stdout)
        dag = run(["dvc", "dag", "--dot"], project).stdout
    finally:
        restore(project)
    assert {"split", "train@round2", "guard@round2", "export", "evaluate"} <= set(status), status
    assert "train@round1" not in status
    assert '"guard@round1" -> "train@round2";' in dag, dag  # round 2 starts from round 1's choice


def set_params(repo: Path, **changes: object) -> None:
    """Like edit_params, but None writes null instead of deleting the key."""
    path = repo / "params.yaml"
    data = yaml.safe_load(path.read_text())
    for dotted, value in changes.items():
        node = data
        *parents, last = dotted.split(".")
        for key in parents:
            node = node[key]
        node[last] = value
    path.write_text(yaml.safe_dump(data, sort_keys=False, allow_unicode=True))


def test_a_dead_source_and_no_heldout_set_still_train_and_evaluate(project: Path) -> None:
    set_params(project, **{"sources.broken": {"url": "data/sample/no-such-file.mp4"},
                           "evaluate.heldout": None})
    try:
        proc = run(["dvc", "repro"], project, check=False)
        split = json.loads((project / "metrics/split.json").read_text())
        headline = json.loads((project / "metrics/headline.json").read_text())
        set_params(project, **{"download.strict": True})
        strict = run(["dvc", "repro", "download@broken"], project, check=False)
    finally:
        restore(project)
        shutil.rmtree(project / "data/raw/broken", ignore_errors=True)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "no-such-file.mp4" in split["left_out_sources"]["broken"]
    assert "left out" in proc.stderr and "broken" in proc.stderr
    assert "test_wer" in headline and "heldout_wer" not in headline  # evaluated without it
    assert strict.returncode != 0  # strict: a failed item fails the stage, in one line
    errors = [line for line in strict.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and "download@broken" in errors[0] and "no-such-file" in errors[0]


def optional_keys() -> list[tuple[str, object]]:
    """Every params.yaml key whose type allows null (set to null) or a list (set to [])."""
    import dataclasses
    import typing

    from tubetune.params import Params

    found = []

    def walk(cls: type, prefix: str) -> None:
        hints = typing.get_type_hints(cls)
        for field in dataclasses.fields(cls):
            key, tp = f"{prefix}{field.name}", hints[field.name]
            if dataclasses.is_dataclass(tp):
                walk(tp, f"{key}.")
            elif type(None) in typing.get_args(tp):
                found.append((key, None))
            elif typing.get_origin(tp) is list:
                found.append((key, []))

    for field in dataclasses.fields(Params):
        tp = typing.get_type_hints(Params)[field.name]
        if dataclasses.is_dataclass(tp):
            walk(tp, f"{field.name}.")
    return found


def test_every_optional_param_at_null_or_empty_gives_a_pipeline_dvc_can_run(
    tmp_path: Path,
) -> None:
    from tubetune.params import ParamsError, load_params

    repo = copy_project(tmp_path / "repo")
    original = (repo / "params.yaml").read_text()
    walked = []
    for key, value in optional_keys():
        (repo / "params.yaml").write_text(original)
        set_params(repo, **{key: value})
        try:
            load_params(repo / "params.yaml")
        except ParamsError:
            continue  # refused up front, naming the key: the pipeline never starts
        proc = run(["dvc", "status"], repo, check=False)
        assert proc.returncode == 0, f"{key}: {value!r}: {proc.stderr[-1500:]}"
        walked.append(key)
    assert "evaluate.heldout" in walked and "split.external_test" in walked, walked


def test_outputs_are_byte_identical_across_runs_from_scratch(
    project: Path, tmp_path_factory: pytest.TempPathFactory
) -> None:
    other = copy_project(tmp_path_factory.mktemp("again") / "repo")
    edit_params(other, **FAST)
    run(["dvc", "repro", "pseudo-label@cooking-tips"], other)  # one source's chain, from scratch
    first, second = lock_hashes(project), lock_hashes(other)
    shutil.rmtree(other.parent)  # ~1 GB of models and cache
    compared = [p for p in second if p.startswith(("data/", "models/"))]
    assert len(compared) >= len(DATA_STAGES) + 3  # + models/base/{hf,ct2}, models/teacher
    differing = [p for p in compared if first.get(p) != second[p]]
    assert not differing


def test_push_clone_pull_and_repro_pull_restore_without_running(project: Path) -> None:
    # The default remote (.dvc/config) is a folder beside the repository, shared by clones
    # that sit beside it too.
    run(["dvc", "push", "--run-cache", "-q"], project)
    assert (project.parent / "tubetune-dvc-remote").is_dir()
    clone = project.parent / "clone"
    run(["git", "clone", "-q", str(project), str(clone)], project.parent)
    run(["dvc", "pull", "-q"], clone)
    assert json.loads(run(["dvc", "status", "--json"], clone).stdout) == {}
    assert not ran_stages(run(["dvc", "repro"], clone).stdout)
    assert (clone / "models/export/ct2/model.bin").is_file()
    shutil.rmtree(clone)  # each clone holds ~2 GB (cache + workspace copies)

    third = project.parent / "third"
    run(["git", "clone", "-q", str(project), str(third)], project.parent)
    out = run(["dvc", "repro", "--pull"], third).stdout
    assert not ran_stages(out), out
    assert json.loads(run(["dvc", "status", "--json"], third).stdout) == {}
    shutil.rmtree(third)


def test_invalid_params_stop_the_run_naming_the_key(project: Path) -> None:
    lock = (project / "dvc.lock").read_bytes()
    edit_params(project, **{"train.learnig_rate": 1e-4})
    try:
        proc = run(["dvc", "repro"], project, check=False)
    finally:
        restore(project)
    assert proc.returncode != 0
    errors = [line for line in proc.stderr.splitlines() if line.startswith("error:")]
    assert errors and "train.learnig_rate" in errors[0], proc.stderr[-2000:]
    assert (project / "dvc.lock").read_bytes() == lock  # the first stage stopped; nothing ran


def kill_inside(repo: Path, stage: str, script: str, after_s: float) -> None:
    """``dvc repro -f -s STAGE``, SIGKILLed (DVC and the stage) ``after_s`` seconds after the
    stage's script started: as abrupt as a power cut. The group is stopped first and killed only
    while the script still runs; a script that already finished is let go, since a kill then
    would land in DVC's own non-atomic rewrite of dvc.lock, which is DVC's to guard, not ours."""
    import os
    import signal
    import subprocess

    from helpers.project import VENV_BIN

    env = {**os.environ, "PATH": f"{VENV_BIN}{os.pathsep}{os.environ['PATH']}",
           "PYTHONPATH": str(repo), "TOKENIZERS_PARALLELISM": "false"}
    proc = subprocess.Popen(["dvc", "repro", "-f", "-s", stage], cwd=repo, env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            start_new_session=True)
    deadline = time.monotonic() + 120
    mine = ["pgrep", "-g", str(proc.pid), "-f", f"stages/{script}"]  # not another test's run
    while not run(mine, repo, check=False).stdout.strip():
        assert proc.poll() is None and time.monotonic() < deadline, f"{stage} never started"
        time.sleep(0.1)
    time.sleep(after_s)
    os.killpg(proc.pid, signal.SIGSTOP)
    still_running = run(mine, repo, check=False).stdout.strip()
    os.killpg(proc.pid, signal.SIGKILL if still_running else signal.SIGCONT)
    proc.wait()


@pytest.mark.parametrize(("stage", "script", "after_s"), [
    ("resample@cooking-tips", "resample.py", 1.5),
    ("pseudo-label@cooking-tips", "pseudo_label.py", 6.0),
    ("export", "export.py", 4.0),
])
def test_a_killed_stage_reruns_to_the_same_bytes(project: Path, stage: str, script: str,
                                                 after_s: float) -> None:
    before = lock_hashes(project)
    try:
        for delay in (after_s, after_s / 4, 0.0):  # a faster machine may finish first
            kill_inside(project, stage, script, delay)
            if stage in json.loads(run(["dvc", "status", "--json"], project).stdout):
                break
        else:
            pytest.fail(f"{stage} always finished before it could be killed")
        run(["dvc", "repro", "-s", stage], project)
        after = lock_hashes(project)
    finally:
        restore(project)
    outs = [p for p in after if p.startswith(("data/resampled/cooking-tips",
                                              "data/labels/cooking-tips", "models/export"))]
    assert outs
    deterministic = [p for p in outs if not p.startswith("models/export")]
    assert all(after[p] == before[p] for p in deterministic)  # byte-identical after resuming
    if stage == "export":
        assert (project / "models/export/ct2/model.bin").is_file()


def test_a_killed_training_resumes_and_finishes(project: Path) -> None:
    try:
        kill_inside(project, "train@round1", "train.py", 20.0)
        assert not (project / "models/train/round1/model.safetensors").exists() or (
            "train@round1" in json.loads(run(["dvc", "status", "--json"], project).stdout))
        run(["dvc", "repro", "-s", "train@round1"], project)
        summary = json.loads((project / "metrics/train/round1.json").read_text())
    finally:
        restore(project)
    assert summary["steps"] == FAST["train.max_steps"]


def test_a_download_killed_mid_file_resumes_to_the_same_bytes(project: Path) -> None:
    from helpers.http_server import MediaServer

    media = (project / "data/sample/sky-science.ogg").read_bytes()
    with MediaServer() as server:
        url = server.add("/slow.ogg", media, "audio/ogg", bytes_per_s=len(media) // 4)
        edit_params(project, **{"sources.slow": {"url": url}})
        try:
            kill_inside(project, "download@slow", "download.py", 2.0)
            partial = list((project / "data/raw/slow").glob("*.ogg"))
            assert not partial  # a half-downloaded file never sits where the media belongs
            run(["dvc", "repro", "-s", "download@slow"], project)
            resumed = lock_hashes(project)["data/raw/slow"]
            shutil.rmtree(project / "data/raw/slow")
            run(["dvc", "repro", "-f", "-s", "download@slow"], project)
            uninterrupted = lock_hashes(project)["data/raw/slow"]
        finally:
            restore(project)
            shutil.rmtree(project / "data/raw/slow", ignore_errors=True)
    assert resumed == uninterrupted


def test_plots_render_in_a_headless_browser(project: Path, tmp_path: Path) -> None:
    """`dvc plots show` draws the training curves, the guard's curve and the per-model bars
    (its page loads Vega from a CDN; the browser gets the same versions from .venv)."""
    import sys

    chromium = Path("/usr/bin/chromium")
    vega = Path(sys.executable).parent.parent / "share" / "vega"
    if not chromium.is_file() or not (vega / "vega-embed.min.js").is_file():
        pytest.skip("needs Debian's chromium and .venv/share/vega (scripts/setup.sh dev)")
    from playwright.sync_api import sync_playwright

    run(["dvc", "plots", "show", "-o", str(tmp_path / "plots")], project)
    page_file = tmp_path / "plots" / "index.html"
    html = page_file.read_text()
    for plot in ("metrics/guard/round1.csv", "metrics/eval_by_model.csv", "train_live"):
        assert plot in html, plot
    args = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
            "--disable-background-networking", "--disable-component-update", "--disable-sync"]
    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=str(chromium), args=args)
        page = browser.new_page()
        page.route("https://cdn.jsdelivr.net/npm/**", lambda route: route.fulfill(
            path=str(vega / f"{route.request.url.rsplit('/', 1)[1].split('@')[0]}.min.js")))
        errors: list[str] = []
        page.on("pageerror", lambda exc: errors.append(str(exc)))
        page.goto(page_file.as_uri())
        page.wait_for_function("document.querySelectorAll('.vega-embed svg, .vega-embed "
                               "canvas').length >= 3", timeout=30_000)
        drawn = page.evaluate("document.querySelectorAll('.vega-embed').length")
        browser.close()
    assert not errors and drawn >= 3


def test_exported_model_keeps_alignment_heads_and_word_timestamps(project: Path) -> None:
    from tubetune.transcribe import load_whisper, transcribe_long

    base = json.loads((project / "models/base/ct2/config.json").read_text())
    exported = json.loads((project / "models/export/ct2/config.json").read_text())
    assert exported["alignment_heads"] == base["alignment_heads"]
    whisper = load_whisper(str(project / "models/export/ct2"))
    segments, _ = whisper.transcribe(str(project / "data/sample/sky-science.ogg"),
                                     language="en", word_timestamps=True, vad_filter=False,
                                     condition_on_previous_text=False)
    words = [w for s in segments for w in s.words]
    assert len(words) > 50
    assert all(w.start <= w.end for w in words)
    assert all(a.start <= b.start for a, b in pairwise(words))
    assert transcribe_long(whisper, project / "data/sample/sky-science.ogg", "en",
                           vad_filter=False).timestamp_share > 0.5
