"""What values a hyperparameter can take: ranges, types and float32, pure.

The control file's schema (:mod:`tb_retune.experiment.control`) checks every
``{name: value}`` object with :func:`validate_hyperparameters`, against the
optimizer's hyperparameters in force when they are known.

The optimizer keeps its floating-point hyperparameters as float32 (the
learning rate is a float32 variable; the others are baked into the traced
step as float32 constants), so a value must be one that float32 can hold:
``1e39`` becomes ``inf`` and ``1e-46`` becomes 0. Such values are refused,
naming the key and the value.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from typing import Any

from tb_retune._errors import ControlError
from tb_retune.experiment.strict_json import key_text

#: Largest finite float32.
FLOAT32_MAX = 3.4028234663852886e38
#: Smallest normal float32: nonzero values below it lose precision or become 0.
FLOAT32_TINY = 1.1754943508222875e-38
#: Integer hyperparameters (e.g. ``ns_steps``) must fit an int64.
INT64_MAX = 2**63 - 1

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
RANGES: dict[str, tuple[float, bool, float, bool, bool]] = {
    "learning_rate": (0.0, True, math.inf, False, False),
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

BOOL_HYPERPARAMETERS = frozenset({"nesterov", "amsgrad", "centered"})
_INT_HYPERPARAMETERS = frozenset({"ns_steps"})


def describe(value: Any) -> str:
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
    lo, lo_inc, hi, hi_inc, nullable = RANGES.get(
        name, (-math.inf, False, math.inf, False, False)
    )
    if value is None:
        if nullable:
            return None
        raise ControlError(f"{where}: must be a number, got null")
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ControlError(f"{where}: must be a number, got {describe(value)}")
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
        raise ControlError(f"{where}: must be {rule}{null_hint}, got {describe(value)}")
    return value


def check_float_range(where: str, value: float | int, *, dtype: str = "float32",
                      largest: float = FLOAT32_MAX, tiny: float = FLOAT32_TINY) -> None:
    """Refuses a value that a float variable of ``dtype`` cannot hold: the one rule
    for the schema (float32, the optimizer's default) and the trainer (the
    optimizer's real dtype, e.g. float16 under mixed precision)."""
    magnitude = abs(float(value))
    if magnitude > largest:
        raise ControlError(
            f"{where}: {format_value(float(value))} is too large for the optimizer's {dtype} "
            f"(at most {largest:.4g}), got {describe(value)}"
        )
    if 0 < magnitude < tiny:
        raise ControlError(
            f"{where}: {format_value(float(value))} is too small for the optimizer's {dtype}: below its "
            f"smallest normal number ({tiny:.4g}) it would be applied as 0 or without precision; "
            f"use 0 or a value >= {tiny:.4g}, got {describe(value)}"
        )


def _check_dtype(where: str, value: float | int, integer: bool) -> None:
    """Refuses a value that the optimizer's dtype (float32, or int64) cannot hold."""
    if integer:
        if abs(value) > INT64_MAX:
            raise ControlError(f"{where}: must fit a 64-bit integer, got {describe(value)}")
        return
    check_float_range(where, value)


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
        raise ControlError(f"{where}: must be an object of name: value, got {describe(values)}")
    out: dict[str, Any] = {}
    for name, value in values.items():
        key = f"{where}.{key_text(str(name))}"
        if name in FIXED_AT_BUILD:
            raise ControlError(
                f"{key}: {name} is fixed when the optimizer is built and cannot be "
                "changed during training"
            )
        if known is not None and name not in known:
            allowed = ", ".join(sorted(n for n in known if n not in FIXED_AT_BUILD))
            raise ControlError(
                f"{key}: unknown hyperparameter {describe(name)}; this optimizer has: {allowed}"
            )
        current = known.get(name) if known is not None else None
        if name in BOOL_HYPERPARAMETERS or isinstance(current, bool):
            if not isinstance(value, bool):
                raise ControlError(f"{key}: must be true or false, got {describe(value)}")
            out[name] = value
            continue
        if isinstance(current, str):
            raise ControlError(f"{key}: is not a number and cannot be changed, got {describe(value)}")
        checked = _check_number(key, name, value)
        integer = name in _INT_HYPERPARAMETERS or (
            isinstance(current, int) and not isinstance(current, bool) and name not in RANGES
        )
        if integer and checked is not None:
            if isinstance(checked, float) and not checked.is_integer():
                raise ControlError(f"{key}: must be an integer, got {describe(value)}")
            checked = int(checked)
        if checked is not None:
            _check_dtype(key, checked, integer)
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
