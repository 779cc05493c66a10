"""A second ``fit`` with the same callback: the experiment goes on in memory.

Keras's ``fit(epochs=3)`` called again trains 3 more epochs, counted from
its ``initial_epoch``, with the model and the optimizer as the first ``fit``
left them, including whatever the user's code set in between. The same
controller therefore continues its branch where it ended, without loading a
checkpoint (that would undo the user's settings) and without moving
``fit``'s epoch counter; what changed in between is recorded as a change
(``external``), never undone. Only a new process resumes from a checkpoint
(``startup``).
"""

from __future__ import annotations

from typing import Any

from tb_retune.trainer import external
from tb_retune.trainer.session import Session


def continues(previous: Session | None, model: Any, optimizer: Any) -> bool:
    """Whether a new ``begin`` continues ``previous`` (same model and optimizer)."""
    return previous is not None and previous.model is model and previous.optimizer is optimizer


def continue_run(s: Session) -> bool:
    """Carries on the branch in force from the step the optimizer is at.

    Returns whether the train function must be traced again."""
    if not s.state.load():
        return False
    step = s.steps.sync()
    with s.state.lock:
        branch = s.state.branch
        s.state.lr_schedule = s.handle.schedule_config()
    s.records.open(branch, step)
    s.schedule.plan(branch)
    retrace = external.record(s, external.BETWEEN_FITS)
    s.publish()
    s.log(f"retune: fit continues branch {branch} at step {step}")
    return retrace
