"""Changes of hyperparameters made by someone else: recorded, never undone.

Other callbacks (``ReduceLROnPlateau``, ``LearningRateScheduler``, the
user's own) and the user's code between two ``fit`` calls set the
optimizer's hyperparameters too. At cheap moments (epoch begin and end, the
first batch of an epoch, our own batch boundaries, the start of a fit) the
values in force are compared with the ones last recorded; a difference is a
change like any other: a node of the tree (``reason: "external"``,
``set_by``: the callback's class when it can be told), an ``applied``
entry, a log line. The last one to set a value wins: when it overrides a
value that a person asked for in ``retune.json``, the person is told
(``errors`` in the status, the log, the tab).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from typing import Any

from tb_retune.experiment.control import describe_change, format_value
from tb_retune.trainer.session import Session

#: ``set_by`` for a change made between two ``fit`` calls.
BETWEEN_FITS = "your code between fit() calls"


def changed_values(s: Session) -> tuple[dict[str, Any], dict[str, Any]]:
    """(values recorded last, values in force) of the keys that differ."""
    now = s.handle.get()  # reads the learning-rate variable: never per batch
    with s.state.lock:
        known = dict(s.state.hyperparameters)
    skip = {"learning_rate"} if s.handle.has_schedule() else set()  # a schedule moves it by itself
    keys = [k for k in now if k in known and k not in skip and known[k] != now[k]]
    return {k: known[k] for k in keys}, {k: now[k] for k in keys}


SetBy = str | Callable[[Sequence[str]], str | None] | None


def record(s: Session, set_by: SetBy, step: int | None = None) -> bool:
    """Records a change made by someone else, if there is one; returns
    whether the train function must be traced again (a baked-in value).

    ``set_by``: who did it, or a function of the changed keys that tells.
    ``step``: the step in force when the caller has just read it (else the
    optimizer's is read, which is right only between batches)."""
    old, new = changed_values(s)
    if not new:
        return False
    with s.state.commit_lock:  # the status shows the change once it is recorded whole
        return _record(s, set_by, step, old, new)


def _record(s: Session, set_by: SetBy, step: int | None, old: dict[str, Any], new: dict[str, Any]) -> bool:
    step = s.steps.sync() if step is None else step
    if callable(set_by):
        set_by = set_by(sorted(new))
    after = s.hyperparameters_now()
    change = {k: [old[k], new[k]] for k in new}
    with s.state.lock:
        parent = s.state.node
        asked = dict(s.state.control_seen or {})
    record = s.records.open_node(reason="external", parent=parent, change=change, hps=after, step=step,
                                 extra={"set_by": set_by})
    s.records.hyperparameters(step, after)
    what = describe_change(old, new)
    who = set_by or "another callback or your code"
    s.state.add_applied({"time": time.time(), "step": step, "id": None, "kind": "external",
                         "node": record["id"], "set_by": set_by, "what": f"{what} (set by {who})"})
    s.log(f"retune: step {step} {what}, set by {who}")
    for k in new:
        if k in asked and asked[k] == old[k]:
            s.report_error(
                f"hyperparameters.{k}: your {format_value(old[k])} from retune.json was overridden by {who} "
                f"at step {step}; {format_value(new[k])} is in force now (the last one to set a value wins). "
                f"To apply yours again, set it again in the Retune tab or with `tb-retune set`, or remove "
                f"what changes it"
            )
    s.publish_known()
    s.publish()
    return any(k != "learning_rate" for k in new)
