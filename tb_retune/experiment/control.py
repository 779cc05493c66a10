"""The control file's schema: parsing and validation, pure (no I/O).

One schema in one place: the trainer, the plugin and the command line all
validate ``retune.json`` revisions with :func:`parse_control`, so a request
that the plugin accepts is one that the trainer will apply.
"""

from __future__ import annotations

import dataclasses
import json
import math
from collections.abc import Iterable, Mapping
from typing import Any

from tb_retune._errors import ControlError

CONTROL_FILENAME = "retune.json"
STATUS_FILENAME = "retune-status.json"
CHECKPOINTS_DIRNAME = "checkpoints"

#: Largest control file that is read at all; larger ones are refused unread.
MAX_CONTROL_BYTES = 256 * 1024

TOP_LEVEL_KEYS = ("hyperparameters", "restore", "schedule", "stop", "search")
RESTORE_KEYS = ("id", "branch", "step", "hyperparameters")
SCHEDULE_KEYS = ("at_step", "hyperparameters")

#: Hyperparameters that fix the optimizer's structure or bookkeeping when it
#: is built: they are reported but cannot be changed during training.
FIXED_AT_BUILD = frozenset(
    {
        "name",
        "use_ema",
        "ema_overwrite_frequency",
        "gradient_accumulation_steps",
        "loss_scale_factor",
    }
)

CLIP_KEYS = ("clipnorm", "clipvalue", "global_clipnorm")

# name -> (lower bound, lower inclusive, upper bound, upper inclusive, nullable)
_RANGES: dict[str, tuple[float, bool, float, bool, bool]] = {
    "learning_rate": (0.0, False, math.inf, False, False),
    "momentum": (0.0, True, 1.0, True, False),
    "beta_1": (0.0, True, 1.0, False, False),
    "beta_2": (0.0, True, 1.0, False, False),
    "rho": (0.0, True, 1.0, True, False),
    "epsilon": (0.0, False, math.inf, False, False),
    "ema_momentum": (0.0, True, 1.0, True, False),
    "weight_decay": (0.0, True, math.inf, False, True),
    "clipnorm": (0.0, False, math.inf, False, True),
    "clipvalue": (0.0, False, math.inf, False, True),
    "global_clipnorm": (0.0, False, math.inf, False, True),
    "initial_accumulator_value": (0.0, True, math.inf, False, False),
    "learning_rate_power": (-math.inf, False, 0.0, True, False),
    "l1_regularization_strength": (0.0, True, math.inf, False, False),
    "l2_regularization_strength": (0.0, True, math.inf, False, False),
    "l2_shrinkage_regularization_strength": (0.0, True, math.inf, False, False),
    "beta_2_decay": (-math.inf, False, 0.0, True, False),
    "epsilon_1": (0.0, False, math.inf, False, False),
    "epsilon_2": (0.0, False, math.inf, False, False),
    "lr_power": (-math.inf, False, 0.0, True, False),
    "ns_steps": (1.0, True, math.inf, False, False),
}

_BOOL_HYPERPARAMETERS = frozenset({"nesterov", "amsgrad", "centered"})

#: Short names used in edge labels (``lr 1e-3 → 3e-4 @ 1200``).
SHORT_NAMES = {
    "learning_rate": "lr",
    "momentum": "mom",
    "weight_decay": "wd",
    "epsilon": "eps",
    "global_clipnorm": "gclipnorm",
}


@dataclasses.dataclass(frozen=True)
class RestoreRequest:
    """A one-shot request to go back to ``step`` of ``branch``."""

    id: str
    branch: str
    step: int
    hyperparameters: Mapping[str, Any]


@dataclasses.dataclass(frozen=True)
class ScheduleEntry:
    at_step: int
    hyperparameters: Mapping[str, Any]

    def key(self) -> str:
        """A stable identity, used to fire each entry once per branch."""
        return json.dumps(
            {"at_step": self.at_step, "hyperparameters": dict(self.hyperparameters)},
            sort_keys=True,
        )


@dataclasses.dataclass(frozen=True)
class ControlRevision:
    """One valid revision of the control file, immutable."""

    hyperparameters: Mapping[str, Any]
    restore: RestoreRequest | None
    schedule: tuple[ScheduleEntry, ...]
    stop: bool
    raw: Mapping[str, Any]
    #: The ``search`` request (``tb_retune.experiment.search.SearchRequest``), or None.
    search: Any = None


def _describe(value: Any) -> str:
    text = json.dumps(value) if _json_safe(value) else repr(value)
    return text if len(text) <= 80 else text[:77] + "..."


def _json_safe(value: Any) -> bool:
    try:
        json.dumps(value, allow_nan=False)
    except (TypeError, ValueError):
        return False
    return True


def format_value(value: Any) -> str:
    """Formats a hyperparameter value the way the log and the tree show it."""
    if isinstance(value, bool) or value is None:
        return json.dumps(value)
    if isinstance(value, float):
        return f"{value:.6g}"
    return str(value)


def _check_number(where: str, name: str, value: Any) -> float | int | None:
    lo, lo_inc, hi, hi_inc, nullable = _RANGES.get(
        name, (-math.inf, False, math.inf, False, False)
    )
    if value is None:
        if nullable:
            return None
        raise ControlError(f"{where}: must be a number, got null")
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ControlError(f"{where}: must be a number, got {_describe(value)}")
    if isinstance(value, float) and not math.isfinite(value):
        raise ControlError(f"{where}: must be a finite number, got {value}")
    allowed = []
    if lo > -math.inf:
        allowed.append(f"{'>=' if lo_inc else '>'} {format_value(lo)}")
    if hi < math.inf:
        allowed.append(f"{'<=' if hi_inc else '<'} {format_value(hi)}")
    ok = (value > lo or (lo_inc and value == lo)) and (
        value < hi or (hi_inc and value == hi)
    )
    if not ok:
        rule = " and ".join(allowed)
        null_hint = " (or null to turn it off)" if nullable else ""
        raise ControlError(f"{where}: must be {rule}{null_hint}, got {_describe(value)}")
    return value


def validate_hyperparameters(
    where: str,
    values: Any,
    known: Mapping[str, Any] | None,
) -> dict[str, Any]:
    """Validates a ``{name: value}`` object.

    Args:
        where: The path of the object in the control file, for messages.
        values: The object to validate.
        known: The hyperparameters that the optimizer has, with their values
            in force, or None when they are not known (then only the values
            are checked).
    """
    if not isinstance(values, dict):
        raise ControlError(f"{where}: must be an object of name: value, got {_describe(values)}")
    out: dict[str, Any] = {}
    for name, value in values.items():
        key = f"{where}.{name}"
        if name in FIXED_AT_BUILD:
            raise ControlError(
                f"{key}: {name} is fixed when the optimizer is built and cannot be "
                "changed during training"
            )
        if known is not None and name not in known:
            allowed = ", ".join(sorted(n for n in known if n not in FIXED_AT_BUILD))
            raise ControlError(
                f"{key}: unknown hyperparameter {_describe(name)}; this optimizer has: {allowed}"
            )
        current = known.get(name) if known is not None else None
        if name in _BOOL_HYPERPARAMETERS or isinstance(current, bool):
            if not isinstance(value, bool):
                raise ControlError(f"{key}: must be true or false, got {_describe(value)}")
            out[name] = value
            continue
        if isinstance(current, str):
            raise ControlError(f"{key}: is not a number and cannot be changed, got {_describe(value)}")
        checked = _check_number(key, name, value)
        if isinstance(current, int) and not isinstance(current, bool) and name not in _RANGES:
            if isinstance(checked, float) and not checked.is_integer():
                raise ControlError(f"{key}: must be an integer, got {_describe(value)}")
            checked = int(checked) if checked is not None else None
        out[name] = checked
    merged = dict(known or {})
    merged.update(out)
    clips = [k for k in CLIP_KEYS if merged.get(k) is not None]
    if known is not None and len(clips) > 1:
        raise ControlError(
            f"{where}: only one of clipnorm, clipvalue and global_clipnorm can be set, "
            f"got {', '.join(f'{k}={format_value(merged[k])}' for k in clips)}; "
            "set the others to null"
        )
    return out


def _check_int_step(where: str, value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ControlError(f"{where}: must be a step number (an integer >= 0), got {_describe(value)}")
    if isinstance(value, float) and (not math.isfinite(value) or not value.is_integer()):
        raise ControlError(f"{where}: must be a step number (an integer >= 0), got {_describe(value)}")
    if value < 0:
        raise ControlError(f"{where}: must be a step number (an integer >= 0), got {_describe(value)}")
    return int(value)


def _check_keys(where: str, obj: Mapping[str, Any], allowed: Iterable[str]) -> None:
    allowed = tuple(allowed)
    for key in obj:
        if key not in allowed:
            raise ControlError(
                f"{where + '.' if where else ''}{key}: unknown key; allowed keys are {', '.join(allowed)}"
            )


def parse_restore(
    value: Any,
    known: Mapping[str, Any] | None,
    checkpoints: Mapping[str, Iterable[int]] | None,
) -> RestoreRequest:
    if not isinstance(value, dict):
        raise ControlError(f"restore: must be an object with id, branch and step, got {_describe(value)}")
    _check_keys("restore", value, RESTORE_KEYS)
    for key in ("id", "branch", "step"):
        if key not in value:
            raise ControlError(f"restore.{key}: missing; a restore needs id, branch and step")
    rid = value["id"]
    if not isinstance(rid, str) or not rid or len(rid) > 200:
        raise ControlError(f"restore.id: must be a non-empty string, got {_describe(rid)}")
    branch = value["branch"]
    if not isinstance(branch, str) or not branch:
        raise ControlError(f"restore.branch: must be a branch name, got {_describe(branch)}")
    step = _check_int_step("restore.step", value["step"])
    if checkpoints is not None:
        if branch not in checkpoints:
            names = ", ".join(sorted(checkpoints)) or "none yet"
            raise ControlError(
                f"restore.branch: no branch {_describe(branch)} with checkpoints; branches: {names}"
            )
        steps = sorted(int(s) for s in checkpoints[branch])
        if step not in steps:
            shown = ", ".join(str(s) for s in steps[-20:]) or "none yet"
            raise ControlError(
                f"restore.step: branch {_describe(branch)} has no checkpoint at step {step}; "
                f"restorable steps: {shown}"
            )
    hps = validate_hyperparameters(
        "restore.hyperparameters", value.get("hyperparameters", {}), known
    )
    return RestoreRequest(id=rid, branch=branch, step=step, hyperparameters=hps)


def parse_control_object(
    doc: Any,
    known: Mapping[str, Any] | None = None,
    checkpoints: Mapping[str, Iterable[int]] | None = None,
) -> ControlRevision:
    """Validates a decoded control document; raises ControlError if invalid."""
    if not isinstance(doc, dict):
        raise ControlError(
            f"retune.json: must be a JSON object like {{\"hyperparameters\": {{...}}}}, got {_describe(doc)}"
        )
    _check_keys("", doc, TOP_LEVEL_KEYS)
    hps = validate_hyperparameters("hyperparameters", doc.get("hyperparameters", {}), known)
    restore = None
    if doc.get("restore") is not None:
        restore = parse_restore(doc["restore"], known, checkpoints)
    schedule_doc = doc.get("schedule", [])
    if not isinstance(schedule_doc, list):
        raise ControlError(f"schedule: must be a list of {{at_step, hyperparameters}}, got {_describe(schedule_doc)}")
    schedule = []
    for i, entry in enumerate(schedule_doc):
        where = f"schedule[{i}]"
        if not isinstance(entry, dict):
            raise ControlError(f"{where}: must be an object with at_step and hyperparameters, got {_describe(entry)}")
        _check_keys(where, entry, SCHEDULE_KEYS)
        if "at_step" not in entry:
            raise ControlError(f"{where}.at_step: missing")
        at = _check_int_step(f"{where}.at_step", entry["at_step"])
        ehps = validate_hyperparameters(f"{where}.hyperparameters", entry.get("hyperparameters", {}), known)
        schedule.append(ScheduleEntry(at_step=at, hyperparameters=ehps))
    schedule.sort(key=lambda e: e.at_step)
    stop = doc.get("stop", False)
    if not isinstance(stop, bool):
        raise ControlError(f"stop: must be true or false, got {_describe(stop)}")
    search = None
    if doc.get("search") is not None:
        from tb_retune.experiment.search import parse_search  # it builds on this module

        search = parse_search(doc["search"], known, checkpoints)
    return ControlRevision(
        hyperparameters=hps, restore=restore, schedule=tuple(schedule), stop=stop, raw=doc, search=search
    )


def _reject_constant(name: str) -> float:
    raise ValueError(name)


def decode_control(data: bytes) -> Any:
    """Decodes the bytes of a control file, with errors a person can act on."""
    if len(data) > MAX_CONTROL_BYTES:
        raise ControlError(
            f"retune.json: file is {len(data)} bytes, larger than the limit of "
            f"{MAX_CONTROL_BYTES} bytes; keep only hyperparameters, restore, schedule and stop"
        )
    if not data.strip():
        raise ControlError("retune.json: the file is empty; write a JSON object such as {\"hyperparameters\": {\"learning_rate\": 0.001}}")
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as e:
        raise ControlError(f"retune.json: not UTF-8 text (byte {e.start}); write the file as JSON text") from None
    try:
        return json.loads(text, parse_constant=_reject_constant)
    except ValueError as e:
        if isinstance(e, json.JSONDecodeError):
            raise ControlError(
                f"retune.json: invalid JSON at line {e.lineno} column {e.colno}: {e.msg}"
            ) from None
        raise ControlError(f"retune.json: {e} is not valid JSON; use a finite number") from None


def parse_control(
    data: bytes,
    known: Mapping[str, Any] | None = None,
    checkpoints: Mapping[str, Iterable[int]] | None = None,
) -> ControlRevision:
    """Parses and validates the bytes of a control file.

    Args:
        data: The file's content.
        known: The optimizer's hyperparameters in force (name -> value); None
            to check values only.
        checkpoints: Restorable steps per branch; None to skip that check.

    Raises:
        ControlError: naming the key, the value and what is allowed.
    """
    return parse_control_object(decode_control(data), known, checkpoints)


def describe_change(old: Mapping[str, Any], new: Mapping[str, Any]) -> str:
    """``learning_rate 0.001 -> 0.0003, momentum 0.9 -> 0`` for the log."""
    parts = []
    for name in sorted(new):
        if name in old and old[name] == new[name]:
            continue
        parts.append(f"{name} {format_value(old.get(name))} -> {format_value(new[name])}")
    return ", ".join(parts)


def merge_control(current: Mapping[str, Any], update: Mapping[str, Any]) -> dict[str, Any]:
    """Merges a write into the control file's object.

    ``hyperparameters`` are merged key by key; ``restore``, ``schedule`` and
    ``stop`` replace what was there.
    """
    merged = dict(current)
    for key, value in update.items():
        if key == "hyperparameters" and isinstance(merged.get(key), dict):
            hp = dict(merged[key])
            hp.update(value)
            merged[key] = hp
        else:
            merged[key] = value
    return merged
