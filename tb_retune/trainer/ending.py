"""The end of a run (``RetuneController.end``): what ended first, the last
branch's HParams session, the search's trial in progress, the final
checkpoint (a search worker keeps none: its trials are told), then the
threads and files closed. The controller keeps its own parts (lock,
watcher, cluster) and calls these two."""

from __future__ import annotations

import logging
from collections.abc import Callable

from tb_retune.experiment import atomic as _atomic
from tb_retune.trainer import search_host, worker
from tb_retune.trainer.session import Session

logger = logging.getLogger("tb_retune")


def finish(s: Session, state: str, error: str | None, *, sync_state: Callable[[], None]) -> None:
    """Records how the run ended and takes its final checkpoint."""
    # First what ended, so a failure below (a dead peer, a full disk) cannot hide it.
    s.status.update(state=state, error=error)
    if error:
        s.log(f"retune: training failed: {error}")
    if s.started and s.on_branch:
        try:
            s.end_hparams_session(state)
        except Exception as e:  # reads the optimizer: may fail after a crash
            logger.warning("retune: the HParams session of the last branch was not written: %s", e)
    search_host.close(s)
    if s.worker_spec is not None:
        worker.end(s, state, error)  # a worker keeps no final state: its trials are told
    elif state in ("finished", "stopped") and not s.resume_pending:
        sync_state()
        step = s.steps.sync()
        s.checkpoints.final(s.state.branch, step, s.state.node)


def close(s: Session, *, sync_now: bool) -> None:
    """Stops the session's threads and closes its files; the last state and
    status are written (fsynced later by the checkpoint writer's last job,
    which the interpreter waits for at exit, unless ``sync_now``)."""
    try:
        s.checkpoints.flush()  # the final checkpoint is durable
        s.store.free_buffers()  # the spare snapshot buffer is as large as the model's state
    finally:
        try:
            s.status.stop(wait=sync_now)  # at exit, nothing is left running
            if s.started:  # a refused start leaves the folder as it was
                s.publish(durable=sync_now)
            s.records.close()
        finally:
            if s.started and not sync_now:
                paths = [s.state.path, s.status.path]
                s.checkpoints.close(then=lambda: _atomic.fsync_paths(paths),
                                    what="making the last state and status durable")
            else:
                s.checkpoints.close()
