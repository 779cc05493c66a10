"""The plugin's data logic over real event files, read by TensorBoard's own loaders."""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
import time
from typing import Any

import pytest
from tensorboard import context

from tb_retune.plugin.retune_plugin import static_file
from tb_retune.reader.experiments import ExperimentStore, load_multiplexer, open_logdir
from tb_retune.reader.folders import (
    InvalidExperimentNameError,
    UnknownExperimentError,
    UnknownNodeError,
    check_name,
    split_run,
)
from tb_retune.reader.tree import short_number
from tb_retune.testing.synthetic import make_experiment
from tb_retune.trainer.summaries import BranchWriter
from tests.plugin_support import make_logdir, strict_json


@pytest.fixture(scope="module")
def logdir(tmp_path_factory: pytest.TempPathFactory) -> str:
    return make_logdir(str(tmp_path_factory.mktemp("logdir")))


class CountingProvider:
    """Passes every call to a real data provider and records the read calls."""

    def __init__(self, inner: Any) -> None:
        self.inner = inner
        self.reads: list[tuple[str, frozenset[str]]] = []

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)

    def read_tensors(self, ctx: Any, **kwargs: Any) -> Any:
        self.reads.append(("tensors", frozenset(kwargs["run_tag_filter"].runs)))
        return self.inner.read_tensors(ctx, **kwargs)

    def read_scalars(self, ctx: Any, **kwargs: Any) -> Any:
        self.reads.append(("scalars", frozenset(kwargs["run_tag_filter"].runs)))
        return self.inner.read_scalars(ctx, **kwargs)


def test_reader_lists_experiments_and_builds_the_tree(logdir: str) -> None:
    reader = open_logdir(logdir)
    exps = {e["name"]: e for e in reader.experiments()}
    assert sorted(exps) == ["digits", "sweeps/a"]
    digits = exps["digits"]
    assert digits["branches"] == ["main", "main-s1", "main-s2"]
    assert digits["runs"] == ["digits/main", "digits/main-s1", "digits/main-s2"]
    assert digits["trainer"]["alive"] is True and digits["writable"] is True
    assert digits["node"] == "main-s2-3" and digits["last_error"] is None

    tree = reader.tree("digits")
    assert len(tree["nodes"]) == 9 and tree["roots"] == ["main-1"]
    assert [b["name"] for b in tree["branches"]] == ["main", "main-s1", "main-s2"]
    assert tree["writable"] is True and tree["status"]["node"] == "main-s2-3"
    by_id = {n["id"]: n for n in tree["nodes"]}
    assert by_id["main-2"]["parent"] == "main-1"
    assert by_id["main-2"]["label"].startswith("lr 1e-3 \u2192 ")
    assert by_id["main-s2-3"]["current"] is True
    # Metrics come from the scalars, the end step from the branch's last step.
    assert by_id["main-3"]["end_step"] == 300
    assert by_id["main-3"]["metrics"]["val_loss"]["step"] == 300
    assert "hyperparameters/learning_rate" not in by_id["main-3"]["metrics"]
    assert by_id["main-1"]["checkpoints"] == [100]
    # A restored branch starts at its restore step, and its parent is in another branch.
    first = {b["name"]: b for b in tree["branches"]}["main-s1"]
    assert by_id[first["nodes"][0]]["restore"]["step"] == first["start_step"]

    node = reader.node("digits", "main-1")
    assert node["config"]["optimizer"]["class_name"] == "SGD"
    assert node["series"]["loss"][0][0] == 0 and node["series"]["loss"][-1][0] <= 100
    assert [p[0] for p in node["series"]["val_loss"]] == [100]

    status = reader.status("sweeps/a")
    assert status["experiment"] == "sweeps/a" and status["control"] is None
    assert status["checkpoints"]["main"] and status["trainer"]["alive"] is True


def test_unknown_names_and_nodes(logdir: str) -> None:
    reader = open_logdir(logdir)
    with pytest.raises(UnknownExperimentError):
        reader.tree("nope")
    with pytest.raises(UnknownExperimentError):
        reader.tree("digits/main")  # a branch folder, not an experiment
    with pytest.raises(UnknownNodeError):
        reader.node("digits", "main-99")
    with pytest.raises(UnknownExperimentError):
        reader.status("nope")
    for bad in ["", "..", "../digits", "/etc", "digits/../digits", "a//b", "a\x00b", "a\\b", "./digits"]:
        with pytest.raises(InvalidExperimentNameError):
            check_name(bad)
    assert check_name("sweeps/a") == "sweeps/a" and check_name(".") == "."


def test_run_names() -> None:
    assert split_run("digits/main") == ("digits", "main")
    assert split_run("sweeps/a/main-s1200") == ("sweeps/a", "main-s1200")
    assert split_run("main") == (".", "main")
    assert split_run(".") is None


def test_logdir_that_is_itself_the_experiment(tmp_path: Any) -> None:
    make_experiment(str(tmp_path), branches=2, nodes=3)
    reader = open_logdir(str(tmp_path))
    assert [e["name"] for e in reader.experiments()] == ["."]
    tree = reader.tree(".")
    assert {n["run"] for n in tree["nodes"]} == {"main", "main-s1"}
    assert reader.status(".")["experiment"] == "."


def test_cache_rereads_only_what_changed(tmp_path: Any) -> None:
    folder = str(tmp_path / "digits")
    status = make_experiment(folder, branches=3, nodes=6, seed=3)
    multiplexer, provider = load_multiplexer(str(tmp_path))
    multiplexer.AddRunsFromDirectory(str(tmp_path))
    multiplexer.Reload()
    counting = CountingProvider(provider)
    now = [1000.0]
    store = ExperimentStore(counting, str(tmp_path), clock=lambda: now[0])
    ctx = context.RequestContext()

    first = store.tree(ctx, "digits")
    assert len(first["nodes"]) == 6
    assert counting.reads == [
        ("tensors", frozenset({"digits/main", "digits/main-s1", "digits/main-s2"})),
        ("scalars", frozenset({"digits/main", "digits/main-s1", "digits/main-s2"})),
    ]
    counting.reads.clear()
    again = store.tree(ctx, "digits")
    assert counting.reads == [] and again["nodes"] == first["nodes"]

    # A heartbeat alone does not rebuild the nodes, but the liveness follows it.
    status["heartbeat"] = 990.0
    with open(os.path.join(folder, "retune-status.json"), "w") as f:
        json.dump(status, f)
    now[0] = 1000.5
    beat = store.tree(ctx, "digits")
    assert counting.reads == [] and beat["trainer"]["alive"] is True
    assert beat["trainer"]["age_s"] == pytest.approx(10.5)
    assert beat["nodes"] is again["nodes"]

    # The trainer goes on in one branch: a new node and more scalars there.
    last = max(b["last_step"] for b in first["branches"] if b["name"] == "main")
    # Event files are named by the second they are made in (and a counter that
    # does not sort as a number): a resumed trainer's file comes in a later second.
    time.sleep(1.05 - time.time() % 1)
    writer = BranchWriter(os.path.join(folder, "main"), start_step=last + 1)
    parent = {n["id"]: n for n in first["nodes"]}["main-2"]
    record = {
        "version": 1, "id": "main-9", "branch": "main", "parent": "main-2", "step": last + 1,
        "seq": 99, "time": 2e9, "reason": "control", "restore": None,
        "hyperparameters": {**parent["hyperparameters"], "learning_rate": 0.5},
        "change": {"learning_rate": [parent["hyperparameters"]["learning_rate"], 0.5]}, "config": None,
    }
    writer.node(record)
    writer.scalars(last + 50, {"loss": float("nan"), "val_loss": 0.25})
    writer.close()
    multiplexer.Reload()
    counting.reads.clear()
    tree = store.tree(ctx, "digits")
    assert counting.reads == [
        ("tensors", frozenset({"digits/main"})),
        ("scalars", frozenset({"digits/main"})),
    ]
    by_id = {n["id"]: n for n in tree["nodes"]}
    assert by_id["main-9"]["start_step"] == last + 1 and by_id["main-9"]["end_step"] == last + 50
    assert by_id["main-9"]["metrics"]["val_loss"] == {"step": last + 50, "value": 0.25}
    assert math.isnan(by_id["main-9"]["metrics"]["loss"]["value"])
    old_lr = short_number(parent["hyperparameters"]["learning_rate"])
    assert by_id["main-9"]["label"] == f"lr {old_lr} \u2192 0.5 @ {last + 1}"
    # The served JSON stays strict JSON despite the NaN loss.
    served = strict_json(store.tree_json(ctx, "digits"))
    assert served["trainer"] == tree["trainer"] and served["writable"] is True
    metrics = strict_json(store.metrics_json(ctx, "digits"))
    assert metrics["metrics"]["main-9"]["loss"]["value"] == "NaN"
    assert metrics["tree_key"] == served["tree_key"]


def test_static_file_lookup_stays_inside_its_folder(tmp_path: Any) -> None:
    root = tmp_path / "static"
    (root / "sub").mkdir(parents=True)
    (root / "index.js").write_text("export function render() {}\n")
    (root / "sub" / "style.css").write_text("p {}\n")
    (root / ".secret.js").write_text("x")
    (tmp_path / "outside.js").write_text("x")
    os.symlink(str(tmp_path / "outside.js"), str(root / "link.js"))
    assert static_file("index.js", str(root)) == (str(root / "index.js"), "text/javascript")
    assert static_file("sub/style.css", str(root)) == (str(root / "sub" / "style.css"), "text/css")
    for bad in ["", "../outside.js", "sub/../../outside.js", "/etc/passwd", "link.js", ".secret.js",
                "index.js\x00.png", "sub\\..\\..\\outside.js", "sub//style.css", "./index.js", "sub",
                "missing.js", "index.py"]:
        assert static_file(bad, str(root)) is None, bad


def test_loader_imports_nothing_heavy() -> None:
    code = (
        "import sys\n"
        "import tb_retune.plugin.loader\n"
        "heavy = sorted(m for m in sys.modules if m.split('.')[0] in ('tensorflow', 'keras', 'numpy'))\n"
        "assert not heavy, heavy\n"
        "mine = sorted(m for m in sys.modules if m.startswith('tb_retune'))\n"
        "assert mine == ['tb_retune', 'tb_retune._errors', 'tb_retune._version', 'tb_retune.plugin',"
        " 'tb_retune.plugin.loader'], mine\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True, timeout=60)


def test_plugin_is_active_only_with_retune_data(logdir: str, tmp_path: Any) -> None:
    from tensorboard.plugins import base_plugin

    from tb_retune.plugin.loader import RetuneLoader

    for folder, active in [(logdir, True), (str(tmp_path), False)]:
        multiplexer, provider = load_multiplexer(folder)
        multiplexer.AddRunsFromDirectory(folder)
        multiplexer.Reload()
        plugin = RetuneLoader().load(base_plugin.TBContext(data_provider=provider, logdir=folder))
        assert plugin.plugin_name == "retune" and plugin.is_active() is active
        assert plugin.frontend_metadata().es_module_path == "/static/index.js"
