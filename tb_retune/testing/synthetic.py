"""Synthetic experiments written with the trainer's own writers.

Used by the benchmarks (trees of 100 to 10,000 nodes) and by the frontend's
fixtures, where a real ``fit()`` of that size would take hours. The files
are exactly what a trainer writes: node records, scalars and a status file.
"""

from __future__ import annotations

import os
import random
import time
from collections.abc import Mapping
from typing import Any

from tb_retune.experiment import atomic as _atomic
from tb_retune.experiment.control import STATUS_FILENAME
from tb_retune.trainer import notes as _notes
from tb_retune.trainer.hparams import HParamsRecorder
from tb_retune.trainer.summaries import BranchWriter


def make_experiment(
    folder: str,
    *,
    branches: int = 3,
    nodes: int = 9,
    steps_per_node: int = 100,
    seed: int = 0,
    branch_names: list[str] | None = None,
    alive: bool = True,
    hparams: bool = False,
    notes: Mapping[str, str] | None = None,
) -> dict[str, Any]:
    """Writes an experiment of ``nodes`` nodes over ``branches`` branches.

    ``hparams=True`` also writes each branch's HParams session, as the
    trainer does when a branch ends (tb_retune.trainer.hparams).
    ``notes`` (node id -> text) are recorded as the trainer records them
    (tb_retune.trainer.notes), each in the run of its node's branch.
    Returns the status dict that was written.
    """
    recorder = HParamsRecorder(folder) if hparams else None
    rng = random.Random(seed)
    os.makedirs(folder, exist_ok=True)
    now = time.time()
    names = branch_names or ["main"] + [f"main-s{i}" for i in range(1, branches)]
    names = names[:branches]
    per_branch = [nodes // branches + (1 if i < nodes % branches else 0) for i in range(branches)]
    hp0: dict[str, Any] = {"learning_rate": 0.001, "momentum": 0.9, "nesterov": False, "weight_decay": None}
    all_nodes: list[dict[str, Any]] = []
    checkpoints: dict[str, list[int]] = {}
    checkpoint_nodes: dict[str, list[dict[str, Any]]] = {}
    seq = 0
    live_branch = max(i for i, c in enumerate(per_branch[: len(names)]) if c)
    for b, (name, count) in enumerate(zip(names, per_branch, strict=False)):
        if count == 0:
            continue
        if b == 0:
            parent = None
            start = 0
            hps = dict(hp0)
            restore = None
        else:
            # Branch from a random node of an earlier branch, at its start.
            src = rng.choice(all_nodes)
            parent = src["id"]
            start = src["step"] + steps_per_node // 2
            hps = dict(src["hyperparameters"])
            restore = {"branch": src["branch"], "step": start, "node": src["id"]}
        writer = BranchWriter(os.path.join(folder, name), start_step=start)
        step = start
        checkpoints[name] = []
        checkpoint_nodes[name] = []
        for k in range(count):
            old = dict(hps)
            if k > 0:
                hps["learning_rate"] = float(f"{hps['learning_rate'] * rng.choice([0.3, 0.5, 2.0]):.3g}")
                if rng.random() < 0.3:
                    hps["momentum"] = rng.choice([0.0, 0.5, 0.8, 0.9, 0.95])
            seq += 1
            record = {
                "version": 1,
                "id": f"{name}-{k + 1}",
                "branch": name,
                "parent": parent,
                "step": step,
                "seq": seq,
                "time": now - 10_000 + seq,
                "reason": "restore" if (k == 0 and restore) else ("root" if parent is None else "control"),
                "restore": restore if k == 0 else None,
                "hyperparameters": dict(hps),
                "change": {n: [old.get(n), v] for n, v in hps.items() if old.get(n) != v} if k else {},
                "config": {"optimizer": {"class_name": "SGD", "config": dict(hps)}} if (k == 0 and parent is None) else None,
            }
            writer.node(record)
            all_nodes.append(record)
            for s in range(step, step + steps_per_node, max(1, steps_per_node // 4)):
                loss = 2.0 * (0.97 ** (s / 10)) + rng.random() * 0.05
                writer.scalars(s, {"loss": loss, "accuracy": 1 - loss / 2.2})
                writer.hyperparameters(s, hps)
            epoch_logs = {"loss": loss, "accuracy": 1 - loss / 2.2, "val_loss": loss * 1.1, "val_accuracy": 1 - loss / 2}
            writer.scalars(step + steps_per_node, {k: epoch_logs[k] for k in ("val_loss", "val_accuracy")})
            if recorder is not None:
                recorder.saw(epoch_logs)
            checkpoints[name].append(step + steps_per_node)
            checkpoint_nodes[name].append({"step": step + steps_per_node, "node": record["id"]})
            parent = record["id"]
            step += steps_per_node
        mine = {n: t for n, t in (notes or {}).items() if n.startswith(f"{name}-") and n[len(name) + 1:].isdigit()}
        _notes.record_notes(writer, mine, None, step, now=now)
        # A branch's session is written when training leaves it (the live one: at the end of fit).
        if recorder is not None and not (alive and b == live_branch):
            recorder.branch_ends(writer, name, hps, start)
        writer.close()
    last = all_nodes[-1]
    status = {
        "version": 1,
        "pid": os.getpid(),
        "heartbeat": time.time() if alive else now - 3600,
        "state": "training" if alive else "finished",
        "branch": last["branch"],
        "node": last["id"],
        "step": last["step"] + steps_per_node,
        "hyperparameters": last["hyperparameters"],
        "checkpoints": checkpoints,
        "checkpoint_nodes": checkpoint_nodes,
        "applied": [],
        "errors": [],
    }
    _atomic.atomic_write_json(os.path.join(folder, STATUS_FILENAME), status, durable=False)
    return status
