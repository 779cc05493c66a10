"""The ``tb-retune`` command line, against experiments trained with real ``fit()``.

One experiment (``digits``) is trained once per module: a schedule changes the
learning rate at step 40 and the momentum at step 70; then ``tb-retune
restore`` goes back to step 64 with another learning rate and a second fit
carries it out as branch ``main-s64``, whose schedule changes the momentum at
step 100. Tests that write get a copy of it; one test drives a live trainer.
"""

from __future__ import annotations

import contextlib
import csv
import glob
import io
import json
import os
import re
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from typing import Any

import pytest

from tests.conftest import FitThread, SlowBatches, read_status, tiny_data, tiny_model, wait_for

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

from tb_retune.cli import main  # noqa: E402
from tb_retune.experiment.control_file import write_control  # noqa: E402

BATCH = 8
SAMPLES = 256  # 32 steps per epoch
SUBCOMMANDS = ("set", "restore", "status", "tree", "export", "replay")
PATH_NODES = ["main-1", "main-2", "main-s64-1", "main-s64-2"]


# -- helpers ------------------------------------------------------------------


def fit_args(folder: str, epochs: int, *extra: Any) -> tuple[tuple[Any, ...], dict[str, Any]]:
    """The arguments of ``model.fit`` for ``epochs`` epochs of the data, with a RetuneCallback."""
    import tb_retune

    return tiny_data(SAMPLES), dict(
        batch_size=BATCH, epochs=epochs, shuffle=False, verbose=0,
        callbacks=[tb_retune.RetuneCallback(folder, update_freq=4, verbose=False), *extra])


def fit(model: Any, folder: str, epochs: int, *extra: Any) -> Any:
    args, kwargs = fit_args(folder, epochs, *extra)
    return model.fit(*args, **kwargs)


def run(*argv: str) -> tuple[int, str, str]:
    """``main(argv)`` in-process: (exit status, stdout, stderr)."""
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = main(list(argv))
    return code, out.getvalue(), err.getvalue()


def refused(code: int, err: str, expected: int = 1) -> str:
    """Checks a refusal: the exit status and ONE line on stderr; returns it."""
    assert code == expected, err
    assert err.endswith("\n") and err.count("\n") == 1, f"not one line: {err!r}"
    return err.strip()


def scalar_series(run_dir: str, tag: str) -> dict[int, float]:
    """The first value logged at each step, read with TensorBoard's loader."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
    from tensorboard.util import tensor_util

    acc = EventAccumulator(run_dir, size_guidance={"tensors": 0})
    acc.Reload()
    out: dict[int, float] = {}
    for event in acc.Tensors(tag):
        out.setdefault(int(event.step), float(tensor_util.make_ndarray(event.tensor_proto)))
    return out


def copy_experiment(src: str, dst: str) -> str:
    shutil.copytree(src, dst, ignore=shutil.ignore_patterns(".retune-trainer.lock", ".retune.json.lock"))
    return dst


# -- the experiment, made once -------------------------------------------------


@pytest.fixture(scope="module")
def digits(tmp_path_factory: pytest.TempPathFactory) -> str:
    folder = str(tmp_path_factory.mktemp("runs") / "digits")
    os.makedirs(folder)
    with open(os.path.join(folder, "retune.json"), "w") as f:
        json.dump({"schedule": [{"at_step": 40, "hyperparameters": {"learning_rate": 0.005}},
                                {"at_step": 70, "hyperparameters": {"momentum": 0.5}}]}, f)
    model = tiny_model()
    fit(model, folder, 3)  # steps 0-96
    code, out, err = run("restore", folder, "--branch", "main", "--step", "64", "--set", "learning_rate=0.002")
    assert code == 0, err
    # The new branch gets a schedule of its own: the trainer would fire the
    # old entries (steps 40 and 70) again on it, the one at 40 at once,
    # undoing the restore's learning rate.
    write_control(folder, {"schedule": [{"at_step": 100, "hyperparameters": {"momentum": 0.7}}]})
    # Resumes at 96, restores main@64 (the end of epoch 2) at the start, so the
    # branch gets the epochs it has left of 4: trains on to 128.
    fit(model, folder, 4)
    status = read_status(folder)
    assert status["state"] == "finished" and status["branch"] == "main-s64", status
    assert re.search(r"as (r-\S+);", out) and re.search(r"as (r-\S+);", out).group(1) in status["restores_done"]  # type: ignore[union-attr]
    return folder


@pytest.fixture()
def digits_copy(digits: str, tmp_path: Any) -> str:
    return copy_experiment(digits, str(tmp_path / "digits"))


# -- usage ----------------------------------------------------------------------


def test_help_for_every_subcommand() -> None:
    code, out, _ = run("--version")
    assert code == 0 and re.fullmatch(r"tb-retune \d+\.\d+\.\d+\S*\n", out)
    code, out, _ = run("--help")
    assert code == 0
    for sub in SUBCOMMANDS:
        assert sub in out
        code, out_sub, _ = run(sub, "--help")
        assert code == 0 and out_sub.startswith(f"usage: tb-retune {sub}"), out_sub
        assert "EXPERIMENT" in out_sub and "example" in out_sub


@pytest.mark.parametrize("argv", [
    [],
    ["frobnicate", "runs/x"],
    ["set", "{exp}"],
    ["set", "{exp}", "learning_rate"],
    ["set", "{exp}", "=0.1"],
    ["set", "{exp}", "learning_rate=0.1", "--timeout", "5"],
    ["set", "{exp}", "learning_rate=0.1", "--wait", "--timeout", "-1"],
    ["restore", "{exp}"],
    ["restore", "{exp}", "--step", "twelve"],
    ["restore", "{exp}", "--step", "-5"],
    ["export", "{exp}", "--format", "xml"],
    ["replay", "{exp}"],
    ["tree"],
])
def test_usage_errors_exit_2_with_one_line(argv: list[str], tmp_path: Any) -> None:
    code, out, err = run(*[a.format(exp=tmp_path) for a in argv])
    line = refused(code, err, expected=2)
    assert "error:" in line and "--help" in line
    assert out == ""


# -- refusals -------------------------------------------------------------------


def test_unknown_experiment_and_not_an_experiment(digits: str, tmp_path: Any) -> None:
    for sub in (["status"], ["tree"], ["export", "--format", "csv"], ["replay", "--node", "main-1"],
                ["set", "learning_rate=0.1"], ["restore", "--step", "0"]):
        line = refused(*run(sub[0], str(tmp_path / "nope"), *sub[1:])[::2])
        assert line == f"tb-retune: error: experiment {tmp_path / 'nope'}: no such folder"
    # The logdir itself is not an experiment; the error names the ones it holds.
    logdir = os.path.dirname(digits)
    for sub in (["status"], ["tree"], ["set", "learning_rate=0.1"]):
        line = refused(*run(sub[0], logdir, *sub[1:])[::2])
        assert "not a tb-retune experiment" in line or "no tb-retune tree" in line
        assert f"it holds the experiments {digits}: pass one of them" in line


def test_unknown_node(digits: str) -> None:
    line = refused(*run("replay", digits, "--node", "main-9")[::2])
    assert f"experiment {digits}: no node 'main-9'; its nodes: main-1, main-2" in line


@pytest.mark.parametrize("args, message", [
    (["learning_rate=-1"], "hyperparameters.learning_rate: must be >= 0, got -1"),
    (["learning_rate=1e39"], "hyperparameters.learning_rate: 1e+39 is too large for the optimizer's float32"),
    (["momentum=1.5"], "hyperparameters.momentum: must be >= 0 and <= 1, got 1.5"),
    (["learning_rate=fast"], 'hyperparameters.learning_rate: must be a number, got "fast"'),
    (["learning_rate=nan"], "hyperparameters.learning_rate: must be a finite number, got nan"),
    (["nesterov=1"], "hyperparameters.nesterov: must be true or false, got 1"),
    (["beta_1=0.9"], 'hyperparameters.beta_1: unknown hyperparameter "beta_1"; this optimizer has: '),
    (["momentum=0.5", "momentum=0.6"], "hyperparameters.momentum: given twice (0.5 and 0.6)"),
    (["clipnorm=1", "clipvalue=1"], "only one of clipnorm, clipvalue and global_clipnorm can be set"),
])
def test_bad_values_are_refused_and_nothing_is_written(digits_copy: str, args: list[str], message: str) -> None:
    path = os.path.join(digits_copy, "retune.json")
    before = open(path, "rb").read()
    line = refused(*run("set", digits_copy, *args)[::2])
    assert line.startswith("tb-retune: error: ") and message in line
    assert open(path, "rb").read() == before


def test_restore_refusals(digits_copy: str) -> None:
    line = refused(*run("restore", digits_copy, "--branch", "main", "--step", "65")[::2])
    assert 'restore.step: branch "main" has no checkpoint at step 65; restorable steps: 0, 32, 40, 64, 70, 96' in line
    line = refused(*run("restore", digits_copy, "--branch", "side", "--step", "0")[::2])
    assert 'restore.branch: no branch "side" with checkpoints; branches: main, main-s64' in line
    line = refused(*run("restore", digits_copy, "--step", "64", "--set", "learning_rate=-0.5")[::2])
    assert "restore.hyperparameters.learning_rate: must be >= 0, got -0.5" in line


def test_writes_to_a_remote_logdir_are_refused() -> None:
    line = refused(*run("set", "gs://bucket/runs/digits", "learning_rate=0.1")[::2])
    assert "is not a local folder" in line and "run tb-retune on the machine that trains" in line


# -- set and restore on a finished experiment -----------------------------------------


def test_set_merges_into_the_control_file(digits_copy: str) -> None:
    code, out, err = run("set", digits_copy, "learning_rate=3e-4", "momentum=0.8", "nesterov=true",
                         "weight_decay=null")
    assert code == 0, err
    assert out.splitlines()[0] == (f"wrote {digits_copy}/retune.json: learning_rate=0.0003, momentum=0.8, "
                                   "nesterov=true, weight_decay=null")
    control = json.load(open(os.path.join(digits_copy, "retune.json")))
    assert control["hyperparameters"] == {"learning_rate": 3e-4, "momentum": 0.8, "nesterov": True,
                                          "weight_decay": None}
    assert control["schedule"] == [{"at_step": 100, "hyperparameters": {"momentum": 0.7}}]  # kept
    code, out, err = run("set", digits_copy, "momentum=0", "--json")
    assert code == 0, err
    result = json.loads(out)
    assert result["written"] == {"hyperparameters": {"momentum": 0}}
    assert result["control"]["hyperparameters"]["learning_rate"] == 3e-4


def test_wait_says_at_once_that_no_trainer_runs(digits_copy: str) -> None:
    started = time.monotonic()
    line = refused(*run("set", digits_copy, "learning_rate=0.003", "--wait", "--timeout", "60")[::2])
    assert time.monotonic() - started < 30  # not the 60 s timeout (issue 13 bug 8)
    assert "the trainer is not running (state finished), so it has not applied the new hyperparameters" in line
    # The request stays in the file for the next run.
    assert json.load(open(os.path.join(digits_copy, "retune.json")))["hyperparameters"] == {"learning_rate": 0.003}


def test_restore_without_wait_writes_a_request(digits_copy: str) -> None:
    code, out, err = run("restore", digits_copy, "--step", "100", "--json")
    assert code == 0, err
    result = json.loads(out)
    assert result["written"]["restore"] == {"id": result["id"], "branch": "main-s64", "step": 100}
    assert re.fullmatch(r"w-[0-9a-f]{12}", result["revision"])
    assert json.load(open(os.path.join(digits_copy, "retune.json")))["restore"]["id"] == result["id"]
    code, out, _ = run("status", digits_copy)
    assert re.search(rf"pending restore\s+{result['id']}: main-s64@100", out), out
    # A second restore would replace the pending one unseen: refused, naming it (issue 14 item 13).
    before = open(os.path.join(digits_copy, "retune.json"), "rb").read()
    line = refused(*run("restore", digits_copy, "--step", "64")[::2])
    assert f"restore: an earlier restore {result['id']} (main-s64@100) is still pending" in line
    assert open(os.path.join(digits_copy, "retune.json"), "rb").read() == before


def test_a_control_file_that_is_a_fifo_or_a_link_out_is_refused(digits_copy: str, tmp_path: Any) -> None:
    path = os.path.join(digits_copy, "retune.json")
    os.remove(path)
    os.mkfifo(path)
    started = time.monotonic()
    line = refused(*run("set", digits_copy, "momentum=0.5")[::2])
    assert "retune.json: is a FIFO (named pipe), not a file" in line and time.monotonic() - started < 30
    code, out, _ = run("status", digits_copy)
    assert code == 0 and "retune.json: is a FIFO" in out
    os.remove(path)
    os.symlink("/dev/zero", path)
    line = refused(*run("set", digits_copy, "momentum=0.5")[::2])
    assert "retune.json: is a link to /dev/zero, outside the experiment folder" in line
    assert os.path.islink(path)
    # A status file that is a link out of the experiment is refused by name, never read.
    status = os.path.join(digits_copy, "retune-status.json")
    outside = str(tmp_path / "elsewhere.json")
    os.replace(status, outside)
    os.symlink(outside, status)
    line = refused(*run("set", digits_copy, "momentum=0.5")[::2])
    assert "retune-status.json: is a link to" in line and "outside the experiment folder" in line


# -- reading ------------------------------------------------------------------------


def test_status_of_a_finished_experiment(digits: str) -> None:
    code, out, err = run("status", digits)
    assert code == 0, err
    assert re.search(r"^state\s+finished \(at \d{4}-\d\d-\d\d ", out, re.M), out
    assert re.search(r"^step\s+128 \(epoch 4\)$", out, re.M)
    assert re.search(r"^branch\s+main-s64$", out, re.M)
    assert re.search(r"^node\s+main-s64-2$", out, re.M)
    assert re.search(r"^last change\s+step 100: momentum 0.9 -> 0.7$", out, re.M)
    assert re.search(r"^checkpoints\s+main: 0, 32, 40, 64, 70, 96; main-s64: 64, 96, 100, 128$", out, re.M), out
    assert re.search(r"^  learning_rate\s+0.002$", out, re.M)
    assert re.search(r"^  momentum\s+0.7$", out, re.M)
    assert "last errors: none" in out
    code, out, _ = run("status", digits, "--json")
    doc = json.loads(out)
    assert doc["trainer"]["state"] == "finished" and doc["trainer"]["alive"] is False
    assert doc["step"] == 128 and doc["hyperparameters"]["learning_rate"] == 0.002
    assert doc["control_file"]["schedule"][0]["at_step"] == 100 and doc["control_error"] is None
    assert doc["control"]["result"] == "applied"  # the trainer's record of the last revision it took


def test_status_of_a_trainer_that_stopped_responding(digits_copy: str) -> None:
    # What a trainer killed with SIGKILL leaves: state "training", an old heartbeat.
    path = os.path.join(digits_copy, "retune-status.json")
    status = json.load(open(path))
    status.update(state="training", heartbeat=time.time() - 100)
    status["errors"] = [{"time": time.time() - 120, "step": 90, "message": "hyperparameters.momentum: must be >= 0, got -1"}]
    json.dump(status, open(path, "w"))
    with open(os.path.join(digits_copy, "retune.json"), "w") as f:
        f.write("{not json")
    code, out, err = run("status", digits_copy)
    assert code == 0, err
    assert re.search(r"^state\s+not responding for 10\d s \(pid \d+, last heartbeat ", out, re.M), out
    assert re.search(r"^retune.json\s+invalid, ignored by the trainer: retune.json: invalid JSON at line 1", out, re.M)
    assert re.search(r"^last errors \(1 of 1\):\n  \S+ \S+ step 90: hyperparameters.momentum: must be >= 0, got -1$",
                     out, re.M), out


TREE_SHAPE = [
    r"{exp}  \(5 nodes, 2 branches: main, main-s64; \* = in force\)",
    r"main-1  main 0-40  start @ 0  loss \S+",
    r"└── main-2  main 40-70  lr 0.01 → 5e-3 @ 40  loss \S+",
    r"    ├── main-s64-1  main-s64 64-100  restored main@64, lr 5e-3 → 2e-3  loss \S+",
    r"    │   └── main-s64-2 \*  main-s64 100-128  mom 0.9 → 0.7 @ 100  loss \S+",
    r"    └── main-3  main 70-96  mom 0.9 → 0.5 @ 70  loss \S+",
]


def test_tree(digits: str) -> None:
    code, out, err = run("tree", digits)
    assert code == 0, err
    lines = out.splitlines()
    assert len(lines) == len(TREE_SHAPE), out
    for line, pattern in zip(lines, TREE_SHAPE, strict=True):
        assert re.fullmatch(pattern.format(exp=re.escape(digits)), line), (line, pattern)
    code, out, _ = run("tree", digits, "--ascii")
    assert "    |   `-- main-s64-2 *  main-s64 100-128  mom 0.9 -> 0.7 @ 100" in out
    assert out.isascii()


def test_export_json(digits: str, tmp_path: Any) -> None:
    target = str(tmp_path / "tree.json")
    code, out, err = run("export", digits, "--format", "json", "-o", target)
    assert code == 0 and out == "", err
    doc = json.load(open(target))
    assert doc["format"] == "tb-retune-tree" and doc["experiment"] == digits
    nodes = {n["id"]: n for n in doc["nodes"]}
    assert set(nodes) == {"main-1", "main-2", "main-3", "main-s64-1", "main-s64-2"}
    assert doc["roots"] == ["main-1"]
    assert [b["name"] for b in doc["branches"]] == ["main", "main-s64"]
    expected = {"main-1": (0, 40, 0.01, 0.9), "main-2": (40, 70, 0.005, 0.9), "main-3": (70, 96, 0.005, 0.5),
                "main-s64-1": (64, 100, 0.002, 0.9), "main-s64-2": (100, 128, 0.002, 0.7)}
    for node_id, (start, end, lr, momentum) in expected.items():
        n = nodes[node_id]
        assert (n["start_step"], n["end_step"]) == (start, end)
        assert n["hyperparameters"]["learning_rate"] == pytest.approx(lr)
        assert n["hyperparameters"]["momentum"] == pytest.approx(momentum)
        assert start <= n["metrics"]["loss"]["step"] <= end and n["metrics"]["loss"]["value"] > 0
    assert nodes["main-s64-1"]["parent"] == "main-2" and nodes["main-s64-1"]["restore"]["step"] == 64
    assert nodes["main-s64-2"]["current"] is True
    # Without -o it goes to stdout, the same document.
    code, out, _ = run("export", digits)
    assert json.loads(out) == doc


def test_export_csv(digits: str) -> None:
    code, out, err = run("export", digits, "--format", "csv")
    assert code == 0, err
    rows = {r["node"]: r for r in csv.DictReader(io.StringIO(out))}
    assert list(rows) == ["main-1", "main-2", "main-s64-1", "main-3", "main-s64-2"]
    header = out.splitlines()[0].split(",")
    assert header[:11] == ["node", "parent", "branch", "run", "start_step", "end_step", "reason", "label",
                           "restore_branch", "restore_step", "current"]
    assert {"hp.learning_rate", "hp.momentum", "hp.nesterov", "metric.loss", "metric.loss.step"} <= set(header)
    r = rows["main-s64-1"]
    assert (r["parent"], r["branch"], r["start_step"], r["end_step"], r["reason"]) == ("main-2", "main-s64", "64", "100", "restore")
    assert (r["restore_branch"], r["restore_step"], r["hp.learning_rate"], r["hp.momentum"]) == ("main", "64", "0.002", "0.9")
    assert r["label"] == "restored main@64, lr 5e-3 → 2e-3"
    assert rows["main-1"]["parent"] == "" and rows["main-1"]["hp.nesterov"] == "false"
    assert rows["main-1"]["hp.weight_decay"] == ""
    assert rows["main-s64-2"]["current"] == "true"
    for row in rows.values():
        assert float(row["metric.loss"]) > 0 and int(row["start_step"]) <= int(row["metric.loss.step"]) <= int(row["end_step"])


def test_export_dot(digits: str) -> None:
    code, out, err = run("export", digits, "--format", "dot")
    assert code == 0, err
    assert out.startswith(f'digraph "{digits}" {{\n') and out.endswith("}\n")
    fills = dict(re.findall(r'^  "([^"]+)" \[label="[^"]*", fillcolor="(#[0-9a-f]{6})"', out, re.M))
    assert set(fills) == {"main-1", "main-2", "main-3", "main-s64-1", "main-s64-2"}
    assert fills["main-1"] == fills["main-2"] == fills["main-3"] != fills["main-s64-1"] == fills["main-s64-2"]
    edges = re.findall(r'^  "([^"]+)" -> "([^"]+)" \[label="([^"]*)"(, style=dashed)?\];$', out, re.M)
    assert sorted(edges) == sorted([
        ("main-1", "main-2", "lr 0.01 → 5e-3 @ 40", ""),
        ("main-2", "main-3", "mom 0.9 → 0.5 @ 70", ""),
        ("main-2", "main-s64-1", "restored main@64, lr 5e-3 → 2e-3", ", style=dashed"),
        ("main-s64-1", "main-s64-2", "mom 0.9 → 0.7 @ 100", ""),
    ])
    assert out.count("{") == out.count("}") and out.count('"') % 2 == 0


def test_dot_strings_are_escaped() -> None:
    from tb_retune.cli._export import to_dot

    tree = {"nodes": [{"id": 'a"b\\c', "branch": "x", "start_step": 0, "end_step": 1, "parent": None,
                       "label": "line\nbreak", "metrics": {}}],
            "branches": [{"name": "x", "color": 0}]}
    out = to_dot('we"ird', tree)
    assert out.startswith('digraph "we\\"ird" {') and '"a\\"b\\\\c" [label="a\\"b\\\\c\\nx: steps 0-1\\nline\\nbreak"' in out


# -- replay ---------------------------------------------------------------------------


def test_replay_schedule(digits: str) -> None:
    code, out, err = run("replay", digits, "--node", "main-s64-2")
    assert code == 0, err
    # The root entry holds every hyperparameter the optimizer reports.
    root = next(n for n in json.loads(run("export", digits)[1])["nodes"] if n["id"] == "main-1")
    assert {"learning_rate": 0.01, "momentum": 0.9, "nesterov": False, "weight_decay": None}.items() \
        <= root["hyperparameters"].items()
    assert json.loads(out) == {"schedule": [
        {"at_step": 0, "hyperparameters": root["hyperparameters"]},
        {"at_step": 40, "hyperparameters": {"learning_rate": 0.005}},
        {"at_step": 64, "hyperparameters": {"learning_rate": 0.002}},
        {"at_step": 100, "hyperparameters": {"momentum": 0.7}},
    ]}
    # A node of the original branch: its own changes, no restore.
    code, out, _ = run("replay", digits, "--node", "main-3")
    assert [(e["at_step"], e["hyperparameters"]) for e in json.loads(out)["schedule"][1:]] == [
        (40, {"learning_rate": 0.005}), (70, {"momentum": 0.5})]


def test_replay_retrains_the_path_step_for_step(digits: str, tmp_path: Any) -> None:
    again = str(tmp_path / "runs" / "again")
    os.makedirs(again)
    code, out, err = run("replay", digits, "--node", "main-s64-2", "-o", os.path.join(again, "retune.json"))
    assert code == 0, err
    assert out.strip() == (f"wrote {again}/retune.json: 4 schedule entries (steps 0, 40, 64, 100) for the path "
                           "main-1 -> main-2 -> main-s64-1 -> main-s64-2, which ends at step 128")
    fit(tiny_model(), again, 4)  # a new experiment, unattended: steps 0-128
    assert sorted(d for d in os.listdir(again) if not d.startswith(".") and "." not in d) == ["checkpoints", "main"]
    for tag in ("hyperparameters/learning_rate", "hyperparameters/momentum", "loss"):
        original = {s: v for s, v in scalar_series(os.path.join(digits, "main"), tag).items() if s <= 64}
        original.update({s: v for s, v in scalar_series(os.path.join(digits, "main-s64"), tag).items() if s > 64})
        replayed = scalar_series(os.path.join(again, "main"), tag)
        assert sorted(replayed) == sorted(original) and len(original) >= 32, tag
        rel = 1e-6 if tag.startswith("hyper") else 1e-4
        assert replayed == pytest.approx(original, rel=rel), tag
    lr = scalar_series(os.path.join(again, "main"), "hyperparameters/learning_rate")
    assert (lr[36], lr[44], lr[68], lr[128]) == pytest.approx((0.01, 0.005, 0.002, 0.002))
    # The replayed experiment's own tree has the path's changes as nodes.
    code, out, _ = run("tree", again)
    assert "lr 0.01 → 5e-3 @ 40" in out and "lr 5e-3 → 2e-3 @ 64" in out and "mom 0.9 → 0.7 @ 100" in out


def test_replay_merges_entries_of_one_step_and_leaves_a_compiled_lr_schedule_alone() -> None:
    from tb_retune.cli._export import replay_schedule

    def node(node_id: str, step: int, **hps: Any) -> dict[str, Any]:
        return {"id": node_id, "start_step": step, "hyperparameters": {"learning_rate": 0.1, "beta_1": 0.9, **hps}}

    path = [node("main-1", 0), node("main-2", 0, beta_1=0.8), node("main-3", 50, learning_rate=0.07, beta_1=0.8),
            node("main-s60-1", 60, learning_rate=0.02, beta_1=0.8)]
    on_schedule = {"optimizer": {"learning_rate_schedule": True}}
    doc = replay_schedule(path, {"main-1": on_schedule, "main-2": on_schedule, "main-3": on_schedule})
    # Until main-s60-1 the learning rate came from the compiled schedule (its
    # value drifting from 0.1 to 0.07 is the schedule's doing): left to the new run.
    assert doc == {"schedule": [{"at_step": 0, "hyperparameters": {"beta_1": 0.8}},
                                {"at_step": 60, "hyperparameters": {"learning_rate": 0.02}}]}
    doc = replay_schedule(path)
    assert doc["schedule"][0] == {"at_step": 0, "hyperparameters": {"learning_rate": 0.1, "beta_1": 0.8}}
    assert [e["at_step"] for e in doc["schedule"]] == [0, 50, 60]


# -- read-only access, and the console script -------------------------------------------


def listing(folder: str) -> list[tuple[str, float]]:
    """Every file and folder (hidden ones too) with its modification time."""
    paths = [folder]
    for root, dirs, files in os.walk(folder):
        paths += [os.path.join(root, n) for n in dirs + files]
    return sorted((p, os.stat(p).st_mtime) for p in paths)


def test_reading_needs_only_read_access(digits_copy: str) -> None:
    """What TensorBoard serves may be read-only: reading writes nothing at all."""
    before = listing(digits_copy)
    modes = {p: os.stat(p).st_mode for p, _ in before}
    try:
        for p in modes:
            os.chmod(p, modes[p] & ~0o222)
        for argv in (["status"], ["status", "--json"], ["tree"], ["export", "--format", "csv"],
                     ["export", "--format", "dot"], ["replay", "--node", "main-s64-1"]):
            code, out, err = run(argv[0], digits_copy, *argv[1:])
            assert code == 0 and out and not err, (argv, err)
        if os.geteuid() != 0:  # root may write anyway
            line = refused(*run("set", digits_copy, "learning_rate=0.1")[::2])
            assert "the folder is read-only for this user" in line
    finally:
        for p, mode in modes.items():
            os.chmod(p, mode)
    assert listing(digits_copy) == before


def test_console_script(digits: str) -> None:
    script = shutil.which("tb-retune", path=os.path.dirname(sys.executable))
    assert script, "the tb-retune console script is not installed next to this Python"
    proc = subprocess.run([script, "tree", digits], capture_output=True, text=True, timeout=60,
                          env={**os.environ, "PYTHONIOENCODING": "utf-8"})
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout == run("tree", digits)[1]
    assert proc.stderr == ""
    # The console script reads local event files without importing TensorFlow.
    check = ("import sys; from tb_retune.cli import main; sys.argv = ['tb-retune', 'tree', sys.argv[1]]; "
             "code = main(); print(code, 'tensorflow' in sys.modules)")
    proc = subprocess.run([sys.executable, "-c", check, digits], capture_output=True, text=True, timeout=60,
                          env={**os.environ, "PYTHONIOENCODING": "utf-8"})
    assert proc.stdout.splitlines()[-1] == "0 False", proc.stdout + proc.stderr


# -- a live trainer ----------------------------------------------------------------------


@contextlib.contextmanager
def live_trainer(folder: str) -> Iterator[FitThread]:
    """A fit of many epochs on a thread; stopped through the control file."""
    args, kwargs = fit_args(folder, 400, SlowBatches(0.004))
    thread = FitThread(tiny_model(), *args, **kwargs)
    thread.start()
    try:
        wait_for(lambda: read_status(folder).get("state") == "training", what="the trainer to start")
        yield thread
    finally:
        write_control(folder, {"restore": None, "stop": True})
        thread.join(60)
    thread.join_ok(0)  # fit stopped, without an error
    assert read_status(folder)["state"] == "stopped"


def test_live_set_restore_and_refusals(tmp_path: Any) -> None:
    folder = str(tmp_path / "live")
    with live_trainer(folder):
        code, out, err = run("status", folder)
        assert code == 0 and re.search(r"^state\s+training \(pid \d+, heartbeat \d+\.\d s ago\)$", out, re.M), out

        code, out, err = run("set", folder, "learning_rate=0.02", "momentum=0.5", "--wait", "--timeout", "20")
        if code != 0 and "control" not in read_status(folder):
            pytest.skip("the trainer does not record `control` in its status yet (interface 1, trainer side)")
        assert code == 0, err
        assert re.fullmatch(r"applied at step \d+: learning_rate 0.01 -> 0.02, momentum 0.9 -> 0.5 \(node main-2\)",
                            out.splitlines()[1]), out
        status = read_status(folder)
        assert status["hyperparameters"]["learning_rate"] == 0.02 and status["hyperparameters"]["momentum"] == 0.5

        code, out, err = run("restore", folder, "--branch", "main", "--step", "0", "--set", "learning_rate=0.03",
                             "--wait", "--timeout", "20")
        assert code == 0, err
        assert out.splitlines()[-1] == "new branch: main-s0", out
        assert "restored main@0 as branch main-s0, learning_rate 0.01 -> 0.03" in out
        status = read_status(folder)
        assert status["branch"] == "main-s0" and status["hyperparameters"]["learning_rate"] == 0.03

        # The running experiment's tree already has the new branch.
        code, out, err = run("tree", folder)
        assert code == 0, err
        assert re.search(r"^[├└]── main-s0-1 \*  main-s0 0-\d+  restored main@0, lr 0.01 → 0.03", out, re.M), out

        # 0.02 is what retune.json already holds, and the restore set 0.03 since:
        # typing it back is applied (issue 13 bug 9), named in revision.keys.
        code, out, err = run("set", folder, "learning_rate=0.02", "--wait", "--timeout", "20")
        assert code == 0, err
        assert re.fullmatch(r"applied at step \d+: learning_rate 0.03 -> 0.02 \(node main-s0-2\)", out.splitlines()[1]), out

        # A request the trainer itself refuses: its checkpoint file is gone.
        for path in glob.glob(os.path.join(folder, "checkpoints", "main", "step-0000000000--*.ckpt")):
            os.remove(path)
        started = time.monotonic()
        line = refused(*run("restore", folder, "--branch", "main", "--step", "0", "--wait", "--timeout", "20")[::2])
        assert time.monotonic() - started < 15
        assert re.fullmatch(r"tb-retune: error: the trainer refused restore r-\S+: .*checkpoint.*; nothing was changed",
                            line), line
        assert read_status(folder)["branch"] == "main-s0"
