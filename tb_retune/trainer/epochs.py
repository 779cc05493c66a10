"""The end of an epoch, and the scalars logged with it: what
``RetuneController.end_epoch`` and ``log_scalars`` do with the session
(the controller syncs the state before and plans the next boundary after)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from tb_retune.trainer import search_host
from tb_retune.trainer.session import Session


def log_scalars(s: Session, step: int, logs: Mapping[str, Any]) -> None:
    """The metrics of ``step`` with the hyperparameters in force, and to a running search."""
    s.records.scalars(step, logs, s.hyperparameters_now)
    search_host.note_logs(s, logs)


def end(s: Session, epoch: int, logs: Mapping[str, Any] | None, *, complete: bool) -> None:
    """Scalars, the epoch counted (unless ``complete`` is False: cut short by
    a stop, trained again on a resume) and the epoch checkpoint."""
    step = s.steps.sync()
    if logs:
        log_scalars(s, step, logs)
        s.hparams.saw(logs)
    s.hyperparameters_now()  # the status shows the value in force (a schedule's, too)
    s.fit_epoch = epoch + 1
    with s.state.lock:
        if complete:  # the branch's own count (a restore set it to the checkpoint's)
            s.state.epoch += 1
        branch_epochs = s.state.epoch
    if complete and s.on_branch:
        s.checkpoints.at_epoch_end(branch_epochs, s.state.branch, step, s.state.node)
    s.status.poke(soon=True)  # the epoch lives in the checkpoint; the status shows it soon
