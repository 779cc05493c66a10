"""The experiment tree as a model: built from node records, pure (no I/O).

The plugin, the command line and the exports all build the tree with
:func:`build_tree`, from the node records found in the event files, the last
step and latest metrics of each branch, and the trainer's status file.
"""

from __future__ import annotations

import bisect
import math
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from tb_retune.experiment.control import SHORT_NAMES
from tb_retune.experiment.metadata import HYPERPARAMETER_TAG_PREFIX, record_problem

#: Seconds without a heartbeat after which a trainer counts as not responding.
HEARTBEAT_TIMEOUT_S = 15.0
#: Most warnings in a tree reply.
MAX_WARNINGS = 20


def short_number(value: Any) -> str:
    """Compact number for labels: 0.001 -> ``1e-3``, 0.0003 -> ``3e-4``."""
    if isinstance(value, bool) or value is None:
        return str(value).lower()
    if not isinstance(value, (int, float)):
        return str(value)
    if isinstance(value, int):
        return str(value)
    if value == 0:
        return "0"
    if not math.isfinite(value):
        return str(value)
    a = abs(value)
    if a < 1e-2 or a >= 1e5:
        mant, exp = f"{value:.2e}".split("e")
        mant = mant.rstrip("0").rstrip(".")
        return f"{mant}e{int(exp)}"
    return f"{value:.4g}"


def short_name(name: str) -> str:
    return SHORT_NAMES.get(name, name)


def diff(parent: Mapping[str, Any] | None, child: Mapping[str, Any]) -> dict[str, list[Any]]:
    """``{name: [old, new]}`` for every hyperparameter that differs."""
    if parent is None:
        return {}
    out: dict[str, list[Any]] = {}
    for name in sorted(set(parent) | set(child)):
        if parent.get(name) != child.get(name):
            out[name] = [parent.get(name), child.get(name)]
    return out


def change_label(changes: Mapping[str, Sequence[Any]], step: int) -> str:
    parts = [
        f"{short_name(name)} {short_number(old)} \u2192 {short_number(new)}"
        for name, (old, new) in sorted(changes.items())
    ]
    return f"{', '.join(parts)} @ {step}" if parts else f"@ {step}"


def node_label(node: Mapping[str, Any], changes: Mapping[str, Sequence[Any]]) -> str:
    restore = node.get("restore")
    if restore:
        base = f"restored {restore.get('branch')}@{restore.get('step')}"
        if changes:
            return base + ", " + change_label(changes, int(node["step"])).rsplit(" @ ", 1)[0]
        return base
    if node.get("parent") is None:
        return f"start @ {node['step']}"
    return change_label(changes, int(node["step"]))


def node_metrics(
    series: Sequence[tuple[int, Mapping[str, float]]], start: int, end: int, *, steps: Sequence[int] | None = None
) -> dict[str, dict[str, float]]:
    """``{tag: {"step", "value"}}``: the last point of each metric whose step is in
    ``[start, end]`` (a node's own range), hyperparameter tags left out.

    Args:
        series: A branch's ``(step, {tag: value})`` points sorted by step.
        start: The node's first step.
        end: The node's end step.
        steps: The steps of ``series`` (to share them between the nodes of a branch).
    """
    if steps is None:
        steps = [step for step, _ in series]
    latest: dict[str, dict[str, float]] = {}
    lo, hi = bisect.bisect_left(steps, start), bisect.bisect_right(steps, end)
    for step, values in series[lo:hi]:
        for tag, value in values.items():
            if not tag.startswith(HYPERPARAMETER_TAG_PREFIX):
                latest[tag] = {"step": step, "value": value}
    return latest


def trainer_liveness(status: Mapping[str, Any] | None, now: float) -> dict[str, Any]:
    """``{"alive", "state", "age_s"}`` from a status file, as seen at ``now``."""
    if not status:
        return {"alive": False, "state": "unknown", "age_s": None}
    heartbeat = status.get("heartbeat")
    age = now - float(heartbeat) if isinstance(heartbeat, (int, float)) else None
    state = status.get("state", "unknown")
    alive = state == "training" and age is not None and age <= HEARTBEAT_TIMEOUT_S
    if state == "training" and not alive:
        state = "not_responding"
    return {"alive": alive, "state": state, "age_s": age}


def build_tree(
    experiment: str,
    records: Iterable[Mapping[str, Any]],
    *,
    branch_last_step: Mapping[str, int] | None = None,
    metrics: Mapping[str, Sequence[tuple[int, Mapping[str, float]]]] | None = None,
    status: Mapping[str, Any] | None = None,
    run_prefix: str = "",
    warnings: Iterable[str] = (),
    note_records: Mapping[str, Mapping[str, Any]] | None = None,
) -> dict[str, Any]:
    """Builds the tree that the ``tree`` route returns (see docs/http_api.md).

    Args:
        experiment: The experiment's path relative to the logdir.
        records: Node records; for a repeated id the last one wins.
        branch_last_step: The last step logged in each branch.
        metrics: Per branch, ``(step, {tag: value})`` points sorted by step;
            hyperparameter tags are left out of a node's metrics.
        status: The decoded ``retune-status.json``, or None.
        run_prefix: Prefix that turns a branch name into a TensorBoard run
            name (``"<experiment>/"``, or ``""`` when the experiment is the
            logdir itself).
        warnings: Problems found while reading the records (e.g. one that
            is not JSON); the reply's ``warnings`` adds those found here: a
            malformed record is skipped, a parent cycle is cut.
        note_records: Node id -> its latest note record; a node's ``note`` is its
            text, or None when it has none (or it was removed).
    """
    note_of = {str(k): v.get("text") or None for k, v in (note_records or {}).items()}
    notes = list(warnings)
    by_id: dict[str, dict[str, Any]] = {}
    for rec in records:
        problem = record_problem(rec)
        if problem is not None:
            notes.append(f"node record {_shown(rec.get('id'))} of branch {_shown(rec.get('branch'))} "
                         f"skipped: {problem}")
            continue
        by_id[str(rec["id"])] = dict(rec)
    _cut_cycles(by_id, notes)
    branch_last_step = dict(branch_last_step or {})
    metrics = metrics or {}
    status = dict(status) if status else None

    # Nodes of each branch in order of their first step.
    per_branch: dict[str, list[dict[str, Any]]] = {}
    for node in by_id.values():
        per_branch.setdefault(str(node["branch"]), []).append(node)
    for nodes in per_branch.values():
        nodes.sort(key=lambda n: (int(n["step"]), int(n.get("seq") or 0), float(n.get("time") or 0)))

    current_node = status.get("node") if status else None
    ckpt_index = _steps_by_branch((status or {}).get("checkpoint_nodes"), entries=True)
    ckpt_steps = _steps_by_branch((status or {}).get("checkpoints"), entries=False)

    out_nodes: list[dict[str, Any]] = []
    for branch, nodes in per_branch.items():
        last = branch_last_step.get(branch)
        series = list(metrics.get(branch, ()))
        series_steps = [step for step, _ in series]  # sorted: each node reads only its own range
        for i, node in enumerate(nodes):
            start = int(node["step"])
            if i + 1 < len(nodes):
                end = int(nodes[i + 1]["step"])
            else:
                end = max(start, int(last) if last is not None else start)
            parent_id = node.get("parent")
            parent = by_id.get(parent_id) if parent_id else None
            hps = dict(node.get("hyperparameters") or {})
            changes = diff(parent.get("hyperparameters") if parent else None, hps)
            if parent and node.get("learning_rate_schedule") and (
                    node.get("learning_rate_schedule") == parent.get("learning_rate_schedule")):
                changes.pop("learning_rate", None)  # the schedule's own decay is no change
            latest = node_metrics(series, start, end, steps=series_steps)
            if isinstance(ckpt_index, Mapping) and branch in ckpt_index:
                checkpoints = sorted(
                    int(c["step"]) for c in ckpt_index[branch] if c.get("node") == node["id"]
                )
            else:
                checkpoints = sorted(
                    int(s) for s in ckpt_steps.get(branch, []) if start <= int(s) <= end
                )
            out_nodes.append(
                {
                    "id": node["id"],
                    "branch": branch,
                    "run": run_prefix + branch,
                    "parent": parent_id if parent_id in by_id else None,
                    "children": [],
                    "start_step": start,
                    "end_step": end,
                    "current": node["id"] == current_node,
                    "reason": node.get("reason", "root" if not parent_id else "control"),
                    "restore": node.get("restore"),
                    "request_id": node.get("request_id"),
                    "hyperparameters": hps,
                    "diff": changes,
                    "label": node_label(node, changes),
                    "metrics": latest,
                    "checkpoints": checkpoints,
                    "has_config": bool(node.get("config")),
                    "time": node.get("time"),
                    "note": note_of.get(str(node["id"])),
                    "search": node.get("search") if isinstance(node.get("search"), Mapping) else None,
                }
            )
    index = {n["id"]: n for n in out_nodes}
    for n in out_nodes:
        if n["parent"] is not None:
            index[n["parent"]]["children"].append(n["id"])
    out_nodes.sort(key=lambda n: (n["start_step"], n.get("time") or 0, n["id"]))

    branches = []
    for name, nodes in per_branch.items():
        first = nodes[0]
        branches.append(
            {
                "name": name,
                "run": run_prefix + name,
                "parent_node": first.get("parent"),
                "start_step": int(first["step"]),
                "last_step": branch_last_step.get(name, int(nodes[-1]["step"])),
                "nodes": [n["id"] for n in nodes],
                "checkpoints": sorted(int(s) for s in ckpt_steps.get(name, [])),
                "time": first.get("time"),
            }
        )
    branches.sort(key=lambda b: (b["time"] or 0, b["name"]))
    for i, b in enumerate(branches):
        b["color"] = i
    roots = [n["id"] for n in out_nodes if n["parent"] is None]
    return {
        "experiment": experiment,
        "roots": roots,
        "nodes": out_nodes,
        "branches": branches,
        "warnings": notes[:MAX_WARNINGS] + (
            [f"... and {len(notes) - MAX_WARNINGS} more warnings"] if len(notes) > MAX_WARNINGS else []
        ),
    }


def _shown(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def _steps_by_branch(value: Any, *, entries: bool) -> dict[str, list[Any]]:
    """The status' ``checkpoints`` (steps) or ``checkpoint_nodes`` (entries)
    per branch, without what a damaged status file may hold instead."""
    if not isinstance(value, Mapping):
        return {}
    out: dict[str, list[Any]] = {}
    for branch, items in value.items():
        if not isinstance(items, list):
            continue
        if entries:
            out[str(branch)] = [i for i in items if isinstance(i, Mapping) and _int_like(i.get("step"))]
        else:
            out[str(branch)] = [i for i in items if _int_like(i)]
    return out


def _int_like(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _cut_cycles(by_id: dict[str, dict[str, Any]], notes: list[str]) -> None:
    """Makes the earliest node of each parent cycle a root, with a warning."""
    done: set[str] = set()
    for start in sorted(by_id):
        path: list[str] = []
        on_path: set[str] = set()
        node: Any = start
        while isinstance(node, str) and node in by_id and node not in done:
            if node in on_path:
                cycle = path[path.index(node):]
                cut = min(cycle, key=lambda i: (int(by_id[i]["step"]), i))
                notes.append(f"node {cut!r}: its parents lead back to it ({' -> '.join(cycle + [node])}); "
                             "drawn as a root")
                by_id[cut]["parent"] = None
                break
            on_path.add(node)
            path.append(node)
            node = by_id[node].get("parent")
        done.update(path)


def live_parts(status: Mapping[str, Any] | None, now: float) -> dict[str, Any]:
    """The parts of a ``tree`` answer that change with every heartbeat (the
    tree itself, built by :func:`build_tree`, is cached between them)."""
    return {"status": status, "trainer": trainer_liveness(status, now)}
