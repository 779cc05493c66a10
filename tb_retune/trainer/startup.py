"""Starting a run: a fresh experiment, or resuming one from its checkpoint.

A resume starts from the newest usable checkpoint of the branch in force and
rolls the trainer's bookkeeping back to it: the node, the control values
taken, the schedule entries fired and the node numbering of that branch are
those saved with the checkpoint. Whatever was applied after it (and lost in
the crash) is applied again from ``retune.json``, so nothing the status
called applied is lost. ``resume=False`` on a folder that already holds an
experiment is refused: a second run's nodes would mix with the first's.
"""

from __future__ import annotations

import os
from typing import Any

from tb_retune._errors import CheckpointError, ExperimentExistsError
from tb_retune.experiment.control import CHECKPOINTS_DIRNAME
from tb_retune.trainer import notes
from tb_retune.trainer.changes import put_in_force
from tb_retune.trainer.checkpoints import CheckpointInfo
from tb_retune.trainer.session import Session
from tb_retune.trainer.summaries import truncate_run


def existing_experiment(s: Session) -> list[str]:
    """What in the folder shows an earlier run (empty for a new folder)."""
    found = []
    if s.state.exists():
        found.append(os.path.basename(s.state.path))
    branches = sorted(s.store.steps())
    if branches:
        found.append(f"checkpoints of {', '.join(branches)}")
    return found


def start(s: Session) -> bool:
    """Starts or resumes; returns whether the train function must be retraced."""
    had_state = s.state.load()
    found = existing_experiment(s)
    if found and not s.options.resume:
        raise ExperimentExistsError(
            f"{s.logdir} already holds an experiment ({'; '.join(found)}); resume=False would mix a new "
            "run's nodes with the old ones. Pass resume=True to continue it, or use a new logdir "
            "(or delete this folder) to start over."
        )
    if had_state and s.store.infos(s.state.branch):
        return prepare_resume(s)
    if s.store.steps() and not had_state:
        raise ExperimentExistsError(
            f"{s.logdir} holds checkpoints but no trainer state ({os.path.basename(s.state.path)}), so "
            "its branches and nodes cannot be continued; use a new logdir, or delete the folder to start over."
        )
    fresh_start(s, keep_errors=had_state)
    return False


def fresh_start(s: Session, *, keep_errors: bool) -> None:
    st = s.state
    with st.lock:
        errors = list(st.errors) if keep_errors else []
        seq = dict(st.node_seq)
    if seq:
        # An earlier run that never reached a checkpoint: its points are
        # replaced by this one's, from step 0.
        for branch in seq:
            run = os.path.join(s.logdir, branch)
            if branch != CHECKPOINTS_DIRNAME and os.path.isdir(run):
                truncate_run(run, 0)
    fresh = type(st)(s.logdir)
    with st.lock:
        for key, value in vars(fresh).items():
            if key not in ("lock", "commit_lock", "_save_lock", "path", "_tmp_dir", "_saved"):
                setattr(st, key, value)
        st.errors = errors
        step = s.steps.sync()
        st.branch = "main"
        st.branches = {"main": {"parent_node": None, "start_step": step}}
    s.records.open("main", step)
    hps = s.hyperparameters_now()
    with st.lock:
        st.lr_schedule = s.handle.schedule_config()
    s.plan_epochs("main", 0)
    # The root node is in force now; its environment (git: two subprocesses)
    # and its record, then the state, then the step-0 checkpoint are written
    # in that order on the writer's thread: a kill at any point leaves a state
    # that a restart takes up (no checkpoint without the state that names it).
    s.records.open_node(reason="root", parent=None, change={}, hps=hps, step=step, late=True)
    s.records.hyperparameters(step, hps)
    s.later(s.save_state, "the trainer state")
    s.start_status_later()  # the first status after the state, before the checkpoint
    if not s.take_checkpoint("branch", step):
        s.checkpoints.deferred = "branch"  # a subclassed model: once its first step built it


def prepare_resume(s: Session) -> bool:
    """Resumes now, or (a model built by its first step) at the first boundary."""
    infos = s.store.infos(s.state.branch)
    if s.checkpoints.ready():
        return finish_resume(s)
    meta, _ = s.store.read_arrays(infos[-1])
    with s.state.lock:
        s.state.epoch = int(meta.get("epoch", 0))
    s.initial_epoch = s.fit_epoch = s.state.epoch
    s.plan_epochs(s.state.branch, s.state.epoch)
    s.resume_pending = True
    s.log(f"retune: the model is built by its first step; resuming branch {s.state.branch} from its "
          "checkpoint right after it (that first batch is trained again from the checkpoint)")
    return False


def _load_newest_usable(s: Session, branch: str) -> tuple[CheckpointInfo, dict[str, Any]]:
    infos = s.store.infos(branch)
    for info in reversed(infos):
        try:
            return info, s.store.load(s.model, s.optimizer, info)
        except CheckpointError as e:
            s.report_error(f"resume: passed over a bad checkpoint: {e}; trying the checkpoint before it")
        finally:
            s.handle.forget()  # the optimizer's variables were assigned (some, when it failed)
    raise CheckpointError(
        f"resume: none of the {len(infos)} checkpoints of branch {branch!r} in {s.store.folder} can be "
        "loaded into this model (see the errors above); use a new logdir, or delete the folder to start over"
    )


def finish_resume(s: Session) -> bool:
    st = s.state
    s.resume_pending = False
    with st.lock:
        branch = st.branch
        seq_before = st.node_seq.get(branch, 0)
    info, meta = _load_newest_usable(s, branch)
    forked = meta.get("branch", branch) != branch  # the branch's first checkpoint, a link to its source
    with st.lock:
        start = st.branches.get(branch) or {}
        st.epoch = int(meta.get("epoch", 0))
        node = info.node
        if forked:
            hps = dict(start.get("hyperparameters") or meta.get("hyperparameters") or {})
            control_seen = start.get("control_seen", st.control_seen)
            node_start = info.step
            fired: list[str] = []
        else:
            hps = dict(meta.get("hyperparameters") or {})
            control_seen = meta.get("control_seen", st.control_seen)
            node_start = int(meta.get("node_start", st.node_start if st.node == node else info.step))
            fired = list(meta.get("schedule_fired", s.schedule.fired_on(branch)))
        if "control_seen" in meta or forked:
            st.control_seen = control_seen
            st.stop_seen = bool(meta.get("stop_seen", st.stop_seen)) if not forked else st.stop_seen
        st.node = node
        st.node_start = node_start
        if node.startswith(branch + "-") and node[len(branch) + 1:].isdigit():
            st.node_seq[branch] = int(node[len(branch) + 1:])
        record = st.node_records.get(node)
    s.schedule.roll_back(branch, fired)
    # The schedule in force at the checkpoint (a branch's first one: at its restore).
    source = start if forked and "learning_rate_schedule" in start else meta
    put_in_force(s, "resume", hps, schedule_known="learning_rate_schedule" in source,
                 schedule=source.get("learning_rate_schedule"))
    step = s.steps.sync()
    dropped = truncate_run(os.path.join(s.logdir, branch), step)
    s.records.open(branch, step, keep_start_step=True)  # the points at `step` stay: nothing logs them again
    with st.lock:
        recorded = dict(st.notes_recorded)
    notes.rewrite_notes(s.records.writer, recorded, step)  # the resume cut the events after `step`
    # Re-emit the node in force when it started at the resume step: its
    # record was dropped with the points from there on.
    if record is not None and int(record.get("step", -1)) >= step:
        s.records.write_record(record)
    hps_now = s.hyperparameters_now()
    s.records.hyperparameters(step, hps_now)
    _mark_lost(s, branch, seq_before, step)
    with st.lock:
        st.lr_schedule = s.handle.schedule_config()
    s.initial_epoch = s.fit_epoch = st.epoch
    s.plan_epochs(branch, st.epoch)
    s.publish()
    s.log(f"retune: resumed branch {branch} at step {step} (node {node}) from {os.path.basename(info.path)}"
          + (f"; dropped {dropped} logged points after it" if dropped else ""))
    return True


def _mark_lost(s: Session, branch: str, seq_before: int, step: int) -> None:
    """Marks the changes that the crash took back (their nodes are gone)."""
    with s.state.lock:
        seq = s.state.node_seq.get(branch, 0)
        if seq >= seq_before:
            return
        lost = {f"{branch}-{n}" for n in range(seq + 1, seq_before + 1)}
        for entry in s.state.applied:
            if entry.get("node") in lost and "lost" not in entry:
                entry["lost"] = (f"the trainer stopped before the checkpoint after this change was durable; "
                                 f"resumed at step {step}, and applied again if retune.json still asks for it")
