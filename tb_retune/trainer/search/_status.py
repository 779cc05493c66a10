"""``searches[id]`` of ``retune-status.json``, derived from the Optuna study.

The study (its user attributes and its trials' user attributes) is the one
record of a search; this module turns it into the status's shape, the
contract that the command line, the tab and scripts read:

```json
{"state": "running", "source": {"branch": "main", "step": 400},
 "trials": [{"number": 0, "branch": "main-s-1-t0", "hyperparameters": {...}, "value": 0.41,
             "state": "complete", "worker": {"host": "box", "pid": 4242}, ...}],
 "best": {"number": 0, "branch": "main-s-1-t0", "value": 0.41, "hyperparameters": {...}}}
```
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

from tb_retune.trainer.search import _allot

#: Optuna's trial states as the status names them (a WAITING trial is not listed).
STATES = {"RUNNING": "running", "COMPLETE": "complete", "PRUNED": "pruned", "FAIL": "failed"}

#: Study user attributes that the engine writes.
ATTR_REQUEST = "request"
ATTR_FINGERPRINT = "fingerprint"
ATTR_SOURCE = "source"
ATTR_STATE = "state"
ATTR_OUTCOME = "outcome"
ATTR_MODE = "mode"
#: ``{heartbeat_interval, grace_period}``: the heartbeat every process uses for the search's trials.
ATTR_HEARTBEAT = "heartbeat"
#: Numbers of the trials that a killed trainer left running, as versions before
#: the trial-level rules (``_allot``) recorded them; still read.
ATTR_INTERRUPTED = "interrupted"


def _finite(value: Any) -> float | None:
    return float(value) if isinstance(value, (int, float)) and math.isfinite(value) else None


def trial_entry(trial: Any, interrupted: frozenset[int] = frozenset()) -> dict[str, Any] | None:
    """One trial of ``searches[id].trials``; None for a trial not yet started
    or never run (surplus: asked at once with another process's last one)."""
    state = STATES.get(trial.state.name)
    if state is None or trial.user_attrs.get(_allot.ATTR_SURPLUS):
        return None
    attrs = trial.user_attrs
    entry: dict[str, Any] = {
        "number": trial.number,
        "branch": attrs.get("branch"),
        "hyperparameters": dict(attrs.get("hyperparameters") or trial.params),
        "value": _finite(trial.value) if state == "complete" else None,
        "state": state,
        "worker": attrs.get("worker"),
        "baseline": bool(attrs.get("baseline")),
        "step": attrs.get("step", trial.last_step),
        "started": trial.datetime_start.timestamp() if trial.datetime_start else None,
        "ended": trial.datetime_complete.timestamp() if trial.datetime_complete else None,
    }
    if trial.number in interrupted or _allot.is_lost(trial):
        entry["interrupted"] = True  # lost (its process died or stopped): not counted, run again
    if attrs.get("retry_of") is not None:
        entry["retry_of"] = attrs["retry_of"]
    if attrs.get("reason"):
        entry["reason"] = attrs["reason"]
    return entry


def best_of(entries: Sequence[Mapping[str, Any]], mode: str) -> dict[str, Any] | None:
    """The complete trial with the best value (the lowest number on a tie)."""
    done = [e for e in entries if e["state"] == "complete" and e["value"] is not None]
    if not done:
        return None
    sign = 1.0 if mode == "min" else -1.0
    best = min(done, key=lambda e: (sign * e["value"], e["number"]))
    return {"number": best["number"], "branch": best["branch"], "value": best["value"],
            "hyperparameters": dict(best["hyperparameters"])}


def search_entry(study_attrs: Mapping[str, Any], trials: Sequence[Any]) -> dict[str, Any]:
    """``searches[id]`` for a study's user attributes and its trials."""
    request = study_attrs.get(ATTR_REQUEST) or {}
    source = study_attrs.get(ATTR_SOURCE) or {}
    objective = request.get("objective") or {}
    mode = study_attrs.get(ATTR_MODE) or objective.get("mode") or "min"
    interrupted = frozenset(study_attrs.get(ATTR_INTERRUPTED) or [])
    entries = [e for e in (trial_entry(t, interrupted) for t in trials) if e is not None]
    entries.sort(key=lambda e: e["number"])
    entry: dict[str, Any] = {
        "state": study_attrs.get(ATTR_STATE, "running"),
        "source": {"branch": source.get("branch"), "step": source.get("step")},
        "trials": entries,
        "best": best_of(entries, mode),
        "total": request.get("trials"),
        "steps_per_trial": request.get("steps_per_trial"),
        "objective": {"metric": objective.get("metric"), "mode": mode},
        "sampler": request.get("sampler", "tpe"),
        "pruner": request.get("pruner", "none"),
        "then": request.get("then", "best"),
    }
    outcome = study_attrs.get(ATTR_OUTCOME)
    if outcome:
        entry["outcome"] = outcome
    return entry
