"""One search in progress: its trials, one after another, through the host.

How a trial is measured (``docs/search.md``): a trial runs from the source
step S to its end step E = S + ``steps_per_trial``; every logged point of the
objective metric at a step S < s <= E is reported to Optuna at ``s - S``
(the pruner's input); at the first boundary at or after E the host evaluates
the metric on the end state, and that is the trial's value (its last logged
point if the host cannot evaluate). The baseline is never pruned.
"""

from __future__ import annotations

import logging
import math
import os
import socket
import time
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any

from tb_retune.experiment.search import SearchRequest
from tb_retune.trainer.search import _status
from tb_retune.trainer.search._host import NOTHING, Action, SearchDone, TrialEnd, TrialHost, TrialStart
from tb_retune.trainer.search._study import baseline_params, suggest

if TYPE_CHECKING:
    import optuna

logger = logging.getLogger("tb_retune")

#: Seconds between two looks at the study while other processes finish its last trials.
RECHECK_S = 1.0


class SearchRun:
    """A search's study and its trial in progress (training thread only).

    Args:
        request: The search.
        study: Its Optuna study (created, or loaded to resume).
        source: ``(branch, step)`` of the checkpoint every trial starts from.
        source_hps: The hyperparameters saved with that checkpoint.
        host: The trainer's side.
        publish: Called with the study after each change; returns its status entry.
    """

    def __init__(self, request: SearchRequest, study: optuna.Study, source: tuple[str, int],
                 source_hps: Mapping[str, Any], host: TrialHost,
                 publish: Callable[[optuna.Study], dict[str, Any]]) -> None:
        self.request = request
        self.study = study
        self.source = source
        self.source_hps = dict(source_hps)
        self.host = host
        self._publish_cb = publish
        self.over = False
        self.trial: optuna.trial.Trial | None = None
        self.baseline = False
        self.branch = ""
        self.end_step = 0
        self.last_point: tuple[int, float] | None = None
        self.metric_seen = False
        self._recheck_at = 0.0

    def _publish(self) -> dict[str, Any]:
        return self._publish_cb(self.study)

    def take_over_interrupted(self) -> None:
        """Fails the trials that a killed trainer left running and queues them
        again with the same settings: the total stays ``trials``."""
        from optuna.trial import TrialState

        interrupted = list(self.study.user_attrs.get(_status.ATTR_INTERRUPTED) or [])
        for t in self.study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
            if t.user_attrs.get("role", "trainer") != "trainer":
                continue  # a worker's: Optuna's heartbeat is its judge
            interrupted.append(t.number)
            self.study.set_user_attr(_status.ATTR_INTERRUPTED, interrupted)
            self.study.tell(t.number, state=TrialState.FAIL, skip_if_finished=True)
            baseline = bool(t.user_attrs.get("baseline"))
            if baseline or set(t.params) == set(self.request.space):
                self.study.enqueue_trial(dict(t.params), user_attrs={"baseline": baseline, "retry_of": t.number})

    def advance(self, step: int, logs: Mapping[str, Any] | None) -> Action:
        """One batch boundary: report a logged point, end the trial, start the next."""
        if self.trial is None:
            return self._next(None)
        start = self.source[1]
        ended: TrialEnd | None = None
        if logs and self.request.metric in logs:
            value = _as_float(logs[self.request.metric])
            if value is not None and start < step:
                self.metric_seen = True
                self.last_point = (step, value)
                self.trial.report(value, step - start)
                if not self.baseline and step < self.end_step and self.trial.should_prune():
                    ended = self._end(step, pruned=True)
        if ended is None and step >= self.end_step:
            ended = self._end(step, pruned=False)
        if ended is None:
            return NOTHING
        if self.over:  # the search failed at this trial's end
            return Action(ended=ended)
        return self._next(ended)

    def counted(self) -> int:
        """Trials that count towards ``trials``: all but the interrupted ones."""
        interrupted = set(self.study.user_attrs.get(_status.ATTR_INTERRUPTED) or [])
        return sum(1 for t in self.study.get_trials(deepcopy=False) if t.number not in interrupted)

    def _next(self, ended: TrialEnd | None) -> Action:
        from optuna.trial import TrialState

        if time.monotonic() < self._recheck_at:
            return Action(ended=ended)
        waiting = self.study.get_trials(deepcopy=False, states=(TrialState.WAITING,))
        if not waiting and self.counted() >= self.request.trials:
            running = self.study.get_trials(deepcopy=False, states=(TrialState.RUNNING,))
            if running:
                # Other processes still run trials of it: look again in a while, not at every batch.
                self._recheck_at = time.monotonic() + RECHECK_S
                return Action(ended=ended)
            return Action(ended=ended, done=self._finish())
        trial = self.study.ask()
        self.trial = trial  # from here on, a failure fails this trial too
        baseline = bool(trial.user_attrs.get("baseline"))
        # The baseline records in Optuna only the source's values that lie in the space.
        fixed = list(baseline_params(self.request, self.source_hps))
        params = suggest(trial, self.request, names=fixed if baseline else None)
        values = {name: self.source_hps.get(name) for name in self.request.space} if baseline else params
        hps = dict(self.source_hps)
        hps.update(values)
        src_branch, src_step = self.source
        trial.set_user_attr("worker", {"host": socket.gethostname(), "pid": os.getpid()})
        trial.set_user_attr("role", "trainer")
        trial.set_user_attr("hyperparameters", values)
        extra = {"search": {"id": self.request.id, "trial": trial.number, "baseline": baseline,
                            "hyperparameters": values}}
        branch = self.host.restore(src_branch, src_step, hps, f"{src_branch}-{self.request.id}-t{trial.number}",
                                   extra)
        trial.set_user_attr("branch", branch)
        self.baseline, self.branch = baseline, branch
        self.end_step = src_step + self.request.steps_per_trial
        self.last_point, self.metric_seen = None, False
        self._publish()
        what = "the source's own settings" if baseline else _describe(values)
        self.host.log(f"retune: search {self.request.id} trial {trial.number} ({what}) as branch {branch}")
        return Action(ended=ended, started=TrialStart(self.request.id, trial.number, branch, values, baseline))

    def _end(self, step: int, *, pruned: bool) -> TrialEnd:
        from optuna.trial import TrialState

        assert self.trial is not None
        trial, request = self.trial, self.request
        self.trial = None
        trial.set_user_attr("step", step)
        value: float | None = None
        reason = None
        if pruned:
            state = "pruned"
            self.study.tell(trial, state=TrialState.PRUNED)
        else:
            value = self._measure()
            if value is None:
                reason = (f"fit logged no {request.metric} in steps {self.source[1] + 1}-{step} and the trainer "
                          "could not evaluate it")
            elif not math.isfinite(value):
                reason = f"{request.metric} is {value} (the trial diverged)"
            end_branch, end_step = self.host.keep_checkpoint_now()
            trial.set_user_attr("end", {"branch": end_branch, "step": end_step})
            if reason is None:
                state = "complete"
                self.study.tell(trial, value)
            else:
                state, value = "failed", None
                trial.set_user_attr("reason", reason)
                self.study.tell(trial, state=TrialState.FAIL)
        record = {"search": {"id": request.id, "trial": trial.number, "baseline": self.baseline,
                             "state": state, "value": value, "step": step}}
        self.host.update_node_record(record)
        self._publish()
        shown = f"{request.metric} {value:.6g}" if value is not None else (reason or f"pruned at step {step}")
        self.host.log(f"retune: search {request.id} trial {trial.number} {state}: {shown}")
        if self.baseline and reason is not None and not self.metric_seen:
            logged = ", ".join(sorted(self.host.metrics() or [])) or "nothing yet"
            self.fail(f"search.objective.metric: search {request.id}: its first trial logged no "
                      f"{request.metric!r}; fit logs: {logged}")
        return TrialEnd(request.id, trial.number, self.branch, state, value, step)

    def _measure(self) -> float | None:
        try:
            value = self.host.evaluate(self.request.metric)
        except Exception as e:
            self.host.report_error(f"search {self.request.id}: evaluating {self.request.metric} failed: "
                                   f"{type(e).__name__}: {e}; using the last logged value")
            value = None
        if value is not None:
            return float(value)
        return self.last_point[1] if self.last_point is not None else None

    def _finish(self) -> SearchDone:
        entry = self._publish()
        best = entry["best"]
        request = self.request
        src_branch, src_step = self.source
        if request.then == "best" and best is not None:
            end = self.study.get_trials(deepcopy=False)[best["number"]].user_attrs.get("end") or {}
            if end.get("branch") is not None and end.get("step") is not None:
                from_branch, from_step = str(end["branch"]), int(end["step"])
            else:  # e.g. a worker that died after its last report
                self.host.log(f"retune: search {request.id}: the end state of the best trial "
                              f"{best['number']} is not recorded; going on from the source with its settings")
                from_branch, from_step = src_branch, src_step
            hps = dict(self.source_hps)
            hps.update(best["hyperparameters"])
            name = f"{src_branch}-{request.id}-best"
        else:
            if request.then == "best":
                self.host.log(f"retune: search {request.id}: no trial completed; going on from the source")
            from_branch, from_step, hps = src_branch, src_step, dict(self.source_hps)
            name = f"{src_branch}-{request.id}-{request.then}"
        extra = {"search": {"id": request.id, "then": request.then,
                            "trial": best["number"] if best is not None else None}}
        branch = self.host.restore(from_branch, from_step, hps, name, extra)
        outcome = {"branch": branch, "from": {"branch": from_branch, "step": from_step}, "time": time.time()}
        self.study.set_user_attr(_status.ATTR_OUTCOME, outcome)
        self.study.set_user_attr(_status.ATTR_STATE, "done")
        self.over = True
        self._publish()
        shown = (f"best trial {best['number']} ({request.metric} {best['value']:.6g})" if best is not None
                 else "no trial completed")
        self.host.log(f"retune: search {request.id} done: {shown}; training goes on as branch {branch}")
        return SearchDone(request.id, request.then, branch, from_branch, from_step, hps,
                          best["number"] if best is not None else None)

    def fail(self, message: str) -> None:
        """Ends the search as failed (its running trial too), reported through the host."""
        self.host.report_error(message)
        self.over = True
        try:
            if self.trial is not None:
                from optuna.trial import TrialState

                self.study.tell(self.trial, state=TrialState.FAIL, skip_if_finished=True)
            self.study.set_user_attr(_status.ATTR_STATE, "failed")
            self.study.set_user_attr(_status.ATTR_OUTCOME, {"error": message, "time": time.time()})
            self._publish()
        except Exception:
            logger.warning("retune: cannot record the failure of search %s", self.request.id, exc_info=True)


def _as_float(value: Any) -> float | None:
    try:
        return float(value)
    except (TypeError, ValueError):
        return None


def _describe(values: Mapping[str, Any]) -> str:
    from tb_retune.experiment.control import format_value

    return ", ".join(f"{k}={format_value(v)}" for k, v in values.items())
