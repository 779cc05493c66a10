"""Lost trials of a search: those whose process died, was killed, or whose
``fit`` ended inside them. Each is failed without a ``reason`` (``_allot``:
not counted) and queued again with the same settings."""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from tb_retune.trainer.search._trials import SearchRun

logger = logging.getLogger("tb_retune")


def take_over_interrupted(run: SearchRun) -> None:
    """Fails the trials that a killed trainer left running and queues
    them again with the same settings (``_allot``: a lost trial, then its
    retry): the total stays ``trials``. A worker's trial is left to
    Optuna's heartbeat."""
    from optuna.trial import TrialState

    for t in run.study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
        if t.user_attrs.get("role", "trainer") != "trainer":
            continue  # a worker's: Optuna's heartbeat is its judge
        lose(run, t.number, t)


def lose(run: SearchRun, number: int, frozen: Any) -> None:
    """Fails a trial as lost (no ``reason``) and queues its retry."""
    from optuna.trial import TrialState

    from tb_retune.trainer.search._heartbeat import retry_lost

    run.study.tell(number, state=TrialState.FAIL, skip_if_finished=True)
    retry_lost(run.study, frozen)


def abandon(run: SearchRun) -> None:
    """``fit`` ends inside a trial (or its process gives up on it): the
    trial is lost and queued again, for this process's next run or
    another process."""
    run.heartbeat.stop()
    trial, run.trial = run.trial, None
    if trial is None:
        return
    try:
        frozen = run.study._storage.get_trial(trial._trial_id)
        if not frozen.state.is_finished():
            lose(run, trial.number, frozen)
            run.host.log(f"retune: search {run.request.id} trial {trial.number} was cut short; "
                          "it is queued again")
            run._publish()
    except Exception:
        logger.warning("retune: cannot queue trial %s of search %s again", trial.number, run.request.id,
                       exc_info=True)
