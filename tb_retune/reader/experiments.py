"""The experiments of a logdir, read through TensorBoard's data provider.

The Retune tab's routes and the command line read experiments the same way:
the tree nodes are ``retune`` tensor summaries and the metrics are scalars,
both served by a TensorBoard data provider (so remote logdirs work, and the
Rust data server as well as the Python multiplexer); only the small status and
control files are read directly, next to the event files.

:class:`ExperimentStore` holds a per-experiment cache keyed by what the data
provider says changed (the last step and wall time of each time series), and
lists again only the runs that can have changed (:mod:`tb_retune.reader.cache`),
so a refresh of a large, idle tree lists one branch and a few others. Use
:func:`open_logdir` to read a logdir without a TensorBoard server.

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

from tb_retune.experiment import control_file, metadata, requests
from tb_retune.experiment.control import STATUS_FILENAME
from tb_retune.experiment.metadata import (
    HYPERPARAMETER_TAG_PREFIX,
    NODE_TAG_PREFIX,
    NOTE_TAG_PREFIX,
    PLUGIN_NAME,
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
    split_run,
)
from tb_retune.reader.tree import build_tree, live_parts, trainer_liveness

#: Plugin name of TensorBoard's scalar summaries (our metrics and hyperparameters).
SCALARS_PLUGIN = "scalars"
#: Samples read per node tag: a node is written once (a resumed trainer may
#: write it again); the last sample wins.
NODE_DOWNSAMPLE = 100
#: Points read per metric and branch.
METRIC_DOWNSAMPLE = 1000
#: Metrics that the ``node`` route returns as series.
SERIES_TAGS = ("loss", "val_loss")
#: Largest status file that is read at all.
MAX_STATUS_BYTES = control_file.MAX_STATUS_BYTES


# -- reading through the data provider --------------------------------------


def _series_key(index: Mapping[str, Any]) -> frozenset[tuple[str, Any, Any]]:
    return frozenset((tag, ts.max_step, ts.max_wall_time) for tag, ts in index.items())


def decode_record(datum: Any) -> dict[str, Any] | None:
    """The node record of a ``TensorDatum`` read from the data provider, or
    None for one that is not a node record (or is from a newer tb-retune)."""
    return decode_record_checked(datum)[0]


def decode_record_checked(
    datum: Any, decode: Callable[[Any], dict[str, Any]] = metadata.decode_node_bytes
) -> tuple[dict[str, Any] | None, str | None]:
    """``(record, None)``, or ``(None, why)`` for a tensor that holds no usable
    record (a node record; a note record with ``decode=metadata.decode_note_bytes``)."""
    try:
        value = datum.numpy
        raw = value.item() if hasattr(value, "item") else value
        return decode(raw), None
    except (AttributeError, ValueError, TypeError, RecursionError) as e:
        return None, str(e)[:200] or type(e).__name__


def _latest_records(
    data_by_tag: Mapping[str, Any], tags: Iterable[str], run: str, what: str,
    decode: Callable[[Any], dict[str, Any]],
) -> tuple[list[dict[str, Any]], list[str]]:
    """The last record of each tag, and a warning for each that is not one."""
    records, warnings = [], []
    for tag in sorted(tags):
        data = data_by_tag.get(tag) or []
        if data:
            record, problem = decode_record_checked(data[-1], decode)
            if record is not None:
                records.append(record)
            else:
                warnings.append(f"run {run!r}, tag {tag[:100]!r}: skipped, not a {what} record: {problem}")
    return records, warnings


def latest_notes(records: Iterable[Mapping[str, Any]]) -> dict[str, dict[str, Any]]:
    """Node id -> its latest note record (greatest ``time``; ``""`` ones included)."""
    out: dict[str, dict[str, Any]] = {}
    for r in records:
        node = str(r["node"])
        if node not in out or float(r["time"]) >= float(out[node]["time"]):
            out[node] = dict(r)
    return out


@dataclasses.dataclass
class _Branch:
    """What the event files of one branch hold, with the key it was read at."""

    key: tuple[Any, ...]
    records: list[dict[str, Any]]
    last_step: int | None
    series: list[tuple[int, dict[str, float]]]
    warnings: list[str] = dataclasses.field(default_factory=list)
    #: The note records in this run (``retune/note/<node id>``), the latest per tag.
    notes: list[dict[str, Any]] = dataclasses.field(default_factory=list)


@dataclasses.dataclass
class _Tree:
    key: dict[str, Any]
    status_key: dict[str, Any]
    tree: dict[str, Any]
    reply: Reply | None = None


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

    Thread-safe: the plugin serves requests from several threads. The cache
    keeps, per branch, what was read at a given state of its time series, and
    per experiment the last tree built.

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
        self._provider = data_provider
        self.logdir = logdir or ""
        self._clock = clock
        self._lock = threading.Lock()
        self._branches: dict[tuple[str, str], _Branch] = {}
        self._branch_runs: dict[str, set[str]] = {}
        self._trees: dict[tuple[str, str], _Tree] = {}
        self._listings = listing or ListingPlan()
        from tensorboard.backend.event_processing.data_provider import MultiplexerDataProvider

        self._in_process = isinstance(data_provider, MultiplexerDataProvider)
        self._statuses = StatusMemo()

    def _status_file(self, name: str) -> dict[str, Any] | None:
        """The experiment's status file; None without a local logdir."""
        return read_status(self.logdir, name) if self.logdir else None

    def _writable(self, name: str) -> bool:
        return bool(self.logdir) and folder_writable(self.logdir, name)

    # -- the experiments ------------------------------------------------

    def index(self, ctx: Any, experiment_id: str = "") -> dict[str, list[str]]:
        """``{experiment: [branch, ...]}`` for every run with ``retune`` tree nodes.

        A run that once held a node always does, so only runs not yet known
        as branches are asked about (listing every node of a large logdir at
        each refresh would cost more than the tree itself).
        """
        return self._index(ctx, experiment_id)[0]

    def _index(self, ctx: Any, experiment_id: str) -> tuple[dict[str, list[str]], dict[str, dict[str, Any]]]:
        """:meth:`index`, and the node listing of the branches it found just now."""
        runs = {r.run_name for r in self._provider.list_runs(ctx, experiment_id=experiment_id)}
        with self._lock:
            known = self._branch_runs.get(experiment_id, set()) & runs
            self._branch_runs[experiment_id] = known
            for key in [k for k in self._branches if k[0] == experiment_id and k[1] not in runs]:
                del self._branches[key]  # a run that is gone (folder deleted)
            unknown = [r for r in runs if r not in known and split_run(r) is not None]
        self._listings.forget(experiment_id, runs)
        listing: dict[str, dict[str, Any]] = {}
        if unknown:
            from tensorboard.data import provider

            mapping = self._provider.list_tensors(
                ctx, experiment_id=experiment_id, plugin_name=PLUGIN_NAME,
                run_tag_filter=provider.RunTagFilter(runs=unknown),
            )
            listing = {
                run: tags for run, tags in mapping.items() if any(t.startswith(NODE_TAG_PREFIX) for t in tags)
            }
            with self._lock:
                known = self._branch_runs[experiment_id] = known | set(listing)
        out: dict[str, list[str]] = {}
        for run in known:
            split = split_run(run)
            if split is not None:
                out.setdefault(split[0], []).append(split[1])
        for branches in out.values():
            branches.sort()
        return out, listing

    def experiments(self, ctx: Any, experiment_id: str = "") -> list[dict[str, Any]]:
        """The ``experiments`` route's list, sorted by name."""
        now = self._clock()
        result = []
        for name, branches in sorted(self.index(ctx, experiment_id).items()):
            status = self._status_file(name)
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

    def _read_branches(
        self, ctx: Any, experiment_id: str, name: str, status: dict[str, Any] | None = None
    ) -> dict[str, _Branch]:
        """The branches of ``name`` (branch -> what it holds); raises if unknown.

        Only the runs that can have changed are listed (see
        :class:`~tb_retune.reader.cache.ListingPlan`; ``status`` names the
        trainer's branch), and only those whose listing changed are read.
        """
        candidates, listed_now, node_index, scalar_index = self._list_changed(ctx, experiment_id, name, status)
        note_index = {
            run: {t: ts for t, ts in tags.items() if t.startswith(NOTE_TAG_PREFIX)}
            for run, tags in node_index.items()
        }
        node_index = {
            run: {t: ts for t, ts in tags.items() if t.startswith(NODE_TAG_PREFIX)}
            for run, tags in node_index.items()
        }
        node_index = {run: tags for run, tags in node_index.items() if tags}
        with self._lock:
            cached = {run: self._branches.get((experiment_id, run)) for run in candidates}
        unlisted = {run for run in candidates if run not in listed_now and cached[run] is not None}
        if not node_index and not unlisted:
            raise UnknownExperimentError(f"experiment {name!r}: no retune tree nodes found in the logdir")
        from tensorboard.data import provider

        keys = {
            run: (_series_key(tags), _series_key(scalar_index.get(run, {})), _series_key(note_index.get(run, {})))
            for run, tags in node_index.items()
        }
        stale = [run for run in node_index if (c := cached[run]) is None or c.key != keys[run]]
        fresh: dict[str, _Branch] = {}
        if stale:
            tensors = self._provider.read_tensors(
                ctx, experiment_id=experiment_id, plugin_name=PLUGIN_NAME, downsample=NODE_DOWNSAMPLE,
                run_tag_filter=provider.RunTagFilter(
                    runs=stale,
                    tags={t for run in stale for t in (*node_index[run], *note_index.get(run, {}))},
                ),
            )
            metric_tags = {
                t for run in stale for t in scalar_index.get(run, {})
                if not t.startswith(HYPERPARAMETER_TAG_PREFIX)
            }
            scalars = (
                self._provider.read_scalars(
                    ctx, experiment_id=experiment_id, plugin_name=SCALARS_PLUGIN,
                    downsample=METRIC_DOWNSAMPLE,
                    run_tag_filter=provider.RunTagFilter(runs=stale, tags=metric_tags),
                )
                if metric_tags
                else {}
            )
            for run in stale:
                run_data = tensors.get(run, {})
                records, warnings = _latest_records(run_data, node_index[run], run, "node", metadata.decode_node_bytes)
                notes, note_warnings = _latest_records(
                    run_data, note_index.get(run, {}), run, "note", metadata.decode_note_bytes)
                warnings += note_warnings
                by_step: dict[int, dict[str, float]] = {}
                for tag, points in scalars.get(run, {}).items():
                    for p in points:
                        by_step.setdefault(int(p.step), {})[tag] = float(p.value)
                steps = [ts.max_step for ts in scalar_index.get(run, {}).values() if ts.max_step is not None]
                steps += [ts.max_step for ts in node_index[run].values() if ts.max_step is not None]
                fresh[run] = _Branch(
                    key=keys[run],
                    records=records,
                    last_step=max(steps) if steps else None,
                    series=sorted(by_step.items()),
                    warnings=warnings,
                    notes=notes,
                )
            with self._lock:
                for run, branch in fresh.items():
                    self._branches[(experiment_id, run)] = branch
        self._listings.listed(experiment_id, listed_now, changed=stale, now=self._clock())
        out: dict[str, _Branch] = {}
        for run in candidates:
            if run not in node_index and run not in unlisted:
                continue  # listed just now, and holds no node
            found = fresh.get(run) or cached[run]
            split = split_run(run)
            if found is not None and split is not None:
                out[split[1]] = found
        return out

    def _list_changed(
        self, ctx: Any, experiment_id: str, name: str, status: dict[str, Any] | None
    ) -> tuple[list[str], set[str], dict[str, Any], dict[str, Any]]:
        """``(candidates, listed, node index, scalar index)``: the runs of ``name``,
        the runs listed now (:class:`~tb_retune.reader.cache.ListingPlan`) and
        their listings of node tensors and scalars; raises if ``name`` is unknown.

        The runs planned from the last request's branches are listed while
        ``list_runs`` looks for new ones, on two threads: over the Rust data
        server each call waits about 40 ms on its connection whatever its size,
        so three calls one after the other cost three times that (with the
        in-process Python multiplexer they run one after the other). Runs
        that are new (or a first request) are listed after.
        """
        from concurrent.futures import ThreadPoolExecutor

        from tensorboard.data import provider

        live = status.get("branch") if isinstance(status, dict) else None
        live_run = run_prefix(name) + live if isinstance(live, str) and live else None
        everything = status is None
        now = self._clock()
        with self._lock:
            before = [r for r in self._branch_runs.get(experiment_id, ()) if (split_run(r) or ("",))[0] == name]
        early = self._listings.plan(experiment_id, before, live_run=live_run, now=now,
                                    everything=everything) if before else []

        def lister(method: Any, plugin: str, runs: list[str]) -> Any:
            return method(ctx, experiment_id=experiment_id, plugin_name=plugin,
                          run_tag_filter=provider.RunTagFilter(runs=runs))

        node_index: dict[str, Any] = {}
        scalar_index: dict[str, Any] = {}
        if early and not self._in_process:
            with ThreadPoolExecutor(max_workers=2, thread_name_prefix="tb-retune-list") as pool:
                tensors = pool.submit(lister, self._provider.list_tensors, PLUGIN_NAME, early)
                scalars = pool.submit(lister, self._provider.list_scalars, SCALARS_PLUGIN, early)
                experiments, just_listed = self._index(ctx, experiment_id)
                node_index, scalar_index = dict(tensors.result()), dict(scalars.result())
        else:  # the Python multiplexer: no waiting to overlap, only the GIL to share
            experiments, just_listed = self._index(ctx, experiment_id)
            if early:
                node_index = dict(lister(self._provider.list_tensors, PLUGIN_NAME, early))
                scalar_index = dict(lister(self._provider.list_scalars, SCALARS_PLUGIN, early))
        candidates = [run_prefix(name) + b for b in experiments.get(name, ())]
        if not candidates:
            raise UnknownExperimentError(
                f"experiment {name!r}: not found in the logdir (no run {run_prefix(name)}<branch> "
                "with retune tree nodes)"
            )
        listed = set(early) & set(candidates)
        seen_before = set(before)
        late = (
            [run for run in candidates if run not in seen_before] if before
            else self._listings.plan(experiment_id, candidates, live_run=live_run, now=now, everything=everything)
        )
        if late:
            node_index.update({run: just_listed[run] for run in late if run in just_listed})
            rest = [run for run in late if run not in just_listed]
            if rest:
                node_index.update(lister(self._provider.list_tensors, PLUGIN_NAME, rest))
            scalar_index.update(lister(self._provider.list_scalars, SCALARS_PLUGIN, late))
            listed |= set(late)
        node_index = {run: tags for run, tags in node_index.items() if run in listed}
        return candidates, listed, node_index, scalar_index

    def _built(
        self, ctx: Any, experiment_id: str, name: str
    ) -> tuple[_Tree, dict[str, _Branch], dict[str, Any] | None]:
        """The (cached) tree of ``name``, its branches and its status file."""
        name = check_name(name)
        status = self._status_memo(name)
        branches = self._read_branches(ctx, experiment_id, name, status)
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
                metrics={b: br.series for b, br in branches.items()},
                status=status,
                run_prefix=run_prefix(name),
                warnings=[w for b in branches.values() for w in b.warnings],
                note_records=latest_notes(n for b in branches.values() for n in b.notes),
            )
            cached = _Tree(key=key, status_key=status_key, tree=tree)
            with self._lock:
                self._trees[(experiment_id, name)] = cached
        return cached, branches, status

    def _status_memo(self, name: str) -> dict[str, Any] | None:
        """:meth:`_status_file`, decoded again only when the file changed."""
        path = None
        if self.logdir and is_local(self.logdir):
            path = os.path.join(experiment_folder(self.logdir, name), STATUS_FILENAME)
        return self._statuses.read(path, lambda: self._status_file(name))

    def _volatile(self, name: str, status: dict[str, Any] | None) -> dict[str, Any]:
        """The parts of a tree that change with every heartbeat."""
        return dict(live_parts(status, self._clock()), writable=self._writable(name))

    def tree(self, ctx: Any, name: str, experiment_id: str = "") -> dict[str, Any]:
        """The ``tree`` route's answer; raises UnknownExperimentError."""
        cached, _, status = self._built(ctx, experiment_id, name)
        tree = dict(cached.tree)
        tree.update(self._volatile(name, status))
        return tree

    def tree_json(self, ctx: Any, name: str, experiment_id: str = "", *, gzip: bool = False) -> bytes:
        """The ``tree`` route's reply: :meth:`tree` without what the tab does not
        read (:func:`~tb_retune.reader.cache.reply_tree`), as compact JSON; with
        ``gzip``, gzip-compressed. The nodes' part is serialised and compressed
        once per change of the tree, the rest at each call."""
        cached, _, status = self._built(ctx, experiment_id, name)
        reply = cached.reply
        if reply is None:
            reply = cached.reply = Reply(dumps_json(reply_tree(cached.tree), compact=True))
        live = self._volatile(name, status)
        if "status" in live:
            live["status"] = reply_status(live["status"])
        tail = dumps_json(live, compact=True)
        return reply.gzip_body(tail) if gzip else reply.body(tail)

    def node(self, ctx: Any, name: str, node_id: str, experiment_id: str = "") -> dict[str, Any]:
        """One node of the tree with its ``config`` and loss ``series``."""
        cached, branches, _ = self._built(ctx, experiment_id, name)
        found = next((n for n in cached.tree["nodes"] if n["id"] == node_id), None)
        if found is None:
            raise UnknownNodeError(f"experiment {name!r} has no node {node_id!r}")
        branch = branches.get(found["branch"])
        record = None
        if branch is not None:
            record = next((r for r in reversed(branch.records) if str(r["id"]) == node_id), None)
        series: dict[str, list[list[float]]] = {tag: [] for tag in SERIES_TAGS}
        if branch is not None:
            for step, values in branch.series:
                if step > found["end_step"]:
                    break
                for tag in SERIES_TAGS:
                    if tag in values:
                        series[tag].append([step, values[tag]])
        out = dict(found)
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
