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
import warnings
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any

from tb_retune.experiment.search import SearchRequest
from tb_retune.trainer.search import _allot, _lost, _outcome, _status
from tb_retune.trainer.search._host import NOTHING, Action, Leave, TrialEnd, TrialHost, TrialStart
from tb_retune.trainer.search._study import baseline_params, suggest

if TYPE_CHECKING:
    import optuna

logger = logging.getLogger("tb_retune")

#: Seconds between two readings of the study for the status while a trial runs.
PUBLISH_S = 2.0
#: Seconds between two judgements of the other processes' heartbeats.
RECHECK_S = 1.0
#: Seconds between two looks at the study while other processes finish its last trials.
WAIT_S = 0.25


class SearchRun:
    """A search's study and its trial in progress (training thread only).

    Args:
        request: The search.
        study: Its Optuna study (created, or loaded to resume).
        source: ``(branch, step)`` of the checkpoint every trial starts from.
        source_hps: The hyperparameters saved with that checkpoint.
        host: The trainer's side.
        publish: Called with the study after each change; returns its status entry.
        role: ``"trainer"``: the process that asked for the search; it waits
            for every trial and then goes on as ``then`` says. ``"worker"``:
            a process that joined it (``tb-retune worker``); it leaves when
            no trial is left to run.
    """

    def __init__(self, request: SearchRequest, study: optuna.Study, source: tuple[str, int],
                 source_hps: Mapping[str, Any], host: TrialHost,
                 publish: Callable[[optuna.Study], dict[str, Any]], *, role: str = "trainer") -> None:
        from tb_retune.trainer.search._heartbeat import TrialHeartbeat

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
        #: "trainer" (the process that asked for the search: it finishes it) or "worker".
        self.role = role
        self.heartbeat = TrialHeartbeat(study._storage)
        self._judged_at = -RECHECK_S
        self._published_at = time.monotonic()
        self._waiting_for: tuple[int, ...] = ()

    def _publish(self) -> dict[str, Any]:
        self._published_at = time.monotonic()
        return self._publish_cb(self.study)

    def take_over_interrupted(self) -> None:
        """Fails and queues again the trials a killed trainer left running (``_lost``)."""
        _lost.take_over_interrupted(self)

    def abandon(self) -> None:
        """``fit`` ends inside a trial: it is lost and queued again (``_lost``)."""
        _lost.abandon(self)

    def advance(self, step: int, logs: Mapping[str, Any] | None) -> Action:
        """One batch boundary: report a logged point, end the trial, start the next."""
        if self.trial is None:
            return self._next(None)
        now = time.monotonic()
        if now >= self._published_at + PUBLISH_S:
            self._publish()  # other processes' trials move too: the status shows them live
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
        """Trials that count towards ``trials`` (``_allot``), running ones included."""
        return len(_allot.counts(self.study.get_trials(deepcopy=False), self.request.trials))

    def _judge(self) -> None:
        """Fails the trials whose process stopped beating (Optuna's heartbeat)
        and so queues them again; at most once per ``RECHECK_S``."""
        now = time.monotonic()
        if now < self._judged_at + RECHECK_S:
            return
        self._judged_at = now
        import optuna

        with warnings.catch_warnings():
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)  # since Optuna 2.9
            optuna.storages.fail_stale_trials(self.study)

    def _next(self, ended: TrialEnd | None) -> Action:
        from optuna.trial import TrialState

        slots = self.request.trials
        while True:
            self._judge()
            trials = self.study.get_trials(deepcopy=False)
            waiting = [t for t in trials if t.state == TrialState.WAITING]
            if not waiting and _allot.slots_taken(trials, slots):
                missing = _allot.lost_without_retry(trials, slots)
                if missing:  # a process failed them and died before it queued them again
                    from tb_retune.trainer.search._heartbeat import retry_lost

                    for t in missing:
                        retry_lost(self.study, t)
                    continue
                counting = _allot.counts(trials, slots)
                running = [t for t in trials if t.state == TrialState.RUNNING and t.number in counting]
                if self.role == "worker":
                    why = ("the other trials run in other processes" if running
                           else "every trial is done")
                    return Action(ended=ended, leave=Leave(
                        "done", f"search {self.request.id}: no trial left to run; {why}"))
                if running:
                    # Other processes run its last trials: wait for them here, so the
                    # search goes on from the best of all, wherever it ran.
                    self._say_waiting(running)
                    if self.host.wait(WAIT_S):
                        continue
                    return Action(ended=ended)  # something else is due at this boundary
                return Action(ended=ended, done=_outcome.finish(self))
            if self.role == "worker":
                left = self.host.steps_left()
                if left is not None and left < self.request.steps_per_trial:
                    return Action(ended=ended, leave=Leave("no_steps", (
                        f"search {self.request.id}: this fit has {left} steps left, fewer than a trial's "
                        f"{self.request.steps_per_trial}")))
            with warnings.catch_warnings():
                # "Heartbeat of storage is supposed to be used with Study.optimize": we beat ourselves.
                warnings.filterwarnings("ignore", message="Heartbeat of storage")
                trial = self.study.ask()
            if not _allot.admitted(self.study._storage.get_trial(trial._trial_id),
                                   self.study.get_trials(deepcopy=False), slots):
                # Asked at the same time as another process's last trial: never run.
                trial.set_user_attr(_allot.ATTR_SURPLUS, True)
                self.study.tell(trial, state=TrialState.FAIL)
                continue
            return Action(ended=ended, started=self._start(trial))

    def _say_waiting(self, running: list[Any]) -> None:
        key = tuple(t.number for t in running)
        if key == self._waiting_for:
            return
        self._waiting_for = key
        where = ", ".join(f"{t.number} ({_where(t.user_attrs.get('worker'))})" for t in running)
        self.host.log(f"retune: search {self.request.id}: waiting for trials running in other processes: {where}")

    def _start(self, trial: optuna.trial.Trial) -> TrialStart:
        self.trial = trial  # from here on, a failure fails this trial too
        self._waiting_for = ()
        self.heartbeat.start(trial._trial_id)
        baseline = bool(trial.user_attrs.get("baseline"))
        # The baseline records in Optuna only the source's values that lie in the space.
        fixed = list(baseline_params(self.request, self.source_hps))
        params = suggest(trial, self.request, names=fixed if baseline else None)
        values = {name: self.source_hps.get(name) for name in self.request.space} if baseline else params
        hps = dict(self.source_hps)
        hps.update(values)
        src_branch, src_step = self.source
        where = {"host": socket.gethostname(), "pid": os.getpid()}
        trial.set_user_attr("worker", where)
        trial.set_user_attr("role", self.role)
        trial.set_user_attr("hyperparameters", values)
        extra = {"search": {"id": self.request.id, "trial": trial.number, "baseline": baseline,
                            "hyperparameters": values, "worker": where}}
        branch = self.host.restore(src_branch, src_step, hps, f"{src_branch}-{self.request.id}-t{trial.number}",
                                   extra)
        trial.set_user_attr("branch", branch)
        self.baseline, self.branch = baseline, branch
        self.end_step = src_step + self.request.steps_per_trial
        self.last_point, self.metric_seen = None, False
        self._publish()
        what = "the source's own settings" if baseline else _describe(values)
        self.host.log(f"retune: search {self.request.id} trial {trial.number} ({what}) as branch {branch}")
        return TrialStart(self.request.id, trial.number, branch, values, baseline)

    def _end(self, step: int, *, pruned: bool) -> TrialEnd:
        from optuna.trial import TrialState

        assert self.trial is not None
        trial, request = self.trial, self.request
        self.trial = None
        self.heartbeat.stop()
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
                trial.set_user_attr(_allot.ATTR_REASON, reason)  # a failure of its own: it counts
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

    def fail(self, message: str) -> None:
        """Ends the search as failed (its running trial too), reported through the host."""
        self.host.report_error(message)
        self.over = True
        self.heartbeat.stop()
        try:
            if self.trial is not None:
                from optuna.trial import TrialState

                self.study.tell(self.trial, state=TrialState.FAIL, skip_if_finished=True)
            self.study.set_user_attr(_status.ATTR_STATE, "failed")
            self.study.set_user_attr(_status.ATTR_OUTCOME, {"error": message, "time": time.time()})
            self._publish()
        except Exception:
            logger.warning("retune: cannot record the failure of search %s", self.request.id, exc_info=True)


def _where(worker: Any) -> str:
    if isinstance(worker, Mapping):
        return f"{worker.get('host')}:{worker.get('pid')}"
    return "?"


def _as_float(value: Any) -> float | None:
    try:
        return float(value)
    except (TypeError, ValueError):
        return None


def _describe(values: Mapping[str, Any]) -> str:
    from tb_retune.experiment.control import format_value

    return ", ".join(f"{k}={format_value(v)}" for k, v in values.items())
