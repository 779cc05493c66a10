"""The experiments of a logdir, read through TensorBoard's data provider.

The Retune tab's routes and the command line read experiments the same way:
the tree nodes are ``retune`` tensor summaries and the metrics are scalars,
both served by a TensorBoard data provider (so remote logdirs work, and the
Rust data server as well as the Python multiplexer); only the small status and
control files are read directly, next to the event files.

:class:`ExperimentStore` answers the routes: the branches are read by a
:class:`~tb_retune.reader.branches.BranchReader` (which lists again only the
runs that can have changed, see :mod:`tb_retune.reader.cache`, and reads the
metric points only for what asks for them: the ``metrics`` and ``node``
routes, the command line), and the store keeps per experiment the last tree
built, its reply's bytes and its nodes' metrics. Use :func:`open_logdir` to
read a logdir without a TensorBoard server.

Example:

```python
from tb_retune.reader.experiments import open_logdir

reader = open_logdir("runs")
for exp in reader.experiments():
    print(exp["name"], exp["branches"])
tree = reader.tree("digits")
```
"""

from __future__ import annotations

import dataclasses
import json
import os
import threading
import time
from collections.abc import Callable, Iterable, Mapping
from typing import Any

from tb_retune.experiment import control_file, requests
from tb_retune.experiment.control import STATUS_FILENAME
from tb_retune.experiment.metadata import PLUGIN_NAME
from tb_retune.reader.branches import (
    METRIC_DOWNSAMPLE,
    NODE_DOWNSAMPLE,
    SCALARS_PLUGIN,
    Branch,
    BranchReader,
    decode_record,
    decode_record_checked,
    latest_notes,
)
from tb_retune.reader.cache import ListingPlan, Reply, StatusMemo, reply_status, reply_tree
from tb_retune.reader.folders import (
    UnknownExperimentError,
    UnknownNodeError,
    check_name,
    experiment_folder,
    folder_writable,
    is_local,
    read_control,
    read_status,
    run_prefix,
)
from tb_retune.reader.tree import build_tree, live_parts, node_metrics, trainer_liveness

__all__ = [
    "METRIC_DOWNSAMPLE", "NODE_DOWNSAMPLE", "SCALARS_PLUGIN", "SERIES_TAGS", "ExperimentStore", "Reader",
    "decode_record", "decode_record_checked", "dumps_json", "latest_notes", "load_multiplexer", "open_logdir",
]

#: Metrics that the ``node`` route returns as series.
SERIES_TAGS = ("loss", "val_loss")
#: Largest status file that is read at all.
MAX_STATUS_BYTES = control_file.MAX_STATUS_BYTES


@dataclasses.dataclass
class _Tree:
    """The last tree built for an experiment, with what was made from it since."""

    key: dict[str, Any]
    status_key: dict[str, Any]
    tree: dict[str, Any]
    reply: Reply | None = None
    #: Node id -> its metrics, and the branches' scalar listings they were read at.
    metrics: dict[str, dict[str, Any]] | None = None
    metrics_key: dict[str, Any] | None = None
    metrics_reply: Reply | None = None
    #: The nodes with their metrics (:meth:`ExperimentStore.tree`), made from ``metrics``.
    nodes_with_metrics: list[dict[str, Any]] | None = None


def dumps_json(obj: Any, *, compact: bool = False) -> bytes:
    """JSON bytes; non-finite floats become ``"NaN"``/``"Infinity"`` as in TensorBoard.

    ``compact``: no spaces after ``,`` and ``:`` (a tenth smaller for a large tree).
    """
    separators = (",", ":") if compact else None
    try:
        text = json.dumps(obj, allow_nan=False, separators=separators)
    except ValueError:
        from tensorboard.backend import json_util

        text = json.dumps(json_util.Cleanse(obj), separators=separators)
    return text.encode("utf-8")


class ExperimentStore:
    """Reads the experiments of one logdir through a TensorBoard data provider.

    Thread-safe: the plugin serves requests from several threads. The
    branches are read and cached by a :class:`~tb_retune.reader.branches.BranchReader`;
    the store keeps, per experiment, the last tree built, its reply's bytes
    and its nodes' metrics.

    Args:
        data_provider: A ``tensorboard.data.provider.DataProvider``.
        logdir: The logdir, to find the status and control files (``""`` when
            TensorBoard serves no local logdir).
        clock: Returns the current time; for the trainer's liveness.
        listing: Which runs a request lists again; by default a
            :class:`~tb_retune.reader.cache.ListingPlan` with its defaults.
    """

    def __init__(
        self,
        data_provider: Any,
        logdir: str,
        *,
        clock: Callable[[], float] = time.time,
        listing: ListingPlan | None = None,
    ) -> None:
        self.logdir = logdir or ""
        self._clock = clock
        self._lock = threading.Lock()
        self._trees: dict[tuple[str, str], _Tree] = {}
        self._reader = BranchReader(data_provider, clock=clock, listing=listing)
        self._statuses = StatusMemo()

    def _status_file(self, name: str) -> dict[str, Any] | None:
        """The experiment's status file; None without a local logdir."""
        return read_status(self.logdir, name) if self.logdir else None

    def _status_memo(self, name: str) -> dict[str, Any] | None:
        """:meth:`_status_file`, decoded again only when the file changed."""
        path = None
        if self.logdir and is_local(self.logdir):
            path = os.path.join(experiment_folder(self.logdir, name), STATUS_FILENAME)
        return self._statuses.read(path, lambda: self._status_file(name))

    def _writable(self, name: str) -> bool:
        return bool(self.logdir) and folder_writable(self.logdir, name)

    # -- the experiments ------------------------------------------------

    def index(self, ctx: Any, experiment_id: str = "") -> dict[str, list[str]]:
        """``{experiment: [branch, ...]}`` for every run with ``retune`` tree nodes."""
        return self._reader.index(ctx, experiment_id)[0]

    def experiments(self, ctx: Any, experiment_id: str = "") -> list[dict[str, Any]]:
        """The ``experiments`` route's list, sorted by name."""
        now = self._clock()
        result = []
        for name, branches in sorted(self.index(ctx, experiment_id).items()):
            status = self._status_memo(name)
            errors = (status or {}).get("errors") or []
            last_error = errors[-1].get("message") if errors and isinstance(errors[-1], dict) else None
            result.append(
                {
                    "name": name,
                    "branches": branches,
                    "runs": [run_prefix(name) + b for b in branches],
                    "trainer": trainer_liveness(status, now),
                    "step": (status or {}).get("step"),
                    "branch": (status or {}).get("branch"),
                    "node": (status or {}).get("node"),
                    "last_error": last_error,
                    "writable": self._writable(name),
                }
            )
        return result

    # -- the tree -------------------------------------------------------

    def _built(
        self, ctx: Any, experiment_id: str, name: str
    ) -> tuple[_Tree, dict[str, Branch], dict[str, Any] | None]:
        """The (cached) tree of ``name`` without metrics, its branches and its status file."""
        name = check_name(name)
        status = self._status_memo(name)
        branches = self._reader.read(ctx, experiment_id, name, status)
        key = {b: br.key for b, br in branches.items()}
        # Only these keys of the status shape the nodes; the heartbeat does not.
        status_key = {k: (status or {}).get(k) for k in ("node", "checkpoints", "checkpoint_nodes")}
        with self._lock:
            cached = self._trees.get((experiment_id, name))
        if cached is None or cached.key != key or cached.status_key != status_key:
            tree = build_tree(
                name,
                [r for b in branches.values() for r in b.records],
                branch_last_step={b: br.last_step for b, br in branches.items() if br.last_step is not None},
                status=status,
                run_prefix=run_prefix(name),
                warnings=[w for b in branches.values() for w in b.warnings],
                note_records=latest_notes(n for b in branches.values() for n in b.notes),
            )
            cached = _Tree(key=key, status_key=status_key, tree=tree)
            with self._lock:
                self._trees[(experiment_id, name)] = cached
        return cached, branches, status

    def _metrics(self, ctx: Any, experiment_id: str, name: str, cached: _Tree,
                 branches: Mapping[str, Branch]) -> dict[str, dict[str, Any]]:
        """Node id -> its metrics (:func:`~tb_retune.reader.tree.node_metrics`), for
        every node of ``cached``; the metric points are read only for the
        branches whose scalars changed."""
        key = {b: br.scalars_key for b, br in branches.items()}
        with self._lock:
            if cached.metrics is not None and cached.metrics_key == key:
                return cached.metrics
        prefix = run_prefix(name)
        series = self._reader.series(ctx, experiment_id, {prefix + b: br for b, br in branches.items()})
        steps = {run: [step for step, _ in points] for run, points in series.items()}
        out: dict[str, dict[str, Any]] = {}
        for n in cached.tree["nodes"]:
            run = prefix + n["branch"]
            out[n["id"]] = node_metrics(series.get(run, []), n["start_step"], n["end_step"], steps=steps.get(run))
        with self._lock:
            cached.metrics, cached.metrics_key, cached.metrics_reply, cached.nodes_with_metrics = out, key, None, None
        return out

    def _volatile(self, name: str, status: dict[str, Any] | None) -> dict[str, Any]:
        """The parts of a tree that change with every heartbeat."""
        return dict(live_parts(status, self._clock()), writable=self._writable(name))

    def tree(self, ctx: Any, name: str, experiment_id: str = "") -> dict[str, Any]:
        """The whole tree, every node with its ``metrics`` (the command line's
        view; the ``tree`` route sends :meth:`tree_json`); raises UnknownExperimentError."""
        cached, branches, status = self._built(ctx, experiment_id, name)
        metrics = self._metrics(ctx, experiment_id, check_name(name), cached, branches)
        nodes = cached.nodes_with_metrics
        if nodes is None:
            nodes = [dict(n, metrics=metrics.get(n["id"], {})) for n in cached.tree["nodes"]]
            with self._lock:
                if cached.metrics is metrics:
                    cached.nodes_with_metrics = nodes
        tree = dict(cached.tree, nodes=nodes)
        tree.update(self._volatile(name, status))
        return tree

    def tree_json(self, ctx: Any, name: str, experiment_id: str = "", *, gzip: bool = False) -> bytes:
        """The ``tree`` route's reply: the tree without what the tree view does not
        draw (:func:`~tb_retune.reader.cache.reply_tree`; no metric point is
        read for it), as compact JSON, with ``tree_key``; with ``gzip``,
        gzip-compressed. The nodes' part is serialised and compressed once per
        change of the tree, the rest at each call."""
        cached, _, status = self._built(ctx, experiment_id, name)
        reply = cached.reply
        if reply is None:
            reply = cached.reply = Reply(dumps_json(reply_tree(cached.tree), compact=True))
        live = self._volatile(name, status)
        if "status" in live:
            live["status"] = reply_status(live["status"])
        live["tree_key"] = reply.key
        tail = dumps_json(live, compact=True)
        return reply.gzip_body(tail) if gzip else reply.body(tail)

    def metrics_json(self, ctx: Any, name: str, experiment_id: str = "", *, gzip: bool = False) -> bytes:
        """The ``metrics`` route's reply: ``{"experiment", "tree_key", "metrics": {node id: metrics}}``
        for the tree that :meth:`tree_json` sends now; with ``gzip``, compressed.
        Serialised and compressed once per change of the tree or of its metrics."""
        cached, branches, _ = self._built(ctx, experiment_id, name)
        metrics = self._metrics(ctx, experiment_id, check_name(name), cached, branches)
        reply = cached.metrics_reply
        if reply is None:
            tree_reply = cached.reply
            if tree_reply is None:
                tree_reply = cached.reply = Reply(dumps_json(reply_tree(cached.tree), compact=True))
            reply = cached.metrics_reply = Reply(dumps_json(
                {"experiment": cached.tree["experiment"], "tree_key": tree_reply.key, "metrics": metrics},
                compact=True))
        return reply.gzip_body(b"{}") if gzip else reply.body(b"{}")

    def node(self, ctx: Any, name: str, node_id: str, experiment_id: str = "") -> dict[str, Any]:
        """One node of the tree with its ``metrics``, ``config`` and loss ``series``."""
        cached, branches, _ = self._built(ctx, experiment_id, name)
        found = next((n for n in cached.tree["nodes"] if n["id"] == node_id), None)
        if found is None:
            raise UnknownNodeError(f"experiment {name!r} has no node {node_id!r}")
        branch = branches.get(found["branch"])
        record = None
        points: list[tuple[int, dict[str, float]]] = []
        if branch is not None:
            record = next((r for r in reversed(branch.records) if str(r["id"]) == node_id), None)
            points = self._reader.series(ctx, experiment_id, {found["run"]: branch}).get(found["run"], [])
        series: dict[str, list[list[float]]] = {tag: [] for tag in SERIES_TAGS}
        for step, values in points:
            if step > found["end_step"]:
                break
            for tag in SERIES_TAGS:
                if tag in values:
                    series[tag].append([step, values[tag]])
        out = dict(found)
        out["metrics"] = node_metrics(points, found["start_step"], found["end_step"])
        out["config"] = (record or {}).get("config")
        out["series"] = series
        return out

    def status(self, ctx: Any, name: str, experiment_id: str = "",
               revisions: Iterable[str] = ()) -> dict[str, Any]:
        """The ``status`` route's answer: the status file, liveness and control file.

        ``control`` is the trainer's record of the last revision it took
        (see :mod:`tb_retune.experiment.requests`), ``control_file`` the
        control file's content; ``requests`` gives the state of each of
        ``revisions`` by the one rule, :func:`~tb_retune.experiment.requests.request_state`.
        """
        name = check_name(name)
        status, status_error = (
            control_file.read_status_checked(experiment_folder(self.logdir, name)) if self.logdir else (None, None)
        )
        if status is None and status_error is None and name not in self.index(ctx, experiment_id):
            raise UnknownExperimentError(f"experiment {name!r}: not found in the logdir")
        control, control_error = read_control(self.logdir, name) if self.logdir else (None, None)
        now = self._clock()
        out = dict(status or {})
        out["experiment"] = name
        out["trainer"] = trainer_liveness(status, now)
        out["control"] = requests.control_record(status)
        out["control_file"] = control
        out["control_error"] = control_error
        out["status_error"] = status_error
        out["writable"] = self._writable(name)
        revisions = list(revisions)
        if revisions:
            current = (control or {}).get("revision")
            later = [current["id"]] if isinstance(current, dict) and isinstance(current.get("id"), str) else []
            out["requests"] = {
                r: requests.request_state(status, r, now, later=[x for x in later if x != r]) for r in revisions
            }
        return out


# -- a logdir without a server ------------------------------------------------


class Reader:
    """Reads a logdir's experiments without a TensorBoard server (for the CLI).

    Made by :func:`open_logdir`; loads the event files once at creation and
    again on :meth:`reload`.
    """

    def __init__(self, logdir: str, multiplexer: Any, store: ExperimentStore) -> None:
        self.logdir = logdir
        self._multiplexer = multiplexer
        self.store = store
        from tensorboard import context

        self._ctx = context.RequestContext()

    def reload(self) -> None:
        """Reads what was written to the event files since the last load."""
        self._multiplexer.AddRunsFromDirectory(self.logdir)
        self._multiplexer.Reload()

    def experiments(self) -> list[dict[str, Any]]:
        return self.store.experiments(self._ctx)

    def tree(self, name: str) -> dict[str, Any]:
        return self.store.tree(self._ctx, name)

    def node(self, name: str, node_id: str) -> dict[str, Any]:
        return self.store.node(self._ctx, name, node_id)

    def status(self, name: str) -> dict[str, Any]:
        return self.store.status(self._ctx, name)


def load_multiplexer(logdir: str) -> tuple[Any, Any]:
    """``(multiplexer, data provider)`` over ``logdir``, not yet loaded.

    Every node tag and up to 1000 points of each metric are kept.
    """
    from tensorboard.backend.event_processing import data_ingester, data_provider
    from tensorboard.backend.event_processing import plugin_event_multiplexer as pem

    guidance = dict(data_ingester.DEFAULT_TENSOR_SIZE_GUIDANCE)
    guidance[PLUGIN_NAME] = NODE_DOWNSAMPLE
    guidance[SCALARS_PLUGIN] = METRIC_DOWNSAMPLE
    multiplexer = pem.EventMultiplexer(
        size_guidance=data_ingester.DEFAULT_SIZE_GUIDANCE,
        tensor_size_guidance=guidance,
        max_reload_threads=1,
    )
    return multiplexer, data_provider.MultiplexerDataProvider(multiplexer, logdir)


def open_logdir(logdir: str) -> Reader:
    """A :class:`Reader` over ``logdir``, loaded once with TensorBoard's own loaders."""
    multiplexer, provider = load_multiplexer(logdir)
    reader = Reader(logdir, multiplexer, ExperimentStore(provider, logdir))
    reader.reload()
    return reader
