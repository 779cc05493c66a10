"""Waiting on a condition with a deadline, for tests and benchmarks (never a bare sleep)."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any


class WaitTimeout(AssertionError, TimeoutError):
    """The condition did not hold by the deadline (an assertion in a test, a timeout elsewhere)."""


def wait_for(predicate: Callable[[], Any], timeout: float = 120.0, interval: float = 0.02, what: str = "") -> Any:
    """Calls ``predicate`` every ``interval`` seconds until it returns a true
    value, and returns that value; raises :class:`WaitTimeout` after ``timeout``."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(interval)
    raise WaitTimeout(f"timed out after {timeout:g}s waiting for {what or predicate}")
