"""Writes the JSON fixtures that the frontend's unit tests read.

The Retune tab and the plugin must agree on one data format. The fixtures are
made the way the plugin makes its answers: a synthetic experiment is written
with the trainer's own writers (:func:`tb_retune.testing.synthetic.make_experiment`),
read back with TensorBoard's own event loader, and turned into the ``tree``
answer with :func:`tb_retune.reader.tree.build_tree`. ``node`` answers add the
captured configuration and the branch's loss series, as ``docs/http_api.md``
says.

Run ``python tests/make_frontend_fixtures.py`` after a change to the tree's
format, and commit ``frontend/test/fixtures/``; ``tests/test_frontend_fixtures.py``
fails while the committed fixtures are stale.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
from collections.abc import Mapping
from typing import Any
from unittest import mock

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
FIXTURES_DIR = os.path.join(ROOT, "frontend", "test", "fixtures")

#: A fixed clock, so that the fixtures are the same on every run.
FIXED_TIME = 1763840000.0


class _FixedClock:
    """Stands in for the ``time`` module inside ``_synthetic`` only."""

    @staticmethod
    def time() -> float:
        return FIXED_TIME


def _read_back(
    folder: str,
) -> tuple[list[dict[str, Any]], dict[str, int], dict[str, list[tuple[int, dict[str, float]]]], list[dict[str, Any]]]:
    """Node records, last steps, scalar series and note records of an
    experiment folder, read with TensorBoard's own loader (one run per branch)."""
    from tensorboard.backend.event_processing import event_multiplexer
    from tensorboard.util import tensor_util

    from tb_retune.experiment import metadata

    mux = event_multiplexer.EventMultiplexer(
        size_guidance={"tensors": 0, "scalars": 0},
    )
    mux.AddRunsFromDirectory(folder)
    mux.Reload()
    records: list[dict[str, Any]] = []
    notes: list[dict[str, Any]] = []
    last_step: dict[str, int] = {}
    series: dict[str, list[tuple[int, dict[str, float]]]] = {}
    for run in sorted(mux.Runs()):
        tags = mux.GetAccumulator(run).Tags()["tensors"]
        points: dict[int, dict[str, float]] = {}
        for tag in sorted(tags):
            events = mux.Tensors(run, tag)
            if tag.startswith(metadata.NODE_TAG_PREFIX):
                records.append(metadata.decode_node(events[-1].tensor_proto))
                continue
            if tag.startswith(metadata.NOTE_TAG_PREFIX):
                notes.append(metadata.decode_note_bytes(events[-1].tensor_proto.string_val[0]))
                continue
            for ev in events:
                value = float(tensor_util.make_ndarray(ev.tensor_proto))
                points.setdefault(int(ev.step), {})[tag] = value
        series[run] = sorted(points.items())
        if points:
            last_step[run] = max(points)
    return records, last_step, series, notes


def _node_answer(tree: Mapping[str, Any], node_id: str, records: list[dict[str, Any]],
                 series: Mapping[str, list[tuple[int, dict[str, float]]]]) -> dict[str, Any]:
    """The ``node`` route's answer: the tree's node plus ``config`` and ``series``."""
    node = next(n for n in tree["nodes"] if n["id"] == node_id)
    record = next(r for r in records if r["id"] == node_id)
    points: dict[str, list[list[float]]] = {"loss": [], "val_loss": []}
    for step, values in series.get(node["branch"], ()):
        if step > node["end_step"]:
            break
        for tag in points:
            if tag in values:
                points[tag].append([step, values[tag]])
    return dict(node, config=record.get("config"), series=points)


def _experiment_entry(name: str, tree: Mapping[str, Any]) -> dict[str, Any]:
    status = tree["status"] or {}
    errors = status.get("errors") or []
    return {
        "name": name,
        "branches": [b["name"] for b in tree["branches"]],
        "runs": [b["run"] for b in tree["branches"]],
        "trainer": tree["trainer"],
        "step": status.get("step"),
        "branch": status.get("branch"),
        "node": status.get("node"),
        "last_error": errors[-1]["message"] if errors else None,
        "writable": True,
    }


#: The trees whose tree reply and metrics answer are fixtures too: notes, runs of changes, a search.
REPLY_FIXTURES = ("tree_small", "tree_long", "tree_search")


def _tree_reply(tree: dict[str, Any], status: dict[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
    """``(tree route's reply, metrics route's answer)`` of a tree built without its live parts,
    made by the functions that make them in the plugin."""
    from tb_retune.reader.cache import Reply, reply_status, reply_tree
    from tb_retune.reader.experiments import dumps_json
    from tb_retune.reader.tree import live_parts

    head = reply_tree(tree)
    key = Reply(dumps_json(head, compact=True)).key
    live = live_parts(status, FIXED_TIME + 0.8)
    reply = dict(head, status=reply_status(live["status"]), trainer=live["trainer"], writable=True, tree_key=key)
    metrics = {"experiment": tree["experiment"], "tree_key": key,
               "metrics": {n["id"]: n["metrics"] for n in tree["nodes"]}}
    return reply, metrics


def make_fixtures(out_dir: str) -> list[str]:
    """Writes every fixture into ``out_dir``; returns the file names."""
    from tb_retune.reader.experiments import latest_notes
    from tb_retune.reader.tree import build_tree, live_parts
    from tb_retune.testing import synthetic as _synthetic

    specs: list[tuple[str, str, dict[str, Any], bool]] = [
        # fixture name, experiment name, make_experiment arguments, alive
        ("tree_small", "digits", {"branches": 3, "nodes": 9, "steps_per_node": 100, "seed": 1,
                                  "notes": {"main-2": "lr 0.002 diverged <b>fast</b>", "main-s1-1": "try momentum 0.8"}},
         True),
        ("tree_branchy", "sweeps/a", {"branches": 12, "nodes": 60, "steps_per_node": 200, "seed": 7}, False),
        ("tree_root", ".", {"branches": 1, "nodes": 1, "steps_per_node": 100, "seed": 3}, True),
        # Long runs of changes on each branch: the groups and the step layout.
        ("tree_long", "long", {"branches": 3, "nodes": 50, "steps_per_node": 40, "seed": 5}, True),
        # A running search of 6 trials from main's first node (issue 17): the search card and groups.
        ("tree_search", "search", {"branches": 2, "nodes": 4, "steps_per_node": 100, "seed": 11, "search": 6}, True),
    ]
    written: list[str] = []
    experiments = []
    with tempfile.TemporaryDirectory(prefix="retune-fixtures-") as tmp:
        for fixture, name, kwargs, alive in specs:
            folder = os.path.join(tmp, fixture)
            with mock.patch.object(_synthetic, "time", _FixedClock):
                _synthetic.make_experiment(folder, alive=alive, **kwargs)
            with open(os.path.join(folder, "retune-status.json"), encoding="utf-8") as f:
                status = json.load(f)
            status["pid"] = 4242
            if fixture == "tree_small":
                status["applied"] = [
                    {"time": FIXED_TIME - 50, "step": 300, "id": None, "kind": "hyperparameters",
                     "what": "learning_rate 0.001 -> 0.0005"}
                ]
                status["errors"] = [
                    {"time": FIXED_TIME - 20, "message": "hyperparameters.learning_rate: must be > 0, got -1"}
                ]
            records, last_step, series, notes = _read_back(folder)
            tree = build_tree(
                name,
                records,
                branch_last_step=last_step,
                metrics=series,
                status=status,
                run_prefix="" if name == "." else name + "/",
                note_records=latest_notes(notes),
            )
            reply, metrics = _tree_reply(tree, status)
            tree.update(live_parts(status, FIXED_TIME + 0.8), writable=True)
            files = {f"{fixture}.json": tree}
            if fixture in REPLY_FIXTURES:
                # The tree route's reply (what the tree view draws) and the metrics route's answer beside it.
                files[f"{fixture}.reply.json"] = reply
                files[f"{fixture}.metrics.json"] = metrics
            # The node answer of the current node and of a restored branch's first node.
            current = next(n for n in tree["nodes"] if n["current"])
            files[f"{fixture}.node-{current['id']}.json"] = _node_answer(tree, current["id"], records, series)
            restored = [n for n in tree["nodes"] if n["restore"]]
            if restored:
                nid = restored[0]["id"]
                files[f"{fixture}.node-{nid}.json"] = _node_answer(tree, nid, records, series)
            root = tree["roots"][0]
            files[f"{fixture}.node-{root}.json"] = _node_answer(tree, root, records, series)
            for fname, obj in files.items():
                _write(os.path.join(out_dir, fname), obj)
                written.append(fname)
            experiments.append(_experiment_entry(name, tree))
    _write(os.path.join(out_dir, "experiments.json"), {"experiments": experiments})
    written.append("experiments.json")
    _write(os.path.join(out_dir, "request_cases.json"), {"cases": request_cases()})
    written.append("request_cases.json")
    _write(os.path.join(out_dir, "search_cases.json"), search_cases())
    written.append("search_cases.json")
    return sorted(written)


def request_cases() -> list[dict[str, Any]]:
    """Cases of the request rule (``tb_retune.experiment.requests.request_state``).

    The tab's copy of the rule (``frontend/src/requests.js``) is tested on
    them, and ``tests/test_request_cases.py`` holds each ``expected`` against
    the Python rule. No case has a ``pid``: the pid check is the server's
    alone (a browser cannot make it).
    """
    now = FIXED_TIME
    live = {"state": "training", "heartbeat": now - 1, "step": 120}

    def control(revision: Any, result: Any, error: Any = None) -> dict[str, Any]:
        return {"revision": revision, "sha256": "ab" * 32, "result": result, "error": error, "time": now - 0.5}

    rows: list[tuple[str, Any, str, list[str], str]] = [
        ("no status: no trainer", None, "w-000000000001", [], "no_trainer"),
        ("a live trainer that took nothing yet", dict(live), "w-000000000001", [], "pending"),
        ("taken and applied", {**live, "control": control("w-000000000001", "applied")}, "w-000000000001", [], "applied"),
        ("taken and rejected", {**live, "control": control("w-000000000001", "rejected",
                                                           "hyperparameters.momentum: must be <= 1, got 1.5")},
         "w-000000000001", [], "rejected"),
        ("taken, nothing to change", {**live, "control": control("w-000000000001", "unchanged")},
         "w-000000000001", [], "unchanged"),
        ("a later revision carries it", {**live, "control": control("w-000000000002", "applied")},
         "w-000000000001", ["w-000000000002"], "applied"),
        ("the trainer took an earlier one", {**live, "control": control("w-000000000000", "applied")},
         "w-000000000001", [], "pending"),
        ("finished before taking it", {**live, "state": "finished", "control": control("w-000000000000", "applied")},
         "w-000000000001", [], "no_trainer"),
        ("stopped", {**live, "state": "stopped"}, "w-000000000001", [], "no_trainer"),
        ("failed", {**live, "state": "failed"}, "w-000000000001", [], "no_trainer"),
        ("taken, then finished", {**live, "state": "finished", "control": control("w-000000000001", "applied")},
         "w-000000000001", [], "applied"),
        ("a record with an unknown result is none", {**live, "control": control("w-000000000001", "weird")},
         "w-000000000001", [], "pending"),
        ("a control that is not an object", {**live, "control": ["w-000000000001"]}, "w-000000000001", [], "pending"),
        ("a revision null (hand-edited file)", {**live, "control": control(None, "applied")},
         "w-000000000001", [], "pending"),
    ]
    return [{"name": name, "status": status, "revision": revision, "later": later, "now": now,
             "expected": expected} for name, status, revision, later, expected in rows]


def search_cases() -> dict[str, Any]:
    """Cases of a search request: the search form's fields, the request they
    mean, and the key of the error (None: valid).

    The tab's checks (``frontend/src/search.js``, ``buildSearchRequest``) are
    tested on the fields; ``tests/test_search_cases.py`` holds each request
    against the schema's ``parse_search`` (on the branch that has it).
    """
    known = {"learning_rate": 0.01, "momentum": 0.9, "nesterov": False, "weight_decay": None}
    metrics = ["accuracy", "loss", "val_accuracy", "val_loss"]
    checkpoints = {"main": [100, 200]}
    source = {"branch": "main", "step": 100}

    def dim(on: bool = True, kind: str = "range", low: str = "", high: str = "", log: bool = False,
            step: str = "", choices: str = "") -> dict[str, Any]:
        return {"on": on, "kind": kind, "low": low, "high": high, "log": log, "step": step, "choices": choices}

    base_fields = {"space": {"learning_rate": dim(low="0.0001", high="0.3", log=True)}, "trials": "8",
                   "steps_per_trial": "200", "metric": "val_loss", "mode": None, "sampler": "tpe",
                   "pruner": "hyperband", "then": "best"}
    base_request = {"from": source, "space": {"learning_rate": {"low": 0.0001, "high": 0.3, "log": True}},
                    "trials": 8, "steps_per_trial": 200, "objective": {"metric": "val_loss", "mode": "min"},
                    "sampler": "tpe", "pruner": "hyperband", "then": "best"}

    def case(name: str, fields: dict[str, Any], request: dict[str, Any], error: str | None) -> dict[str, Any]:
        return {"name": name, "fields": dict(base_fields, **fields), "request": dict(base_request, **request),
                "error": error}

    cases = [
        case("the issue's example", {}, {}, None),
        case("a boolean as choices and momentum as a range", {"space": {
            "learning_rate": dim(low="0.0001", high="0.3", log=True), "momentum": dim(low="0", high="0.99"),
            "nesterov": dim(kind="choices", choices="true, false")}}, {"space": {
                "learning_rate": {"low": 0.0001, "high": 0.3, "log": True}, "momentum": {"low": 0, "high": 0.99},
                "nesterov": {"choices": [True, False]}}}, None),
        case("grid with steps", {"sampler": "grid", "trials": "5", "space": {"momentum": dim(low="0", high="0.9", step="0.3")}},
             {"sampler": "grid", "trials": 5, "space": {"momentum": {"low": 0, "high": 0.9, "step": 0.3}}}, None),
        case("grid: too many trials", {"sampler": "grid", "trials": "6", "space": {"momentum": dim(low="0", high="0.9", step="0.3")}},
             {"sampler": "grid", "trials": 6, "space": {"momentum": {"low": 0, "high": 0.9, "step": 0.3}}}, "search.trials"),
        case("grid needs a step", {"sampler": "grid"}, {"sampler": "grid"}, "search.space.learning_rate"),
        case("low > high", {"space": {"learning_rate": dim(low="0.3", high="0.001")}},
             {"space": {"learning_rate": {"low": 0.3, "high": 0.001}}}, "search.space.learning_rate"),
        case("log scale from 0", {"space": {"learning_rate": dim(low="0", high="0.1", log=True)}},
             {"space": {"learning_rate": {"low": 0, "high": 0.1, "log": True}}}, "search.space.learning_rate.low"),
        case("log and step", {"space": {"learning_rate": dim(low="0.001", high="0.1", log=True, step="0.01")}},
             {"space": {"learning_rate": {"low": 0.001, "high": 0.1, "log": True, "step": 0.01}}},
             "search.space.learning_rate.step"),
        case("momentum above 1", {"space": {"momentum": dim(low="0.5", high="1.5")}},
             {"space": {"momentum": {"low": 0.5, "high": 1.5}}}, "search.space.momentum.high"),
        case("a boolean as a range", {"space": {"nesterov": dim(low="0", high="1")}},
             {"space": {"nesterov": {"low": 0, "high": 1}}}, "search.space.nesterov"),
        case("zero trials", {"trials": "0"}, {"trials": 0}, "search.trials"),
        case("zero steps", {"steps_per_trial": "0"}, {"steps_per_trial": 0}, "search.steps_per_trial"),
        case("a metric fit does not log", {"metric": "val_auc"},
             {"objective": {"metric": "val_auc", "mode": "max"}}, "search.objective.metric"),
        case("maximise accuracy", {"metric": "val_accuracy", "mode": "max"},
             {"objective": {"metric": "val_accuracy", "mode": "max"}}, None),
        case("random sampler, median pruner, back to the source", {"sampler": "random", "pruner": "median", "then": "source"},
             {"sampler": "random", "pruner": "median", "then": "source"}, None),
        case("an unknown sampler", {"sampler": "bayes"}, {"sampler": "bayes"}, "search.sampler"),
        case("an unknown pruner", {"pruner": "asha"}, {"pruner": "asha"}, "search.pruner"),
    ]
    return {"known": known, "metrics": metrics, "checkpoints": checkpoints, "from": source, "cases": cases}


def _write(path: str, obj: Any) -> None:
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "w", encoding="utf-8", newline="\n") as f:
        f.write(json.dumps(obj, indent=1, sort_keys=True, ensure_ascii=False, allow_nan=False) + "\n")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", default=FIXTURES_DIR, help="folder to write into (default: %(default)s)")
    args = parser.parse_args(argv)
    for name in make_fixtures(args.out):
        print(os.path.join(args.out, name))
    return 0


if __name__ == "__main__":
    sys.path.insert(0, ROOT)
    raise SystemExit(main())
