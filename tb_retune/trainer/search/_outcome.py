"""How a search ends: training goes on as ``then`` says, from the best
trial's end state (wherever it ran) or from the source."""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Mapping
from typing import TYPE_CHECKING

from tb_retune._errors import RetuneError
from tb_retune.trainer.search import _status
from tb_retune.trainer.search._host import SearchDone

if TYPE_CHECKING:
    from tb_retune.trainer.search._trials import SearchRun

logger = logging.getLogger("tb_retune")


def finish(run: SearchRun) -> SearchDone:
    list_other_processes_checkpoints(run)
    entry = run._publish()
    best = entry["best"]
    request = run.request
    src_branch, src_step = run.source
    if request.then == "best" and best is not None:
        end = run.study.get_trials(deepcopy=False)[best["number"]].user_attrs.get("end") or {}
        if end.get("branch") is not None and end.get("step") is not None:
            from_branch, from_step = str(end["branch"]), int(end["step"])
        else:  # e.g. a worker that died after its last report
            run.host.log(f"retune: search {request.id}: the end state of the best trial "
                          f"{best['number']} is not recorded; going on from the source with its settings")
            from_branch, from_step = src_branch, src_step
        hps = dict(run.source_hps)
        hps.update(best["hyperparameters"])
        name = f"{src_branch}-{request.id}-best"
    else:
        if request.then == "best":
            run.host.log(f"retune: search {request.id}: no trial completed; going on from the source")
        from_branch, from_step, hps = src_branch, src_step, dict(run.source_hps)
        name = f"{src_branch}-{request.id}-{request.then}"
    extra = {"search": {"id": request.id, "then": request.then,
                        "trial": best["number"] if best is not None else None}}
    try:
        branch = run.host.restore(from_branch, from_step, hps, name, extra)
    except RetuneError as e:
        if (from_branch, from_step) == (src_branch, src_step):
            raise
        # The best trial's end state cannot be read (another process's write was lost,
        # its disk filled): its settings from the source, rather than no outcome at all.
        run.host.report_error(f"search {request.id}: the end state of trial {best and best['number']} "
                               f"({from_branch}@{from_step}) cannot be restored ({e}); going on from the "
                               "source with its settings")
        from_branch, from_step = src_branch, src_step
        branch = run.host.restore(from_branch, from_step, hps, name, extra)
    outcome = {"branch": branch, "from": {"branch": from_branch, "step": from_step}, "time": time.time()}
    run.study.set_user_attr(_status.ATTR_OUTCOME, outcome)
    run.study.set_user_attr(_status.ATTR_STATE, "done")
    run.over = True
    run._publish()
    shown = (f"best trial {best['number']} ({request.metric} {best['value']:.6g})" if best is not None
             else "no trial completed")
    run.host.log(f"retune: search {request.id} done: {shown}; training goes on as branch {branch}")
    return SearchDone(request.id, request.then, branch, from_branch, from_step, hps,
                      best["number"] if best is not None else None)


def list_other_processes_checkpoints(run: SearchRun) -> None:
    """Makes the end states of the trials that workers ran known to this
    process's checkpoint index (restorable from the tab once the search is
    done): reading one is what lists its branch again."""
    mine = os.getpid()
    for t in run.study.get_trials(deepcopy=False):
        end, worker = t.user_attrs.get("end"), t.user_attrs.get("worker") or {}
        if isinstance(end, Mapping) and worker.get("pid") != mine and end.get("branch") is not None:
            try:
                run.host.checkpoint_hyperparameters(str(end["branch"]), int(end["step"]))
            except Exception as e:  # a missing file is the restore's to report, if it is the best
                logger.debug("retune: trial %s's end state: %s", t.number, e)
