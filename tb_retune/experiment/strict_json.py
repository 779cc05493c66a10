"""Strict, bounded JSON decoding of what a person or another process wrote.

:func:`json.loads` takes the last of two equal keys without a word, turns a
5,000-digit integer into a ``ValueError`` about Python's digit limit, and
recurses until ``RecursionError`` on deeply nested input. :func:`loads`
refuses each of these with a :class:`~tb_retune._errors.ControlError` that
names the key (``hyperparameters.learning_rate: given twice ...``) or the
depth, so the control file, the plugin's request bodies and the status file
all fail the same way, as a message a person can act on.
"""

from __future__ import annotations

import json
import re
from typing import Any

from tb_retune._errors import ControlError

#: Deepest nesting of arrays and objects accepted (a control file needs 4).
MAX_DEPTH = 32
#: Most digits of an integer (int64 has 19): longer ones are refused by key.
MAX_INT_DIGITS = 20
#: Longest key shown in a message.
MAX_KEY_CHARS = 80

# A JSON string (escapes included) or one bracket: what the depth scan sees.
_TOKENS = re.compile(r'"[^"\\]*(?:\\.[^"\\]*)*"|[\[\]{}]')


class _Marker:
    """A value that :func:`loads` refuses once it knows the value's key."""

    def __init__(self, problem: str) -> None:
        self.problem = problem


class _Pairs(dict):  # type: ignore[type-arg]
    """A decoded object that held a key twice (``dups``: key, first, last)."""

    dups: list[tuple[str, Any, Any]]


def key_text(key: str) -> str:
    """A key as messages show it: bounded, and quoted when it is not a plain name."""
    shown = key if re.fullmatch(r"[A-Za-z_][A-Za-z0-9_.-]*", key) else json.dumps(key)
    return shown if len(shown) <= MAX_KEY_CHARS else shown[: MAX_KEY_CHARS - 3] + "..."


def _join(path: str, key: str) -> str:
    return f"{path}.{key_text(key)}" if path else key_text(key)


def _value_text(value: Any) -> str:
    try:
        text = json.dumps(value, allow_nan=False)
    except (TypeError, ValueError):
        text = repr(value)
    return text if len(text) <= 40 else text[:37] + "..."


def depth_of(text: str, limit: int = MAX_DEPTH) -> int:
    """The nesting depth of JSON ``text``, counted no further than ``limit + 1``."""
    depth = deepest = 0
    for match in _TOKENS.finditer(text):
        token = match.group()
        if token in "[{":
            depth += 1
            if depth > deepest:
                deepest = depth
                if deepest > limit:
                    break
        elif token in "]}":
            depth -= 1
    return deepest


def _pairs(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    dups: list[tuple[str, Any, Any]] = []
    for key, value in pairs:
        if key in out:
            dups.append((key, out[key], value))
        out[key] = value
    if not dups:
        return out
    marked = _Pairs(out)
    marked.dups = dups
    return marked


def _int(text: str) -> Any:
    digits = len(text.lstrip("-"))
    if digits > MAX_INT_DIGITS:
        return _Marker(
            f"an integer of {digits} digits is out of range (at most {MAX_INT_DIGITS} digits); "
            "write a large number as a float, e.g. 1e30"
        )
    return int(text)


def _constant(name: str) -> Any:
    return _Marker(f"{name} is not valid JSON; use a finite number")


def _check(value: Any, path: str, what: str) -> None:
    """Raises for the first marker or duplicate key below ``value`` (depth-first)."""
    where = path or what
    if isinstance(value, _Marker):
        raise ControlError(f"{where}: {value.problem}")
    if isinstance(value, _Pairs):
        key, first, last = value.dups[0]
        raise ControlError(
            f"{_join(path, key)}: given twice in {what} ({_value_text(first)} and {_value_text(last)}); "
            "keep one"
        )
    if isinstance(value, dict):
        for key, item in value.items():
            _check(item, _join(path, key), what)
    elif isinstance(value, list):
        for i, item in enumerate(value):
            _check(item, f"{where}[{i}]", what)


def loads(text: str, *, what: str = "retune.json", max_depth: int = MAX_DEPTH) -> Any:
    """Decodes JSON ``text``, refusing what :func:`json.loads` lets through.

    Args:
        text: The JSON text.
        what: How messages name the input (``retune.json``, ``request body``).
        max_depth: Deepest nesting accepted; deeper input is refused before
            it is parsed, so no ``RecursionError`` can happen.

    Raises:
        ControlError: invalid JSON (with line and column), nesting deeper
            than ``max_depth``, a key given twice, an integer of more than
            :data:`MAX_INT_DIGITS` digits, or NaN/Infinity; the message
            names the key (``hyperparameters.learning_rate: ...``).
    """
    depth = depth_of(text, max_depth)
    if depth > max_depth:
        raise ControlError(
            f"{what}: nested deeper than {max_depth} levels of arrays and objects "
            f"(found at least {depth}); write a flat object such as "
            "{\"hyperparameters\": {\"learning_rate\": 0.001}}"
        )
    try:
        doc = json.loads(text, object_pairs_hook=_pairs, parse_int=_int, parse_constant=_constant)
    except json.JSONDecodeError as e:
        raise ControlError(f"{what}: invalid JSON at line {e.lineno} column {e.colno}: {e.msg}") from None
    except (ValueError, RecursionError) as e:  # not expected after the checks above
        raise ControlError(f"{what}: cannot be decoded as JSON: {str(e)[:200]}") from None
    _check(doc, "", what)
    return doc
