"""Exports of the tree (JSON, CSV, Graphviz DOT) and the replay schedule (pure)."""

from __future__ import annotations

import csv
import io
import json
import math
from collections.abc import Mapping, Sequence
from typing import Any

from tb_retune.cli._experiment import CliError
from tb_retune.experiment.control import FIXED_AT_BUILD, parse_control_object

#: Version of the JSON export's layout.
EXPORT_VERSION = 1
#: Fill colours of the DOT export, one per branch (the branch's ``color`` index).
PALETTE = ("#a6cee3", "#b2df8a", "#fb9a99", "#fdbf6f", "#cab2d6",
           "#ffff99", "#8dd3c7", "#bebada", "#fccde5", "#d9d9d9")

def to_json(path: str, tree: Mapping[str, Any]) -> str:
    """The whole tree: every node with hyperparameters, step range, metrics.

    The trainer's status (heartbeat, liveness) is left out: an export of a
    finished experiment is the same every time.
    """
    doc = {
        "format": "tb-retune-tree",
        "version": EXPORT_VERSION,
        "experiment": path,
        "roots": list(tree.get("roots", [])),
        "branches": [dict(b) for b in tree.get("branches", [])],
        "nodes": [dict(n) for n in tree.get("nodes", [])],
    }
    return json.dumps(doc, indent=2, sort_keys=False, default=str) + "\n"


def _cell(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float):
        return repr(value) if math.isfinite(value) else str(value)
    return str(value)


def to_csv(tree: Mapping[str, Any]) -> str:
    """One row per node; hyperparameters as ``hp.<name>``, the latest value of
    each metric as ``metric.<tag>`` with its step in ``metric.<tag>.step``."""
    nodes = list(tree.get("nodes", []))
    hp_names = sorted({name for n in nodes for name in (n.get("hyperparameters") or {})})
    metric_tags = sorted({tag for n in nodes for tag in (n.get("metrics") or {})})
    header = ["node", "parent", "branch", "run", "start_step", "end_step", "reason", "label",
              "restore_branch", "restore_step", "current"]
    header += [f"hp.{name}" for name in hp_names]
    for tag in metric_tags:
        header += [f"metric.{tag}", f"metric.{tag}.step"]
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(header)
    for n in nodes:
        restore = n.get("restore") or {}
        row = [n["id"], n.get("parent"), n["branch"], n.get("run"), n["start_step"], n["end_step"],
               n.get("reason"), n.get("label"), restore.get("branch"), restore.get("step"), n.get("current")]
        hps = n.get("hyperparameters") or {}
        row += [hps.get(name) for name in hp_names]
        metrics = n.get("metrics") or {}
        for tag in metric_tags:
            point = metrics.get(tag) or {}
            row += [point.get("value"), point.get("step")]
        writer.writerow([_cell(v) for v in row])
    return out.getvalue()


def _dot_string(text: Any) -> str:
    """A DOT double-quoted string (backslashes and quotes escaped, newlines as ``\\n``)."""
    s = str(text).replace("\\", "\\\\").replace('"', '\\"')
    return '"' + s.replace("\r", "").replace("\n", "\\n") + '"'


def to_dot(path: str, tree: Mapping[str, Any]) -> str:
    """A Graphviz digraph: nodes coloured by branch, edges labelled with the change."""
    colors = {b["name"]: PALETTE[int(b.get("color", 0)) % len(PALETTE)] for b in tree.get("branches", [])}
    lines = [
        f"digraph {_dot_string(path)} {{",
        "  rankdir=TB;",
        '  node [shape=box, style="rounded,filled", fontname="Helvetica", fontsize=10];',
        '  edge [fontname="Helvetica", fontsize=9];',
    ]
    for b in tree.get("branches", []):
        lines.append(f"  // branch {b['name']}: {colors.get(b['name'])}, steps {b.get('start_step')}-{b.get('last_step')}")
    for n in tree.get("nodes", []):
        text = [f"{n['id']}{' (in force)' if n.get('current') else ''}",
                f"{n['branch']}: steps {n['start_step']}-{n['end_step']}"]
        loss = (n.get("metrics") or {}).get("loss")
        if isinstance(loss, dict) and isinstance(loss.get("value"), (int, float)):
            text.append(f"loss {loss['value']:.4g} @ {loss.get('step')}")
        if n.get("parent") is None:
            text.append(str(n.get("label", "")))
        attrs = [f"label={_dot_string(chr(10).join(text))}",
                 f"fillcolor={_dot_string(colors.get(n['branch'], PALETTE[-1]))}"]
        if n.get("current"):
            attrs.append("penwidth=2")
        lines.append(f"  {_dot_string(n['id'])} [{', '.join(attrs)}];")
    for n in tree.get("nodes", []):
        if n.get("parent") is not None:
            style = ", style=dashed" if n.get("reason") == "restore" else ""
            lines.append(f"  {_dot_string(n['parent'])} -> {_dot_string(n['id'])} "
                         f"[label={_dot_string(n.get('label', ''))}{style}];")
    lines.append("}")
    return "\n".join(lines) + "\n"


# -- replay -------------------------------------------------------------------


def path_to(tree: Mapping[str, Any], node_id: str) -> list[dict[str, Any]]:
    """The nodes from the root to ``node_id``, following parent links (so a
    restored branch continues its parent's path up to the restored step)."""
    nodes = {n["id"]: n for n in tree.get("nodes", [])}
    if node_id not in nodes:
        raise CliError(f"no node {node_id!r}")
    path: list[dict[str, Any]] = []
    seen: set[str] = set()
    current: str | None = node_id
    while current is not None and current in nodes:
        if current in seen:
            raise CliError(f"the tree has a cycle through node {current!r}; it cannot be replayed")
        seen.add(current)
        path.append(nodes[current])
        current = nodes[current].get("parent")
    path.reverse()
    return path


def _settable(hps: Mapping[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in hps.items() if k not in FIXED_AT_BUILD and not isinstance(v, str)}


def _same(a: Any, b: Any) -> bool:
    if isinstance(a, bool) or isinstance(b, bool) or a is None or b is None:
        return a is b or a == b
    return bool(a == b)


def follows_lr_schedule(config: Mapping[str, Any] | None) -> bool:
    """Whether a node's learning rate came from the compiled
    ``LearningRateSchedule`` (not yet replaced by a constant)."""
    optimizer = (config or {}).get("optimizer")
    return bool(isinstance(optimizer, dict) and optimizer.get("learning_rate_schedule"))


def replay_schedule(path: Sequence[Mapping[str, Any]],
                    configs: Mapping[str, Mapping[str, Any] | None] | None = None) -> dict[str, Any]:
    """The control file that trains ``path`` again, unattended.

    The first entry (``at_step`` of the root) sets every hyperparameter the
    root had; each later node adds an entry at its first step with what
    differs from the node before it on the path. Entries at the same step
    are merged. A learning rate that followed a compiled learning-rate
    schedule is left out, so the new run's own schedule gives it.

    Args:
        path: Nodes from the root on, as :func:`path_to` returns them.
        configs: The captured configuration of each node (node id -> config).
    """
    configs = configs or {}
    by_step: dict[int, dict[str, Any]] = {}
    previous: dict[str, Any] | None = None
    for node in path:
        hps = _settable(node.get("hyperparameters") or {})
        if previous is None:
            change = dict(hps)
        else:
            change = {k: v for k, v in hps.items() if k not in previous or not _same(previous[k], v)}
        if follows_lr_schedule(configs.get(node["id"])):
            change.pop("learning_rate", None)
        if change or previous is None:
            by_step.setdefault(int(node["start_step"]), {}).update(change)
        previous = hps
    schedule = [{"at_step": step, "hyperparameters": hps} for step, hps in sorted(by_step.items())]
    doc = {"schedule": schedule}
    # What we hand out must be a control file that the trainer accepts.
    parse_control_object(json.loads(json.dumps(doc)), None, None)
    return doc
