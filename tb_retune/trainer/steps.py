"""Step counting: ``optimizer.iterations`` read at boundaries, counted between.

Reading a variable costs a device sync; the batch loop counts calls of the
train function instead and re-reads the variable only when something is due
(a change, a restore, a checkpoint, a schedule entry).
"""

from __future__ import annotations

from typing import Any


def read_iterations(optimizer: Any) -> int:
    """The optimizer's global step as a Python int (a variable read)."""
    from tb_retune.trainer.backend import to_int

    return to_int(optimizer.iterations, "optimizer.iterations")


class StepCounter:
    """The global step: the last value read plus the train calls since then."""

    def __init__(self, optimizer: Any, steps_per_call: int = 1) -> None:
        self.optimizer = optimizer
        self.steps_per_call = max(1, int(steps_per_call or 1))
        self.known = 0
        self.calls = 0

    def current(self) -> int:
        return self.known + self.calls * self.steps_per_call

    def sync(self) -> int:
        """Reads ``optimizer.iterations`` (not per batch)."""
        self.known = read_iterations(self.optimizer)
        self.calls = 0
        return self.known
