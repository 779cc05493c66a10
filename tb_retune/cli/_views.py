"""Text views for the terminal: the trainer's status and the tree (pure)."""

from __future__ import annotations

import time
from collections.abc import Mapping
from typing import Any

from tb_retune.experiment import requests
from tb_retune.experiment.control import format_value
from tb_retune.reader.tree import trainer_liveness

#: Box-drawing pieces of ``tree(1)``, and their ASCII stand-ins.
UNICODE_GLYPHS = {"tee": "├── ", "last": "└── ", "pipe": "│   ", "blank": "    ", "arrow": "→"}
ASCII_GLYPHS = {"tee": "|-- ", "last": "`-- ", "pipe": "|   ", "blank": "    ", "arrow": "->"}
#: How many of the last errors ``status`` shows.
LAST_ERRORS = 5


def entries(status: Mapping[str, Any] | None, key: str) -> list[dict[str, Any]]:
    """The well-formed entries of a list of the status file (``applied``, ``errors``)."""
    return [e for e in (status or {}).get(key) or [] if isinstance(e, dict)]


def _clock(t: Any) -> str:
    if not isinstance(t, (int, float)):
        return "?"
    return time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(t))


def describe_state(status: Mapping[str, Any] | None, now: float) -> str:
    """``training (pid 4242, heartbeat 0.8 s ago)``, ``not responding for 42 s ...``."""
    if not status:
        return "unknown (no retune-status.json: no trainer has run here yet)"
    live = trainer_liveness(status, now)
    pid = status.get("pid")
    age = live["age_s"]
    if live["state"] == "not_responding":
        return (f"not responding for {age:.0f} s (pid {pid}, last heartbeat {_clock(status.get('heartbeat'))}; "
                "the trainer was killed or is stuck)")
    if live["state"] == "training":
        return f"training (pid {pid}, heartbeat {age:.1f} s ago)"
    if live["state"] == "stopped":
        return f"stopped (at {_clock(status.get('heartbeat'))}, by a stop request or an interrupt)"
    return f"{live['state']} (at {_clock(status.get('heartbeat'))})"


def _pending_restore(status: Mapping[str, Any], control: Mapping[str, Any] | None) -> str | None:
    restore = requests.pending_restore(control, status, None)
    if restore is None:
        return None
    return f"{restore.get('id')}: {restore.get('branch')}@{restore.get('step')}"


def render_status(path: str, status: Mapping[str, Any] | None, control: Mapping[str, Any] | None,
                  control_error: str | None, now: float) -> str:
    """The ``status`` subcommand's text."""
    rows: list[tuple[str, str]] = [("experiment", path), ("state", describe_state(status, now))]
    lines: list[str] = []
    if status:
        epoch = status.get("epoch")
        rows.append(("step", f"{status.get('step')}" + (f" (epoch {epoch})" if epoch is not None else "")))
        rows.append(("branch", str(status.get("branch"))))
        rows.append(("node", str(status.get("node"))))
        checkpoints = status.get("checkpoints")
        if isinstance(checkpoints, dict) and checkpoints:
            rows.append(("checkpoints", "; ".join(
                f"{b}: {', '.join(str(s) for s in steps)}" for b, steps in checkpoints.items())))
        pending = _pending_restore(status, control)
        if pending:
            rows.append(("pending restore", pending))
        applied = entries(status, "applied")
        if applied:
            last = applied[-1]
            rows.append(("last change", f"step {last.get('step')}: {last.get('what')}"))
    if control_error:
        rows.append(("retune.json", f"invalid, ignored by the trainer: {control_error}"))
    width = max(len(k) for k, _ in rows) + 2
    lines += [f"{k:<{width}}{v}" for k, v in rows]
    if status:
        hps = status.get("hyperparameters") or {}
        lines.append("hyperparameters in force:")
        if hps:
            w = max(len(n) for n in hps) + 2
            lines += [f"  {n:<{w}}{format_value(v)}" for n, v in sorted(hps.items())]
        else:
            lines.append("  (none reported)")
        from tb_retune.cli._search import lines_for_status

        lines += lines_for_status(status.get("searches"), now)
        errors = entries(status, "errors")
        if errors:
            lines.append(f"last errors ({min(len(errors), LAST_ERRORS)} of {len(errors)}):")
            for e in errors[-LAST_ERRORS:]:
                step = e.get("step")
                where = f" step {step}" if step is not None else ""
                lines.append(f"  {_clock(e.get('time'))}{where}: {e.get('message')}")
        else:
            lines.append("last errors: none")
    return "\n".join(lines)


def _metric_text(node: Mapping[str, Any]) -> str:
    metrics = node.get("metrics") or {}
    parts = []
    for tag in ("loss", "val_loss"):
        point = metrics.get(tag)
        if isinstance(point, dict) and isinstance(point.get("value"), (int, float)):
            parts.append(f"{tag} {point['value']:.4g}")
    return "  ".join(parts)


def node_line(node: Mapping[str, Any], glyphs: Mapping[str, str]) -> str:
    """``main-2  main 40-70  lr 1e-2 → 5e-3 @ 40  loss 0.2417``."""
    label = str(node.get("label", "")).replace("\u2192", glyphs["arrow"])
    parts = [str(node["id"]) + (" *" if node.get("current") else ""),
             f"{node['branch']} {node['start_step']}-{node['end_step']}", label]
    metric = _metric_text(node)
    if metric:
        parts.append(metric)
    if node.get("note"):
        parts.append("note: " + " ".join(str(node["note"]).split()))  # one line, however it was typed
    return "  ".join(parts)


def render_tree(path: str, tree: Mapping[str, Any], glyphs: Mapping[str, str] = UNICODE_GLYPHS) -> str:
    """The tree like ``tree(1)``: one line per node, children indented."""
    nodes = {n["id"]: n for n in tree["nodes"]}
    branches = [b["name"] for b in tree.get("branches", [])]
    header = f"{path}  ({len(nodes)} nodes, {len(branches)} branches: {', '.join(branches)}; * = in force)"
    lines = [header]

    def children(node_id: str) -> list[dict[str, Any]]:
        kids = [nodes[c] for c in nodes[node_id].get("children", []) if c in nodes]
        return sorted(kids, key=lambda n: (n["start_step"], n.get("time") or 0, n["id"]))

    def walk(root: str) -> None:
        # A stack, not recursion: a branch with thousands of changes is a
        # chain thousands of nodes deep.
        stack: list[tuple[str, str, bool, bool]] = [(root, "", True, True)]
        while stack:
            nid, pre, is_last, is_top = stack.pop()
            node = nodes[nid]
            if is_top:
                lines.append(node_line(node, glyphs))
                child_prefix = ""
            else:
                lines.append(pre + (glyphs["last"] if is_last else glyphs["tee"]) + node_line(node, glyphs))
                child_prefix = pre + (glyphs["blank"] if is_last else glyphs["pipe"])
            kids = children(nid)
            for i in range(len(kids) - 1, -1, -1):
                stack.append((kids[i]["id"], child_prefix, i == len(kids) - 1, False))

    roots = [r for r in tree.get("roots", []) if r in nodes]
    for root in sorted(roots, key=lambda r: (nodes[r]["start_step"], nodes[r].get("time") or 0)):
        walk(root)
    return "\n".join(lines)
