"""What the event files of each branch hold, read through TensorBoard's data provider.

A branch is a run ``<experiment>/<branch>``: its node records and note
records are ``retune`` tensor summaries, its metrics scalars. The
:class:`BranchReader` lists again only the runs that can have changed (a
:class:`~tb_retune.reader.cache.ListingPlan`), reads again only those whose
listing changed, and reads the records and the metric points apart: the tree
needs the records and each branch's last step (both from the listing and the
tensors), the metrics (the ``metrics`` and ``node`` routes, the command line)
need every point, and at 10,000 nodes converting those 100,000 points is most
of what a first request costs.
"""

from __future__ import annotations

import dataclasses
import threading
import time
from collections.abc import Callable, Iterable, Mapping
from typing import Any

from tb_retune.experiment import metadata
from tb_retune.experiment.metadata import (
    HYPERPARAMETER_TAG_PREFIX,
    NODE_TAG_PREFIX,
    NOTE_TAG_PREFIX,
    PLUGIN_NAME,
)
from tb_retune.reader.cache import ListingPlan
from tb_retune.reader.folders import UnknownExperimentError, run_prefix, split_run

#: Plugin name of TensorBoard's scalar summaries (our metrics and hyperparameters).
SCALARS_PLUGIN = "scalars"
#: Samples read per node tag: a node is written once (a resumed trainer may
#: write it again); the last sample wins.
NODE_DOWNSAMPLE = 100
#: Points read per metric and branch.
METRIC_DOWNSAMPLE = 1000

#: A branch's metric points: ``(step, {tag: value})`` sorted by step.
Series = list[tuple[int, dict[str, float]]]


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


@dataclasses.dataclass(frozen=True)
class Branch:
    """What the event files of one branch hold, with the listing it was read at.

    ``records_key`` is the listing of its node and note tensors, ``scalars_key``
    the listing of its scalars (the metric points are read apart, by
    :meth:`BranchReader.series`); ``metric_tags`` are its scalar tags that are
    not hyperparameters.
    """

    records_key: tuple[Any, ...]
    scalars_key: frozenset[tuple[str, Any, Any]]
    records: list[dict[str, Any]]
    last_step: int | None
    metric_tags: tuple[str, ...] = ()
    warnings: list[str] = dataclasses.field(default_factory=list)
    #: The note records in this run (``retune/note/<node id>``), the latest per tag.
    notes: list[dict[str, Any]] = dataclasses.field(default_factory=list)

    @property
    def key(self) -> tuple[Any, ...]:
        """What the tree drawn from this branch depends on: its records and its last step."""
        return (self.records_key, self.last_step)


class BranchReader:
    """Reads the branches of a logdir's experiments; caches them per run.

    Thread-safe: the plugin serves requests from several threads.

    Args:
        data_provider: A ``tensorboard.data.provider.DataProvider``.
        clock: Returns the current time (for the listing plan).
        listing: Which runs a request lists again; by default a
            :class:`~tb_retune.reader.cache.ListingPlan` with its defaults.
    """

    def __init__(self, data_provider: Any, *, clock: Callable[[], float] = time.time,
                 listing: ListingPlan | None = None) -> None:
        self._provider = data_provider
        self._clock = clock
        self._listings = listing or ListingPlan()
        self._lock = threading.Lock()
        self._branches: dict[tuple[str, str], Branch] = {}
        self._series: dict[tuple[str, str], tuple[frozenset[tuple[str, Any, Any]], Series]] = {}
        self._branch_runs: dict[str, set[str]] = {}
        #: Run -> ``(experiment, branch)`` (or None), for the runs of the last ``list_runs``.
        self._splits: dict[str, tuple[str, str] | None] = {}
        from tensorboard.backend.event_processing.data_provider import MultiplexerDataProvider

        self._in_process = isinstance(data_provider, MultiplexerDataProvider)

    # -- which runs are branches ------------------------------------------------

    def index(self, ctx: Any, experiment_id: str) -> tuple[dict[str, list[str]], dict[str, dict[str, Any]]]:
        """``({experiment: [branch, ...]}, node listing of the branches found just now)``.

        A run that once held a node always does, so only runs not yet known
        as branches are asked about (listing every node of a large logdir at
        each refresh would cost more than the tree itself).
        """
        runs = {r.run_name for r in self._provider.list_runs(ctx, experiment_id=experiment_id)}
        with self._lock:
            if self._splits.keys() != runs:  # a run came or went: split the new ones
                old = self._splits
                self._splits = {r: old[r] if r in old else split_run(r) for r in runs}
            splits = self._splits
            known = self._branch_runs.get(experiment_id, set()) & runs
            self._branch_runs[experiment_id] = known
            for cache in (self._branches, self._series):
                for key in [k for k in cache if k[0] == experiment_id and k[1] not in runs]:
                    del cache[key]  # a run that is gone (folder deleted)
            unknown = [r for r in runs if r not in known and splits[r] is not None]
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
            split = splits[run]
            if split is not None:
                out.setdefault(split[0], []).append(split[1])
        for branches in out.values():
            branches.sort()
        return out, listing

    # -- the records --------------------------------------------------------------

    def read(self, ctx: Any, experiment_id: str, name: str, status: dict[str, Any] | None) -> dict[str, Branch]:
        """The branches of experiment ``name`` (branch -> what it holds); raises if unknown.

        Only the runs that can have changed are listed (``status`` names the
        trainer's branch; None lists every run), and only those whose node or
        note listing changed are read again. No metric point is read here.
        """
        candidates, listed_now, tensor_index, scalar_index = self._list_changed(ctx, experiment_id, name, status)
        note_index = {
            run: {t: ts for t, ts in tags.items() if t.startswith(NOTE_TAG_PREFIX)}
            for run, tags in tensor_index.items()
        }
        node_index = {
            run: {t: ts for t, ts in tags.items() if t.startswith(NODE_TAG_PREFIX)}
            for run, tags in tensor_index.items()
        }
        node_index = {run: tags for run, tags in node_index.items() if tags}
        with self._lock:
            cached = {run: self._branches.get((experiment_id, run)) for run in candidates}
        unlisted = {run for run in candidates if run not in listed_now and cached[run] is not None}
        if not node_index and not unlisted:
            raise UnknownExperimentError(f"experiment {name!r}: no retune tree nodes found in the logdir")

        fresh: dict[str, Branch] = {}
        changed: list[str] = []
        stale: list[str] = []
        for run, tags in node_index.items():
            records_key = (_series_key(tags), _series_key(note_index.get(run, {})))
            scalars = scalar_index.get(run, {})
            scalars_key = _series_key(scalars)
            steps = [ts.max_step for ts in (*scalars.values(), *tags.values()) if ts.max_step is not None]
            last_step = max(steps) if steps else None
            metric_tags = tuple(sorted(t for t in scalars if not t.startswith(HYPERPARAMETER_TAG_PREFIX)))
            before = cached[run]
            if before is not None and before.records_key == records_key:
                if before.scalars_key != scalars_key or before.last_step != last_step:
                    fresh[run] = dataclasses.replace(before, scalars_key=scalars_key, last_step=last_step,
                                                     metric_tags=metric_tags)
                    changed.append(run)
                continue
            stale.append(run)
            changed.append(run)
            fresh[run] = Branch(records_key=records_key, scalars_key=scalars_key, records=[],
                                last_step=last_step, metric_tags=metric_tags)
        if stale:
            from tensorboard.data import provider

            tensors = self._provider.read_tensors(
                ctx, experiment_id=experiment_id, plugin_name=PLUGIN_NAME, downsample=NODE_DOWNSAMPLE,
                run_tag_filter=provider.RunTagFilter(
                    runs=stale,
                    tags={t for run in stale for t in (*node_index[run], *note_index.get(run, {}))},
                ),
            )
            for run in stale:
                run_data = tensors.get(run, {})
                records, warnings = _latest_records(run_data, node_index[run], run, "node", metadata.decode_node_bytes)
                notes, note_warnings = _latest_records(
                    run_data, note_index.get(run, {}), run, "note", metadata.decode_note_bytes)
                fresh[run] = dataclasses.replace(fresh[run], records=records, warnings=warnings + note_warnings,
                                                 notes=notes)
        if fresh:
            with self._lock:
                for run, branch in fresh.items():
                    self._branches[(experiment_id, run)] = branch
        self._listings.listed(experiment_id, listed_now, changed=changed, now=self._clock())
        out: dict[str, Branch] = {}
        for run in candidates:
            if run not in node_index and run not in unlisted:
                continue  # listed just now, and holds no node
            found = fresh.get(run) or cached[run]
            split = self._splits.get(run) or split_run(run)
            if found is not None and split is not None:
                out[split[1]] = found
        return out

    def _list_changed(
        self, ctx: Any, experiment_id: str, name: str, status: dict[str, Any] | None
    ) -> tuple[list[str], set[str], dict[str, Any], dict[str, Any]]:
        """``(candidates, listed, tensor index, scalar index)``: the runs of ``name``,
        the runs listed now (:class:`~tb_retune.reader.cache.ListingPlan`) and
        their listings of ``retune`` tensors and scalars; raises if ``name`` is unknown.

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
            splits = self._splits
            before = [r for r in self._branch_runs.get(experiment_id, ())
                      if (splits.get(r) or split_run(r) or ("",))[0] == name]
        early = self._listings.plan(experiment_id, before, live_run=live_run, now=now,
                                    everything=everything) if before else []

        def lister(method: Any, plugin: str, runs: list[str]) -> Any:
            return method(ctx, experiment_id=experiment_id, plugin_name=plugin,
                          run_tag_filter=provider.RunTagFilter(runs=runs))

        tensor_index: dict[str, Any] = {}
        scalar_index: dict[str, Any] = {}
        if early and not self._in_process:
            with ThreadPoolExecutor(max_workers=2, thread_name_prefix="tb-retune-list") as pool:
                tensors = pool.submit(lister, self._provider.list_tensors, PLUGIN_NAME, early)
                scalars = pool.submit(lister, self._provider.list_scalars, SCALARS_PLUGIN, early)
                experiments, just_listed = self.index(ctx, experiment_id)
                tensor_index, scalar_index = dict(tensors.result()), dict(scalars.result())
        else:  # the Python multiplexer: no waiting to overlap, only the GIL to share
            experiments, just_listed = self.index(ctx, experiment_id)
            if early:
                tensor_index = dict(lister(self._provider.list_tensors, PLUGIN_NAME, early))
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
            tensor_index.update({run: just_listed[run] for run in late if run in just_listed})
            rest = [run for run in late if run not in just_listed]
            if rest:
                tensor_index.update(lister(self._provider.list_tensors, PLUGIN_NAME, rest))
            scalar_index.update(lister(self._provider.list_scalars, SCALARS_PLUGIN, late))
            listed |= set(late)
        tensor_index = {run: tags for run, tags in tensor_index.items() if run in listed}
        return candidates, listed, tensor_index, scalar_index

    # -- the metric points -----------------------------------------------------------

    def series(self, ctx: Any, experiment_id: str, branches: Mapping[str, Branch]) -> dict[str, Series]:
        """Run -> its metric points (hyperparameters left out), for the runs of
        ``branches`` (run -> branch, as :meth:`read` gave it); read through the
        data provider only for a run whose scalar listing changed since."""
        with self._lock:
            have = {run: self._series.get((experiment_id, run)) for run in branches}
        out = {run: found[1] for run, found in have.items() if found is not None
               and found[0] == branches[run].scalars_key}
        stale = [run for run in branches if run not in out]
        tags = {t for run in stale for t in branches[run].metric_tags}
        if stale and tags:
            from tensorboard.data import provider

            scalars = self._provider.read_scalars(
                ctx, experiment_id=experiment_id, plugin_name=SCALARS_PLUGIN, downsample=METRIC_DOWNSAMPLE,
                run_tag_filter=provider.RunTagFilter(runs=stale, tags=tags),
            )
        else:
            scalars = {}
        fresh: dict[str, Series] = {}
        for run in stale:
            by_step: dict[int, dict[str, float]] = {}
            wanted = set(branches[run].metric_tags)
            for tag, points in scalars.get(run, {}).items():
                if tag not in wanted:
                    continue
                for p in points:
                    by_step.setdefault(int(p.step), {})[tag] = float(p.value)
            fresh[run] = sorted(by_step.items())
        if fresh:
            with self._lock:
                for run, series in fresh.items():
                    self._series[(experiment_id, run)] = (branches[run].scalars_key, series)
        out.update(fresh)
        return out
