"""Committing a change or a restore: the optimizer, the node, the records.

These run on the training thread at a batch boundary, after the revision
they come from was validated whole (``revisions``). A change closes the
node in force and opens a child node in the same branch; a restore loads a
checkpoint and opens the first node of a new branch.
"""

from __future__ import annotations

import os
import re
import time
from collections.abc import Mapping
from typing import Any

from tb_retune._errors import ControlError
from tb_retune.experiment.control import (
    CHECKPOINTS_DIRNAME,
    RestoreRequest,
    describe_change,
    validate_hyperparameters,
)
from tb_retune.trainer.session import Session

_SAFE = re.compile(r"[^A-Za-z0-9._-]+")


def safe_branch_name(name: str) -> str:
    """A readable, filesystem-safe branch name."""
    cleaned = _SAFE.sub("-", name).strip("-.")
    return cleaned[:60] or "branch"


def settable_values(s: Session, where: str, saved: Mapping[str, Any]) -> dict[str, Any]:
    """The saved values this optimizer can take; a bad one is reported and the
    optimizer's own value kept (one bad value never makes a run unstartable)."""
    known = s.handle.get()
    out: dict[str, Any] = {}
    for name, value in saved.items():
        if name not in known:
            continue
        try:
            checked = validate_hyperparameters(where, {name: value}, {**known, **out})
            s.handle.check_representable(where, checked)
        except ControlError as e:
            s.report_error(f"{e}; keeping the optimizer's {name}={known[name]!r}")
            continue
        out.update(checked)
    return out


def put_in_force(s: Session, where: str, hps: Mapping[str, Any], *, schedule_known: bool,
                 schedule: Mapping[str, Any] | None) -> bool:
    """Puts saved hyperparameters in force (a restore, a resume), the
    learning-rate schedule included: a schedule saved in force comes back as
    that schedule, not as the constant it had reached. Returns whether to retrace."""
    retrace = False
    values = dict(hps)
    if schedule_known and schedule is not None:
        try:
            retrace |= s.handle.install_schedule(schedule)
            values.pop("learning_rate", None)
        except ControlError as e:
            s.report_error(str(e))
    settable = settable_values(s, where, values)
    if settable:
        _, r = s.handle.set(settable)
        retrace |= r
    with s.state.lock:
        s.state.lr_schedule = s.handle.schedule_config()
    return retrace


def keep_state_before_change(s: Session, step: int) -> None:
    with s.state.lock:
        branch, node = s.state.branch, s.state.node
    s.checkpoints.keep_before_change(branch, step, node)


def apply_change(s: Session, values: Mapping[str, Any], *, reason: str) -> bool:
    """Applies the values not yet in force; returns whether to retrace.
    Nothing happens when all are in force already."""
    before = s.handle.get()
    wanted = {k: v for k, v in values.items() if before.get(k) != v}
    if not wanted:
        return False
    step = s.steps.known
    keep_state_before_change(s, step)
    try:
        old, retrace = s.handle.set(wanted)
    except Exception as e:
        s.handle.set({k: before[k] for k in wanted if k in before})
        raise ControlError(f"hyperparameters: {type(e).__name__}: {e}; nothing was changed") from None
    after = s.hyperparameters_now()
    with s.state.lock:
        s.state.lr_schedule = s.handle.schedule_config()
    what = describe_change(old, {k: after[k] for k in wanted})
    change = {k: [old.get(k), after[k]] for k in wanted if old.get(k) != after[k]}
    with s.state.lock:
        parent = s.state.node
    record = s.records.open_node(reason=reason, parent=parent, change=change, hps=after, step=step)
    s.records.hyperparameters(step, after)
    s.state.add_applied({"time": time.time(), "step": step, "id": None, "kind": reason,
                         "node": record["id"], "what": what})
    s.log(f"retune: step {step} {what}")
    s.publish_known()
    return retrace


def new_branch_name(s: Session, source: str, step: int, wanted: str | None = None) -> str:
    base = source if len(source) <= 40 else "b"
    name = safe_branch_name(wanted or f"{base}-s{step}")
    existing = set(s.store.steps())
    with s.state.lock:
        existing |= set(s.state.branches)
    existing |= {d for d in os.listdir(s.logdir) if os.path.isdir(os.path.join(s.logdir, d))}
    candidate, n = name, 2
    while candidate in existing or candidate == CHECKPOINTS_DIRNAME:
        candidate = f"{name}-{n}"
        n += 1
    return candidate


def apply_restore(s: Session, request: RestoreRequest, *, branch_name: str | None = None,
                  record_extra: Mapping[str, Any] | None = None) -> bool:
    """Loads the checkpoint at (branch, step) and starts a new branch from it
    (named ``branch_name`` or a free name near it; a search's trials)."""
    step = s.steps.known  # where the current branch is left
    left_branch = s.on_branch
    if left_branch:  # a search worker's first trial leaves no branch
        keep_state_before_change(s, step)
        s.end_hparams_session("left")
    # The checkpoint is named by (branch, step): resolve it once pending
    # writes and promotions are done, never through a path taken earlier.
    s.checkpoints.flush()
    info = s.store.find(request.branch, request.step)  # a search worker's may be new
    if info is None:
        raise ControlError(
            f"restore.step: branch {request.branch!r} has no checkpoint at step {request.step}; "
            f"restorable steps: {', '.join(map(str, s.store.steps().get(request.branch, []))) or 'none'}"
        )
    try:
        meta = s.store.load(s.model, s.optimizer, info)
    finally:
        s.handle.forget()  # the optimizer's variables were assigned (some, when it failed)
    retrace = put_in_force(s, "restore", dict(meta.get("hyperparameters") or {}),
                           schedule_known="learning_rate_schedule" in meta,
                           schedule=meta.get("learning_rate_schedule"))
    extra = dict(request.hyperparameters)
    if extra:
        _, r = s.handle.set(validate_hyperparameters("restore.hyperparameters", extra, s.handle.get()))
        retrace |= r
    try:
        s.model.reset_metrics()
    except Exception:
        pass
    new_branch = new_branch_name(s, info.branch, info.step, branch_name)
    with s.state.lock:
        old_branch = s.state.branch
        s.state.branch = new_branch
        s.state.epoch = int(meta.get("epoch", s.state.epoch))
    new_step = s.steps.sync()
    s.records.open(new_branch, new_step)
    hps = s.hyperparameters_now()
    parent_hps = meta.get("hyperparameters") or {}
    change = {k: [parent_hps.get(k), v] for k, v in hps.items() if parent_hps.get(k) != v}
    record = s.records.open_node(
        reason="restore", parent=info.node, change=change, hps=hps, step=new_step,
        request_id=request.id, restore={"branch": info.branch, "step": info.step, "node": info.node},
        extra=record_extra,
    )
    s.records.hyperparameters(new_step, hps)
    s.store.fork(info, branch=new_branch, node=record["id"])
    what = f"restored {info.branch}@{info.step} as branch {new_branch}"
    described = describe_change(parent_hps, {k: hps[k] for k in extra})
    if described:
        what += ", " + described
    plan = s.plan_epochs(new_branch, int(meta.get("epoch", 0)))
    if plan is not None and plan["left_for_a_restart"]:
        what += (f"; it starts at epoch {int(meta.get('epoch', 0))} of {plan['epochs']} and this fit gives it "
                 f"{plan['this_fit']} more; run the script again to train the other {plan['left_for_a_restart']}")
    with s.state.lock:
        s.state.add_restore_done(request.id)
        s.state.branches[new_branch] = {"parent_node": info.node, "start_step": new_step,
                                        "from": {"branch": info.branch, "step": info.step},
                                        "request_id": request.id, "hyperparameters": hps,
                                        "learning_rate_schedule": s.handle.schedule_config(),
                                        "control_seen": s.state.control_seen}
    s.state.add_applied({"time": time.time(), "step": new_step, "id": request.id, "kind": "restore",
                         "node": record["id"], "branch": new_branch, "from_branch": old_branch, "what": what})
    s.schedule.plan(new_branch)
    s.log(f"retune: step {step} {what}" if left_branch else f"retune: {what}")
    s.publish_known()
    return retrace
