"""The tree cache notices every kind of change, though it lists only what can have changed.

Real event files written with the trainer's own writer, read by TensorBoard's
own data providers: the Python multiplexer (``--load_fast=false``), reloaded by
the test, and the Rust data server (``--load_fast=auto``, TensorBoard's
default), which reloads on its own: there the test first waits until the data
provider itself shows the change, then asks the store once. Either way the
first request after the data provider has a change must show it.

The listing plan runs with no sweep (``sweep=0``) unless a test is about the
sweep, so these tests prove the rules that name what can have changed (a new
run, the status file's branch, a branch that was live or changed within
``hot_s``), not the safety net.
"""

from __future__ import annotations

import gzip
import os
import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from tensorboard import context
from tensorboard.data import provider as tb_provider

from tb_retune.experiment import atomic
from tb_retune.experiment.metadata import NODE_TAG_PREFIX, PLUGIN_NAME, node_tag
from tb_retune.reader.cache import HOT_S, ListingPlan, Reply, reply_search, reply_tree
from tb_retune.reader.experiments import ExperimentStore, load_multiplexer
from tb_retune.testing.data_server import RustDataServer, server_binary
from tb_retune.testing.synthetic import make_experiment
from tb_retune.trainer.summaries import BranchWriter
from tests.conftest import wait_for
from tests.plugin_support import App, strict_json

BRANCHES = 6  # main, main-s1 ... main-s5; the status file names main-s5


class Source:
    """A logdir behind one of TensorBoard's data providers."""

    def __init__(self, logdir: str, kind: str) -> None:
        self.logdir = logdir
        self.kind = kind
        self._server: RustDataServer | None = None
        if kind == "multiplexer":
            self._multiplexer, self.provider = load_multiplexer(logdir)
        else:
            self._server = RustDataServer(logdir, reload_s=1)
            self.provider = self._server.provider
        self.ctx = context.RequestContext()

    def loaded(self, predicate: Callable[[Any], Any], what: str) -> None:
        """Makes the data provider load the logdir, until ``predicate(provider)`` holds."""
        if self._server is None:
            self._multiplexer.AddRunsFromDirectory(self.logdir)
            self._multiplexer.Reload()
            assert predicate(self.provider), f"the multiplexer does not show {what}"
        else:
            wait_for(lambda: predicate(self.provider), timeout=90, interval=0.2, what=what)

    def close(self) -> None:
        if self._server is not None:
            self._server.close()


class Recorder:
    """Passes every call to a real data provider and records the runs each listing asked about."""

    def __init__(self, inner: Any) -> None:
        self.inner = inner
        self.listed: list[frozenset[str]] = []
        self.reads: list[tuple[str, frozenset[str]]] = []

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)

    def list_tensors(self, ctx: Any, **kwargs: Any) -> Any:
        self.listed.append(frozenset(kwargs["run_tag_filter"].runs))
        return self.inner.list_tensors(ctx, **kwargs)

    def read_tensors(self, ctx: Any, **kwargs: Any) -> Any:
        self.reads.append(("tensors", frozenset(kwargs["run_tag_filter"].runs)))
        return self.inner.read_tensors(ctx, **kwargs)

    def read_scalars(self, ctx: Any, **kwargs: Any) -> Any:
        self.reads.append(("scalars", frozenset(kwargs["run_tag_filter"].runs)))
        return self.inner.read_scalars(ctx, **kwargs)


@pytest.fixture(params=["multiplexer", "rust"], ids=["python-multiplexer", "rust-data-server"])
def kind(request: pytest.FixtureRequest) -> str:
    if request.param == "rust" and server_binary() is None:
        pytest.skip("TensorBoard's Rust data server is not installed")
    return str(request.param)


class World:
    """An experiment of six branches, its data provider, and a store over it with a hand-driven clock."""

    def __init__(self, root: str, kind: str, *, sweep: int = 0) -> None:
        self.folder = os.path.join(root, "exp")
        self.status = make_experiment(self.folder, branches=BRANCHES, nodes=12, seed=5)
        make_experiment(os.path.join(root, "other"), branches=2, nodes=3, seed=6)  # another experiment beside it
        self.source = Source(root, kind)
        self.source.loaded(lambda p: self.node_ids_in(p) >= 15, "the 12 + 3 nodes")
        self.recorder = Recorder(self.source.provider)
        self.now = time.time()
        self.store = ExperimentStore(self.recorder, root, clock=lambda: self.now,
                                     listing=ListingPlan(sweep=sweep))

    def node_ids_in(self, provider: Any, run: str | None = None) -> int:
        mapping = provider.list_tensors(
            self.source.ctx, experiment_id="", plugin_name=PLUGIN_NAME,
            run_tag_filter=tb_provider.RunTagFilter(runs=[run]) if run else None)
        return sum(1 for tags in mapping.values() for t in tags if t.startswith(NODE_TAG_PREFIX))

    def tree(self) -> dict[str, Any]:
        return self.store.tree(self.source.ctx, "exp")

    def nodes(self) -> dict[str, dict[str, Any]]:
        return {n["id"]: n for n in self.tree()["nodes"]}

    def settle(self) -> None:
        """Lets every hot window pass: from now on only the trainer's branch is hot."""
        self.now += HOT_S + 1

    def write_status(self, **changes: Any) -> None:
        self.status = dict(self.status, heartbeat=time.time(), **changes)
        atomic.atomic_write_json(os.path.join(self.folder, "retune-status.json"), self.status, durable=False)

    def add_node(self, branch: str, node_id: str, *, parent: str, step: int, restore: Any = None) -> None:
        """Writes one node (and a loss point after it) into ``branch``'s run, in a new event file."""
        # Event files are named by the second they are made in; a later file of a run must sort later.
        time.sleep(1.05 - time.time() % 1)
        writer = BranchWriter(os.path.join(self.folder, branch), start_step=step)
        writer.node({
            "version": 1, "id": node_id, "branch": branch, "parent": parent, "step": step, "seq": 1000 + step,
            "time": time.time(), "reason": "restore" if restore else "control", "restore": restore,
            "hyperparameters": {"learning_rate": 0.5, "momentum": 0.9}, "change": {}, "config": None,
        })
        writer.scalars(step + 10, {"loss": 0.125})
        writer.close()
        run, tag = "exp/" + branch, node_tag(node_id)
        self.source.loaded(
            lambda p: tag in p.list_tensors(self.source.ctx, experiment_id="", plugin_name=PLUGIN_NAME,
                                            run_tag_filter=tb_provider.RunTagFilter(runs=[run])).get(run, {}),
            f"node {node_id} in {run}",
        )

    def add_points(self, branch: str, step: int, loss: float) -> None:
        """Writes one loss point into ``branch``'s run (no node), in a new event file."""
        time.sleep(1.05 - time.time() % 1)
        writer = BranchWriter(os.path.join(self.folder, branch), start_step=step)
        writer.scalars(step, {"loss": loss})
        writer.close()
        run = "exp/" + branch
        self.source.loaded(
            lambda p: p.list_scalars(self.source.ctx, experiment_id="", plugin_name="scalars",
                                     run_tag_filter=tb_provider.RunTagFilter(runs=[run]))[run]["loss"].max_step
            == step,
            f"loss at step {step} in {run}",
        )

    def reply(self, route: str = "tree") -> dict[str, Any]:
        return strict_json(getattr(self.store, f"{route}_json")(self.source.ctx, "exp"))

    def last_step(self, branch: str) -> int:
        return max(b["last_step"] for b in self.tree()["branches"] if b["name"] == branch)

    def close(self) -> None:
        self.source.close()


@pytest.fixture
def world(tmp_path: Any, kind: str) -> Iterator[World]:
    w = World(str(tmp_path), kind)
    try:
        yield w
    finally:
        w.close()


def test_a_warm_request_lists_only_the_trainers_branch(world: World) -> None:
    world.store.tree(world.source.ctx, "other")  # another experiment was shown first
    assert len(world.tree()["nodes"]) == 12
    assert world.recorder.listed[-1] == {f"exp/{b}" for b in ["main"] + [f"main-s{i}" for i in range(1, BRANCHES)]}
    # Right after the first request (no hot window has passed) as well as later.
    world.recorder.listed.clear()
    world.tree()
    assert world.recorder.listed == [frozenset({"exp/main-s5"})]
    world.settle()
    world.recorder.listed.clear()
    world.tree()
    world.tree()
    assert world.recorder.listed == [frozenset({"exp/main-s5"})] * 2


def test_a_new_node_on_the_live_branch_shows_at_the_next_request(world: World) -> None:
    world.tree()
    world.settle()
    last = world.last_step("main-s5")
    world.add_node("main-s5", "main-s5-9", parent="main-s5-2", step=last + 1)
    node = world.nodes()["main-s5-9"]
    assert node["parent"] == "main-s5-2" and node["start_step"] == last + 1 and node["end_step"] == last + 11
    assert node["metrics"]["loss"] == {"step": last + 11, "value": 0.125}


def test_a_new_branch_shows_at_the_next_request_named_by_the_status_or_not(world: World) -> None:
    world.tree()
    world.settle()
    # A restore: the trainer's new branch, which the status file names.
    world.add_node("main-r1", "main-r1-1", parent="main-1", step=50,
                   restore={"branch": "main", "step": 50, "node": "main-1"})
    world.write_status(branch="main-r1", node="main-r1-1")
    tree = world.tree()
    assert "main-r1" in [b["name"] for b in tree["branches"]]
    assert {n["id"]: n for n in tree["nodes"]}["main-r1-1"]["parent"] == "main-1"
    # A branch that no status names (another process's trial): a run not seen before.
    world.settle()
    world.add_node("trial-1", "trial-1-1", parent="main-2", step=120)
    assert world.nodes()["trial-1-1"]["branch"] == "trial-1"


def test_a_restarted_trainer_shows_at_the_next_request_even_on_an_old_branch(world: World) -> None:
    world.tree()
    world.settle()
    # The trainer is restarted (a new pid) and resumes main, a branch cold for a minute.
    last = world.last_step("main")
    world.write_status(pid=world.status["pid"] + 1, branch="main", node="main-2", state="training")
    world.add_node("main", "main-9", parent="main-2", step=last + 1)
    tree = world.tree()
    assert {n["id"]: n for n in tree["nodes"]}["main-9"]["start_step"] == last + 1
    assert tree["status"]["pid"] == world.status["pid"]


def test_the_previous_branch_is_listed_for_a_while_after_the_trainer_left_it(world: World) -> None:
    world.tree()
    world.settle()
    world.tree()  # main-s5 is the trainer's branch
    world.write_status(branch="main-s1", node="main-s1-1")
    world.tree()  # the trainer moved on; main-s5's last events are not loaded yet
    world.now += HOT_S / 2
    last = world.last_step("main-s5")
    world.add_node("main-s5", "main-s5-late", parent="main-s5-2", step=last + 1)
    assert "main-s5-late" in world.nodes()
    # Once the window has passed without a change, main-s5 is no longer listed.
    world.now += HOT_S + 1
    world.recorder.listed.clear()
    world.tree()
    assert world.recorder.listed == [frozenset({"exp/main-s1"})]


def test_the_sweep_bounds_how_long_an_unannounced_change_goes_unseen(tmp_path: Any, kind: str) -> None:
    world = World(str(tmp_path), kind, sweep=1)
    try:
        world.tree()
        world.settle()
        last = world.last_step("main-s2")
        world.add_node("main-s2", "main-s2-9", parent="main-s2-1", step=last + 1)  # no status tells of it
        # Five branches besides the trainer's, one swept per request: seen within five requests.
        world.recorder.listed.clear()
        seen = [("main-s2-9" in world.nodes()) for _ in range(BRANCHES - 1)]
        assert seen[-1]
        found = seen.index(True) + 1
        # Until then each request listed the trainer's branch and one other; after
        # it, the branch that changed is hot too.
        assert [len(runs) for runs in world.recorder.listed] == [2] * found + [3] * (BRANCHES - 1 - found)
    finally:
        world.close()


def test_the_gzip_reply_is_the_plain_reply_compressed(tmp_path: Any) -> None:
    make_experiment(str(tmp_path / "exp"), branches=3, nodes=9, seed=1)
    app = App(str(tmp_path))
    plain = app.get("tree?experiment=exp")
    packed = app.get("tree?experiment=exp", headers={"Accept-Encoding": "gzip, deflate, br"})
    assert plain.status_code == packed.status_code == 200
    assert "Content-Encoding" not in plain.headers
    assert packed.headers["Content-Encoding"] == "gzip" and packed.headers["Vary"] == "Accept-Encoding"
    assert int(packed.headers["Content-Length"]) == len(packed.data) < len(plain.data)
    body = strict_json(gzip.decompress(packed.data))
    assert body.keys() == strict_json(plain.data).keys()
    assert body["nodes"] == strict_json(plain.data)["nodes"]
    # A heartbeat changes only the tail; the compressed reply follows it.
    status_path = str(tmp_path / "exp" / "retune-status.json")
    status = strict_json(open(status_path, "rb").read())
    atomic.atomic_write_json(status_path, dict(status, heartbeat=1.0, state="finished"), durable=False)
    after = strict_json(gzip.decompress(app.get("tree?experiment=exp", headers={"Accept-Encoding": "gzip"}).data))
    assert after["status"]["state"] == "finished" and after["trainer"]["state"] == "finished"
    assert after["nodes"] == body["nodes"]


def test_the_reply_leaves_out_only_what_the_tree_view_does_not_draw(tmp_path: Any) -> None:
    make_experiment(str(tmp_path / "exp"), branches=3, nodes=9, seed=1, search=4)
    app = App(str(tmp_path))
    reply = strict_json(app.get("tree?experiment=exp").data)
    full = ExperimentStore(app.provider, str(tmp_path)).tree(app.ctx, "exp")
    trials = 0
    for sent, built in zip(reply["nodes"], full["nodes"], strict=True):
        assert set(built) - set(sent) == {"children", "reason", "time", "metrics"} | (
            set() if built["search"] else {"search"})
        assert {k: v for k, v in sent.items() if k != "search"} == {k: v for k, v in built.items() if k in sent
                                                                    and k != "search"}
        if built["search"]:
            # A trial's node: its search and trial number, which the tree groups it by.
            assert sent["search"] == {"id": built["search"]["id"], "trial": built["search"]["trial"]}
            assert set(built["search"]) > {"id", "trial"}
            trials += 1
    assert trials == 4
    assert [set(b) for b in reply["branches"]] == [set(b) - {"time"} for b in full["branches"]]
    assert set(full["status"]) - set(reply["status"]) == {"checkpoints", "checkpoint_nodes"}
    # The node route still has every field of the node, its metrics and its whole search record.
    trial = next(n for n in full["nodes"] if n["search"])
    node = strict_json(app.get(f"node?experiment=exp&node={trial['id']}").data)
    assert {"children", "reason", "time", "config", "series"} <= set(node)
    assert node["metrics"] == trial["metrics"] and node["metrics"]["loss"]
    assert node["search"] == trial["search"]
    # The metrics route has every node's metrics, for the tree the tree route sent.
    metrics = strict_json(app.get("metrics?experiment=exp").data)
    assert metrics["metrics"] == {n["id"]: n["metrics"] for n in full["nodes"]}
    assert metrics["tree_key"] == reply["tree_key"] and metrics["experiment"] == "exp"
    packed = app.get("metrics?experiment=exp", headers={"Accept-Encoding": "gzip"})
    assert packed.headers["Content-Encoding"] == "gzip" and strict_json(gzip.decompress(packed.data)) == metrics


def test_the_branch_after_a_search_is_not_sent_as_one_of_its_trials() -> None:
    then = {"id": "s-1", "then": "best", "trial": 3}
    assert reply_search(then) == {"id": "s-1", "then": "best"}
    assert reply_search({"id": "s-1", "trial": 2, "baseline": False, "state": "complete", "value": 0.5,
                         "hyperparameters": {"learning_rate": 0.1}, "step": 400}) == {"id": "s-1", "trial": 2}
    assert reply_search(None) is None and reply_search({"trial": 1}) is None
    tree = {"nodes": [{"id": "a", "search": then, "metrics": {}}, {"id": "b", "search": None}]}
    assert reply_tree(tree)["nodes"] == [{"id": "a", "search": {"id": "s-1", "then": "best"}}, {"id": "b"}]


def test_the_tree_route_reads_no_metric_point_and_the_metrics_route_reads_only_what_changed(world: World) -> None:
    world.recorder.reads.clear()
    first = world.reply()
    assert [kind for kind, _ in world.recorder.reads] == ["tensors"]
    assert all("metrics" not in n for n in first["nodes"])
    world.recorder.reads.clear()
    metrics = world.reply("metrics")
    assert world.recorder.reads == [("scalars", frozenset(f"exp/{b}" for b in ["main"] + [
        f"main-s{i}" for i in range(1, BRANCHES)]))]
    assert set(metrics["metrics"]) == {n["id"] for n in first["nodes"]}
    # Warm: nothing is read again, and the tree's key is the same.
    world.recorder.reads.clear()
    assert world.reply()["tree_key"] == first["tree_key"] and world.reply("metrics") == metrics
    assert world.recorder.reads == []
    # A heartbeat: same tree, same key.
    world.write_status()  # a new heartbeat
    assert world.reply()["tree_key"] == first["tree_key"]


def test_new_points_on_the_live_branch_move_its_end_without_reading_its_nodes_again(world: World) -> None:
    world.tree()
    world.settle()
    before = world.reply()
    last = world.last_step("main-s5")
    world.add_points("main-s5", last + 40, 0.0625)
    world.recorder.reads.clear()
    after = world.reply()
    assert world.recorder.reads == []  # the node records did not change: only listed
    assert max(b["last_step"] for b in after["branches"] if b["name"] == "main-s5") == last + 40
    assert after["tree_key"] != before["tree_key"]
    latest = max((n for n in after["nodes"] if n["branch"] == "main-s5"), key=lambda n: n["start_step"])
    assert latest["end_step"] == last + 40
    metrics = world.reply("metrics")
    assert world.recorder.reads == [("scalars", frozenset({"exp/main-s5"}))]
    assert metrics["metrics"][latest["id"]]["loss"] == {"step": last + 40, "value": 0.0625}
    assert metrics["tree_key"] == after["tree_key"]


def test_reply_bytes_are_one_json_object_and_one_gzip_stream() -> None:
    reply = Reply(b'{"nodes":[1,2]}')
    assert reply.body(b'{"trainer":{"alive":true}}') == b'{"nodes":[1,2],"trainer":{"alive":true}}'
    assert reply.body(b"{}") == b'{"nodes":[1,2]}'
    for tail in (b'{"a":1}', b'{"b":[2,3]}', b"{}"):
        assert gzip.decompress(reply.gzip_body(tail)) == reply.body(tail)
    assert Reply(b"{}").body(b'{"a":1}') == b'{"a":1}'
    with pytest.raises(ValueError):
        Reply(b"[1]")
