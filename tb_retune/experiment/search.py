"""The ``search`` request of the control file: parsing and validation, pure.

A search asks the trainer to try ``trials`` settings of the optimizer's
hyperparameters from one checkpoint (``from``), ``steps_per_trial`` steps
each, and to go on with the best (``then``). This module only checks the
request; it does no I/O and imports no Optuna, so the plugin, the command
line and the trainer validate a search the same way. Every error names the
key, starting with ``search``, and the value received.

Example:

```python
request = parse_search({"id": "s-1", "space": {"learning_rate": {"low": 1e-4, "high": 0.3, "log": True}},
                        "trials": 8, "steps_per_trial": 200, "objective": {"metric": "val_loss"}},
                       known={"learning_rate": 0.01}, metrics=["loss", "val_loss"])
```
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math
from collections.abc import Iterable, Mapping
from typing import Any

from tb_retune._errors import ControlError
from tb_retune.experiment.control import _check_int_step, _check_keys
from tb_retune.experiment.values import BOOL_HYPERPARAMETERS, RANGES, validate_hyperparameters
from tb_retune.experiment.values import describe as _describe

#: The journal of every search of an experiment (``<experiment>/searches/journal.log``),
#: one Optuna study per search id.
SEARCH_DIRNAME = "searches"
JOURNAL_FILENAME = "journal.log"

SEARCH_KEYS = ("id", "from", "space", "trials", "steps_per_trial", "objective", "sampler", "pruner", "then")
FROM_KEYS = ("branch", "step")
RANGE_KEYS = ("low", "high", "log", "step")
CHOICE_KEYS = ("choices",)
OBJECTIVE_KEYS = ("metric", "mode")

SAMPLERS = ("tpe", "random", "grid", "qmc")
PRUNERS = ("none", "median", "successive_halving", "hyperband")
THEN = ("best", "source")
MODES = ("min", "max")

#: Most trials one search may ask for, and most choices of one hyperparameter.
MAX_TRIALS = 10_000
MAX_CHOICES = 100

#: Metric names (without ``val_``) whose direction is known, for a missing ``mode``.
_MIN_SUFFIXES = ("loss", "error", "mae", "mse", "mape", "msle", "crossentropy", "perplexity")
_MAX_SUFFIXES = ("accuracy", "acc", "auc", "precision", "recall", "f1", "f1_score", "iou")


@dataclasses.dataclass(frozen=True)
class Range:
    """A range of values: ``low`` to ``high`` inclusive, optionally on a log
    scale or in steps of ``step``; ``integer`` when the hyperparameter is."""

    low: float
    high: float
    log: bool = False
    step: float | None = None
    integer: bool = False

    def grid(self) -> list[Any]:
        """The points of a range with a step (for the grid sampler)."""
        if self.step is None:
            raise ValueError("a range without step has no grid")
        n = int(math.floor((self.high - self.low) / self.step + 1e-9)) + 1
        points = [self.low + i * self.step for i in range(n)]
        if self.integer:
            return [int(round(p)) for p in points]
        return [float(f"{p:.12g}") for p in points]

    def contains(self, value: Any) -> bool:
        """Whether ``value`` is a point of the range (on its step, if any)."""
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not self.low <= value <= self.high:
            return False
        if self.integer and not float(value).is_integer():
            return False
        if self.step is None:
            return True
        k = (value - self.low) / self.step
        return abs(k - round(k)) < 1e-9


@dataclasses.dataclass(frozen=True)
class Choices:
    """A list of values to choose from."""

    choices: tuple[Any, ...]

    def grid(self) -> list[Any]:
        return list(self.choices)

    def contains(self, value: Any) -> bool:
        return any(type(c) is type(value) and c == value for c in self.choices)


Dimension = Range | Choices


@dataclasses.dataclass(frozen=True)
class SearchRequest:
    """One valid ``search`` request, immutable.

    ``source`` is ``(branch, step)``, or None for "the current state".
    """

    id: str
    source: tuple[str, int] | None
    space: Mapping[str, Dimension]
    trials: int
    steps_per_trial: int
    metric: str
    mode: str
    sampler: str
    pruner: str
    then: str
    raw: Mapping[str, Any]

    def fingerprint(self) -> str:
        """A stable digest of what the request asks (its id included), to tell
        a restart of the same search from a new search reusing an id."""
        doc = json.dumps(dict(self.raw), sort_keys=True, allow_nan=False)
        return hashlib.sha256(doc.encode("utf-8")).hexdigest()[:16]


def _where(*parts: str) -> str:
    return ".".join(("search",) + parts)


def _check_str(where: str, value: Any, what: str) -> str:
    if not isinstance(value, str) or not value or len(value) > 200:
        raise ControlError(f"{where}: must be {what} (a non-empty string), got {_describe(value)}")
    return value


def _check_count(where: str, value: Any, what: str, most: int) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or (
            isinstance(value, float) and not (math.isfinite(value) and value.is_integer())):
        raise ControlError(f"{where}: must be {what} (an integer >= 1), got {_describe(value)}")
    if not 1 <= value <= most:
        raise ControlError(f"{where}: must be {what} between 1 and {most}, got {_describe(value)}")
    return int(value)


def _check_choice(where: str, value: Any, allowed: tuple[str, ...], what: str) -> str:
    if value not in allowed:
        raise ControlError(f"{where}: unknown {what} {_describe(value)}; one of {', '.join(allowed)}")
    return str(value)


def default_mode(metric: str) -> str | None:
    """``min`` for losses and errors, ``max`` for accuracies; None when unknown."""
    name = metric[4:] if metric.startswith("val_") else metric
    if name.endswith(_MIN_SUFFIXES):
        return "min"
    if name.endswith(_MAX_SUFFIXES):
        return "max"
    return None


def _check_value(where: str, name: str, value: Any, known: Mapping[str, Any] | None) -> Any:
    """One value of hyperparameter ``name``, checked by the control schema's
    own rules (``learning_rate >= 0``, ``momentum <= 1``, booleans, ...), with
    the error naming ``where``."""
    try:
        return validate_hyperparameters("\0", {name: value}, known)[name]
    except ControlError as e:
        text = str(e)
        for prefix in (f"\0.{name}", "\0"):
            if text.startswith(prefix):
                raise ControlError(where + text[len(prefix):]) from None
        raise


def _parse_dimension(name: str, spec: Any, known: Mapping[str, Any] | None) -> Dimension:
    where = _where("space", name)
    current = known.get(name) if known is not None else None
    is_bool = name in BOOL_HYPERPARAMETERS or isinstance(current, bool)
    if known is not None and name not in known:
        # The schema's own message: names the key and lists what the optimizer has.
        validate_hyperparameters(_where("space"), {name: spec}, known)
    if not isinstance(spec, dict):
        raise ControlError(
            f"{where}: must be a range {{\"low\": ..., \"high\": ...}} or {{\"choices\": [...]}}, "
            f"got {_describe(spec)}"
        )
    if "choices" in spec:
        _check_keys(where, spec, CHOICE_KEYS)
        values = spec["choices"]
        if not isinstance(values, list) or not values or len(values) > MAX_CHOICES:
            raise ControlError(f"{where}.choices: must be a list of 1 to {MAX_CHOICES} values, "
                               f"got {_describe(values)}")
        checked: list[Any] = []
        for i, value in enumerate(values):
            one = _check_value(f"{where}.choices[{i}]", name, value, known)
            if any(type(c) is type(one) and c == one for c in checked):
                raise ControlError(f"{where}.choices[{i}]: {_describe(value)} is listed twice")
            checked.append(one)
        return Choices(tuple(checked))
    if is_bool:
        raise ControlError(f"{where}: {name} is true or false, so it takes choices, "
                           f"e.g. {{\"choices\": [true, false]}}; got {_describe(spec)}")
    _check_keys(where, spec, RANGE_KEYS)
    for key in ("low", "high"):
        if key not in spec:
            raise ControlError(f"{where}.{key}: missing; a range needs low and high "
                               "(or give choices instead)")
    bounds = {}
    for key in ("low", "high"):
        value = spec[key]
        checked_value = _check_value(f"{where}.{key}", name, value, known)
        if checked_value is None:
            raise ControlError(f"{where}.{key}: must be a number, got null")
        bounds[key] = checked_value
    low, high = bounds["low"], bounds["high"]
    if low > high:
        raise ControlError(f"{where}: low {_describe(low)} must be <= high {_describe(high)}")
    log = spec.get("log", False)
    if not isinstance(log, bool):
        raise ControlError(f"{where}.log: must be true or false, got {_describe(log)}")
    if log and low <= 0:
        raise ControlError(f"{where}.low: must be > 0 on a log scale, got {_describe(low)}")
    step = spec.get("step")
    if step is not None:
        if isinstance(step, bool) or not isinstance(step, (int, float)) or not math.isfinite(step) or step <= 0:
            raise ControlError(f"{where}.step: must be a number > 0, got {_describe(step)}")
        if log:
            raise ControlError(f"{where}.step: a range is either on a log scale or in steps, not both; "
                               "drop log or step")
    integer = (isinstance(current, int) and not isinstance(current, bool) and name not in RANGES)
    if integer and not all(float(v).is_integer() for v in (low, high, step if step is not None else 1)):
        raise ControlError(f"{where}: {name} is an integer, so low, high and step must be integers, "
                           f"got {_describe(spec)}")
    return Range(low=low, high=high, log=log, step=step, integer=integer)


def _grid_size(space: Mapping[str, Dimension]) -> int:
    size = 1
    for name, dim in space.items():
        if isinstance(dim, Range) and dim.step is None:
            raise ControlError(
                f"{_where('space', name)}: the grid sampler needs a step for a range "
                "(e.g. {\"low\": 0.0, \"high\": 0.9, \"step\": 0.1}) or choices"
            )
        size *= len(dim.grid())
    return size


def parse_search(
    value: Any,
    known: Mapping[str, Any] | None = None,
    checkpoints: Mapping[str, Iterable[int]] | None = None,
    metrics: Iterable[str] | None = None,
) -> SearchRequest:
    """Validates a ``search`` request.

    Args:
        value: The decoded ``search`` object of the control file.
        known: The optimizer's hyperparameters in force (name -> value), or
            None to check values only.
        checkpoints: Restorable steps per branch, or None to skip that check.
        metrics: The metrics that ``fit`` logs (``loss``, ``val_loss``, ...),
            or None to skip that check.

    Raises:
        ControlError: naming the key (``search.<key>``), the value and what is allowed.
    """
    if not isinstance(value, dict):
        raise ControlError(f"search: must be an object with id, space, trials, steps_per_trial and "
                           f"objective, got {_describe(value)}")
    _check_keys("search", value, SEARCH_KEYS)
    for key in ("id", "space", "trials", "steps_per_trial", "objective"):
        if key not in value:
            raise ControlError(f"{_where(key)}: missing; a search needs id, space, trials, "
                               "steps_per_trial and objective")
    sid = _check_str(_where("id"), value["id"], "the search's id")
    source = None
    if value.get("from") is not None:
        src = value["from"]
        if not isinstance(src, dict):
            raise ControlError(f"search.from: must be {{\"branch\": ..., \"step\": ...}}, got {_describe(src)}")
        _check_keys("search.from", src, FROM_KEYS)
        for key in FROM_KEYS:
            if key not in src:
                raise ControlError(f"search.from.{key}: missing; from needs branch and step "
                                   "(or leave from out to search from the current state)")
        branch = _check_str("search.from.branch", src["branch"], "a branch name")
        step = _check_int_step("search.from.step", src["step"])
        if checkpoints is not None:
            if branch not in checkpoints:
                names = ", ".join(sorted(checkpoints)) or "none yet"
                raise ControlError(f"search.from.branch: no branch {_describe(branch)} with checkpoints; "
                                   f"branches: {names}")
            steps = sorted(int(s) for s in checkpoints[branch])
            if step not in steps:
                shown = ", ".join(str(s) for s in steps[-20:]) or "none yet"
                raise ControlError(f"search.from.step: branch {_describe(branch)} has no checkpoint at step "
                                   f"{step}; restorable steps: {shown}")
        source = (branch, step)
    space_doc = value["space"]
    if not isinstance(space_doc, dict) or not space_doc:
        raise ControlError(f"search.space: must be an object of hyperparameter: range or choices, with at "
                           f"least one hyperparameter, got {_describe(space_doc)}")
    space = {name: _parse_dimension(name, spec, known) for name, spec in space_doc.items()}
    trials = _check_count("search.trials", value["trials"], "the number of trials", MAX_TRIALS)
    steps_per_trial = _check_count("search.steps_per_trial", value["steps_per_trial"],
                                   "the steps of each trial", 10**12)
    objective = value["objective"]
    if not isinstance(objective, dict):
        raise ControlError(f"search.objective: must be {{\"metric\": ..., \"mode\": \"min\" or \"max\"}}, "
                           f"got {_describe(objective)}")
    _check_keys("search.objective", objective, OBJECTIVE_KEYS)
    if "metric" not in objective:
        raise ControlError("search.objective.metric: missing; name a metric that fit logs, e.g. val_loss")
    metric = _check_str("search.objective.metric", objective["metric"], "a metric name")
    if metrics is not None:
        logged = sorted(set(metrics))
        if metric not in logged:
            raise ControlError(f"search.objective.metric: fit does not log {_describe(metric)}; it logs: "
                               f"{', '.join(logged) or 'nothing yet'}")
    mode = objective.get("mode")
    if mode is None:
        mode = default_mode(metric)
        if mode is None:
            raise ControlError(f"search.objective.mode: missing; say \"min\" or \"max\" for metric "
                               f"{_describe(metric)}")
    mode = _check_choice("search.objective.mode", mode, MODES, "mode")
    sampler = _check_choice("search.sampler", value.get("sampler", "tpe"), SAMPLERS, "sampler")
    pruner = _check_choice("search.pruner", value.get("pruner", "none"), PRUNERS, "pruner")
    then = _check_choice("search.then", value.get("then", "best"), THEN, "then")
    if sampler == "grid":
        points = _grid_size(space)
        if trials > points + 1:
            raise ControlError(f"search.trials: the grid has {points} points, so with the baseline trial "
                               f"(the source's own settings) at most {points + 1} trials, got {trials}")
    return SearchRequest(id=sid, source=source, space=space, trials=trials, steps_per_trial=steps_per_trial,
                         metric=metric, mode=mode, sampler=sampler, pruner=pruner, then=then,
                         raw=dict(value))
