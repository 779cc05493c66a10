"""Synthetic experiments written with the trainer's own writers.

Used by the benchmarks (trees of 100 to 10,000 nodes) and by the frontend's
fixtures, where a real ``fit()`` of that size would take hours. The files
are exactly what a trainer writes: node records, scalars and a status file.
"""

from __future__ import annotations

import math
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
    search: int = 0,
) -> dict[str, Any]:
    """Writes an experiment of ``nodes`` nodes over ``branches`` branches.

    ``hparams=True`` also writes each branch's HParams session, as the
    trainer does when a branch ends (tb_retune.trainer.hparams).
    ``notes`` (node id -> text) are recorded as the trainer records them
    (tb_retune.trainer.notes), each in the run of its node's branch.
    ``search=K`` adds a running search (issue 17) of K trials (K >= 2)
    from the first node's checkpoint, as the trainer records one: a branch
    per trial with the ``search`` key in its node record, and
    ``searches[id]`` in the status (see :func:`_write_search`).
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
    searches: dict[str, Any] = {}
    if search:
        searches, trial_nodes = _write_search(folder, all_nodes[0], steps_per_node, search, seq, now, rng,
                                              checkpoints, checkpoint_nodes)
        all_nodes.extend(trial_nodes)
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
    if search:
        status["searches"] = searches
        status["metrics"] = ["accuracy", "loss", "val_accuracy", "val_loss"]
    _atomic.atomic_write_json(os.path.join(folder, STATUS_FILENAME), status, durable=False)
    return status


#: The id of the synthetic search.
SEARCH_ID = "s-1"


def _write_search(
    folder: str,
    source: dict[str, Any],
    steps_per_node: int,
    trials: int,
    seq: int,
    now: float,
    rng: random.Random,
    checkpoints: dict[str, list[int]],
    checkpoint_nodes: dict[str, list[dict[str, Any]]],
) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """A running search of ``trials`` trials from ``source``'s end checkpoint:
    trial 0 the baseline (complete), then complete and pruned trials in turn,
    the last one running. Each trial is a branch ``<source branch>-s-1-t<n>``
    whose node record carries ``search`` as the trainer's records do
    (``{id, trial, baseline, hyperparameters, state, value, step}``).
    Returns ``(searches, node records)``."""
    if trials < 2:
        raise ValueError(f"a synthetic search needs at least 2 trials, got search={trials}")
    src_branch, src_step = source["branch"], source["step"] + steps_per_node
    length = steps_per_node
    entries: list[dict[str, Any]] = []
    records: list[dict[str, Any]] = []
    for n in range(trials):
        baseline = n == 0
        state = "running" if n == trials - 1 else ("pruned" if n % 3 == 2 else "complete")
        values = ({"learning_rate": source["hyperparameters"]["learning_rate"], "nesterov": source["hyperparameters"]["nesterov"]}
                  if baseline else
                  {"learning_rate": float(f"{10 ** rng.uniform(-4, -0.5):.3g}"), "nesterov": bool(n % 2)})
        hps = dict(source["hyperparameters"], **values)
        name = f"{src_branch}-{SEARCH_ID}-t{n}"
        end = src_step + (length // 2 if state == "pruned" else length)
        if state == "running":
            end = src_step + length // 4
        writer = BranchWriter(os.path.join(folder, name), start_step=src_step)
        loss = 1.0
        for s in range(src_step, end + 1, max(1, length // 4)):
            loss = 1.5 * (0.99 ** ((s - src_step) / 10)) * (1 + abs(math.log10(values["learning_rate"]) + 2) / 4) + rng.random() * 0.02
            writer.scalars(s, {"loss": loss, "accuracy": 1 - loss / 2.2})
            writer.hyperparameters(s, hps)
        value = loss * 1.1 if state == "complete" else None
        if state != "running":
            writer.scalars(end, {"val_loss": loss * 1.1, "val_accuracy": 1 - loss / 2})
        seq += 1
        record = {
            "version": 1, "id": f"{name}-1", "branch": name, "parent": source["id"], "step": src_step, "seq": seq,
            "time": now - 5_000 + seq, "reason": "restore",
            "restore": {"branch": src_branch, "step": src_step, "node": source["id"]},
            "hyperparameters": hps, "change": {}, "config": None,
            "search": {"id": SEARCH_ID, "trial": n, "baseline": baseline, "hyperparameters": values,
                       "state": state, "value": value, "step": end},
        }
        writer.node(record)
        writer.close()
        records.append(record)
        checkpoints[name] = [] if state == "running" else [end]
        checkpoint_nodes[name] = [] if state == "running" else [{"step": end, "node": record["id"]}]
        entries.append({"number": n, "branch": name, "hyperparameters": values, "value": value, "state": state,
                        "worker": {"host": "synthetic", "pid": 4242}, "baseline": baseline, "step": end})
    done = [e for e in entries if e["state"] == "complete"]
    best = min(done, key=lambda e: (e["value"], e["number"]))
    searches = {SEARCH_ID: {
        "state": "running",
        "source": {"branch": src_branch, "step": src_step},
        "trials": entries,
        "best": {"number": best["number"], "branch": best["branch"], "value": best["value"],
                 "hyperparameters": dict(best["hyperparameters"])},
        "total": trials + 2, "steps_per_trial": length,
        "objective": {"metric": "val_loss", "mode": "min"},
        "sampler": "tpe", "pruner": "median", "then": "best",
    }}
    return searches, records
