"""The ``search`` request's schema: a good one parses, every bad one gets one
error that names its key (``search.<key>``) and the value."""

from __future__ import annotations

import copy
import json
import os
import sys
from typing import Any

import pytest

from tb_retune._errors import ControlError
from tb_retune.experiment import control_file
from tb_retune.experiment.control import parse_control_object
from tb_retune.experiment.search import Choices, Range, default_mode, parse_search

KNOWN = {"learning_rate": 0.01, "momentum": 0.9, "nesterov": False, "weight_decay": None,
         "clipnorm": None, "clipvalue": None, "global_clipnorm": None}
CKPTS = {"main": [0, 200, 400]}
METRICS = ["loss", "accuracy", "val_loss", "val_accuracy", "val_f2"]

GOOD: dict[str, Any] = {
    "id": "s-1",
    "from": {"branch": "main", "step": 400},
    "space": {"learning_rate": {"low": 1e-4, "high": 0.3, "log": True},
              "momentum": {"low": 0.0, "high": 0.99},
              "nesterov": {"choices": [True, False]}},
    "trials": 8, "steps_per_trial": 200,
    "objective": {"metric": "val_loss", "mode": "min"},
    "sampler": "tpe", "pruner": "hyperband", "then": "best",
}


def with_(**changes: Any) -> dict[str, Any]:
    """GOOD with keys replaced; a value of ``...`` removes the key. Dotted
    names reach inside: ``space__momentum__low`` is space.momentum.low."""
    doc = copy.deepcopy(GOOD)
    for path, value in changes.items():
        keys = path.split("__")
        target = doc
        for k in keys[:-1]:
            target = target[k]
        if value is ...:
            del target[keys[-1]]
        else:
            target[keys[-1]] = value
    return doc


def test_the_issue_example_parses_with_every_field() -> None:
    request = parse_search(GOOD, KNOWN, CKPTS, METRICS)
    assert request.id == "s-1"
    assert request.source == ("main", 400)
    assert request.space["learning_rate"] == Range(low=1e-4, high=0.3, log=True)
    assert request.space["momentum"] == Range(low=0.0, high=0.99)
    assert request.space["nesterov"] == Choices((True, False))
    assert (request.trials, request.steps_per_trial) == (8, 200)
    assert (request.metric, request.mode) == ("val_loss", "min")
    assert (request.sampler, request.pruner, request.then) == ("tpe", "hyperband", "best")


def test_defaults_from_sampler_pruner_then_and_mode() -> None:
    doc = with_(**{"from": ..., "sampler": ..., "pruner": ..., "then": ..., "objective": {"metric": "val_accuracy"}})
    request = parse_search(doc, KNOWN, CKPTS, METRICS)
    assert request.source is None  # the current state
    assert (request.sampler, request.pruner, request.then, request.mode) == ("tpe", "none", "best", "max")
    assert default_mode("val_loss") == "min" and default_mode("accuracy") == "max"
    assert default_mode("val_f2") is None


def test_the_control_file_carries_a_search() -> None:
    revision = parse_control_object({"search": GOOD, "hyperparameters": {"learning_rate": 0.02}}, KNOWN, CKPTS)
    assert revision.search is not None and revision.search.id == "s-1"
    assert parse_control_object({}, KNOWN).search is None


def test_fingerprint_tells_requests_apart() -> None:
    a = parse_search(GOOD, KNOWN)
    assert a.fingerprint() == parse_search(copy.deepcopy(GOOD), KNOWN).fingerprint()
    assert a.fingerprint() != parse_search(with_(trials=9), KNOWN).fingerprint()


def test_grid_points_and_integer_ranges() -> None:
    doc = with_(sampler="grid", trials=7, space={"momentum": {"low": 0.0, "high": 0.2, "step": 0.1},
                                                  "nesterov": {"choices": [True, False]}})
    request = parse_search(doc, KNOWN)
    assert request.space["momentum"].grid() == [0.0, 0.1, 0.2]
    ns = parse_search(with_(space={"warmup": {"low": 1, "high": 7, "step": 2}}), {"warmup": 5})
    dim = ns.space["warmup"]
    assert isinstance(dim, Range) and dim.integer and dim.grid() == [1, 3, 5, 7]


# Every bad request named in issue 17, and more: (request, the key the error names, a word of it).
BAD = [
    (with_(sampler="bayes"), "search.sampler", "unknown sampler \"bayes\"; one of tpe, random, grid, qmc"),
    (with_(pruner="asha"), "search.pruner", "one of none, median, successive_halving, hyperband"),
    (with_(space__momentum__low=0.9, space__momentum__high=0.1), "search.space.momentum", "low 0.9 must be <= high 0.1"),
    (with_(trials=0), "search.trials", "between 1 and"),
    (with_(trials=-3), "search.trials", "got -3"),
    (with_(trials=2.5), "search.trials", "an integer"),
    (with_(space={"lerning_rate": {"low": 0.1, "high": 0.2}}), "search.space.lerning_rate", "unknown hyperparameter"),
    (with_(objective={"metric": "val_acc"}), "search.objective.metric", "fit does not log \"val_acc\"; it logs: accuracy, loss"),
    (with_(**{"from": {"branch": "main", "step": 401}}), "search.from.step", "no checkpoint at step 401; restorable steps: 0, 200, 400"),
    (with_(**{"from": {"branch": "side", "step": 0}}), "search.from.branch", "no branch \"side\""),
    (with_(**{"from": {"branch": "main"}}), "search.from.step", "missing"),
    (with_(**{"from": "main@400"}), "search.from", "must be"),
    (with_(then="worst"), "search.then", "one of best, source"),
    (with_(objective={"metric": "val_loss", "mode": "lowest"}), "search.objective.mode", "one of min, max"),
    (with_(objective={"metric": "val_f2"}), "search.objective.mode", "missing; say \"min\" or \"max\""),
    (with_(objective="val_loss"), "search.objective", "must be"),
    (with_(id=""), "search.id", "non-empty string"),
    (with_(id=...), "search.id", "missing"),
    (with_(space=...), "search.space", "missing"),
    (with_(space={}), "search.space", "at least one hyperparameter"),
    (with_(steps_per_trial=0), "search.steps_per_trial", "between 1 and"),
    (with_(budget=3), "search.budget", "unknown key"),
    (with_(space__learning_rate__low=-1.0), "search.space.learning_rate.low", "must be >"),
    (with_(space__momentum__log=True), "search.space.momentum.low", "must be > 0 on a log scale, got 0.0"),
    (with_(space__learning_rate__step=0.01), "search.space.learning_rate.step", "not both"),
    (with_(space__learning_rate__log="yes"), "search.space.learning_rate.log", "true or false"),
    (with_(space__momentum__high=1.5), "search.space.momentum.high", "<= 1"),
    (with_(space__momentum={"low": 0.1}), "search.space.momentum.high", "missing"),
    (with_(space__momentum={"low": 0.1, "high": 0.5, "base": 2}), "search.space.momentum.base", "unknown key"),
    (with_(space__nesterov={"low": 0, "high": 1}), "search.space.nesterov", "takes choices"),
    (with_(space__nesterov={"choices": []}), "search.space.nesterov.choices", "a list of 1 to"),
    (with_(space__nesterov={"choices": [True, "no"]}), "search.space.nesterov.choices[1]", "true or false"),
    (with_(space__nesterov={"choices": [True, True]}), "search.space.nesterov.choices[1]", "listed twice"),
    (with_(space__momentum=[0.1, 0.9]), "search.space.momentum", "a range"),
    (with_(space={"clipnorm": {"low": 0.5, "high": 2.0}}), "search.space.clipnorm.low", ""),
    (with_(sampler="grid"), "search.space.learning_rate", "the grid sampler needs a step"),
    (with_(sampler="grid", space={"nesterov": {"choices": [True, False]}}), "search.trials",
     "the grid has 2 points, so with the baseline trial"),
]


@pytest.mark.parametrize("doc, key, words", BAD, ids=[f"{i}-{b[1]}" for i, b in enumerate(BAD)])
def test_a_bad_request_gets_one_error_naming_its_key(doc: dict[str, Any], key: str, words: str) -> None:
    known = dict(KNOWN)
    if key == "search.space.clipnorm.low":
        known["clipvalue"] = 0.5  # two clips at once: the control schema's own rule
    with pytest.raises(ControlError) as raised:
        parse_search(doc, known, CKPTS, METRICS)
    message = str(raised.value)
    assert message.startswith(key + ":"), message
    assert "search" in message and words in message, message
    if key == "search.objective.metric":
        return  # the logged metrics are the trainer's to check
    # Through the control file's schema, the same error.
    with pytest.raises(ControlError) as again:
        parse_control_object({"search": doc}, known, CKPTS)
    assert str(again.value) == message


def test_write_control_refuses_a_bad_search_and_writes_nothing(tmp_path: Any) -> None:
    folder = str(tmp_path)
    with open(os.path.join(folder, "retune-status.json"), "w") as f:
        json.dump({"hyperparameters": KNOWN, "checkpoints": CKPTS}, f)
    with pytest.raises(ControlError, match=r"^search\.from\.step: .*no checkpoint at step 401"):
        control_file.write_control(folder, {"search": with_(**{"from": {"branch": "main", "step": 401}})})
    assert not os.path.exists(os.path.join(folder, "retune.json"))
    written = control_file.write_control(folder, {"search": GOOD})
    assert written["search"]["id"] == "s-1"


def test_optuna_is_imported_only_when_a_search_runs() -> None:
    import subprocess

    code = ("import sys, tb_retune, tb_retune.experiment.search, tb_retune.experiment.control, "
            "tb_retune.plugin.loader, tb_retune.trainer.search; from tb_retune.cli import build_parser; "
            "build_parser(); print('optuna' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                         env={**os.environ, "PYTHONPATH": os.getcwd()})
    assert out.stdout.strip() == "False"
