"""The search engine: one Optuna study per search, its trials run one after
another as branches that all start from the same checkpoint.

It runs on the training thread at batch boundaries and acts only through
its :class:`~tb_retune.trainer.search.TrialHost`. How a trial is measured
(``docs/search.md``): a trial runs from the source step S to its end step
E = S + ``steps_per_trial``; every logged point of the objective metric at
a step S < s <= E is reported to Optuna at ``s - S`` (the pruner's input);
at the first boundary at or after E the host evaluates the metric on the
end state, and that is the trial's value (its last logged point if the
host cannot evaluate).
"""

from __future__ import annotations

import json
import logging
import math
import os
import socket
import time
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from tb_retune._errors import ControlError
from tb_retune.experiment.search import SearchRequest, parse_search
from tb_retune.trainer.search import _status
from tb_retune.trainer.search._host import NOTHING, Action, SearchDone, TrialEnd, TrialHost, TrialStart
from tb_retune.trainer.search._study import (
    baseline_params,
    has_journal,
    make_pruner,
    make_sampler,
    open_storage,
    suggest,
)

if TYPE_CHECKING:
    import optuna

logger = logging.getLogger("tb_retune")


class _Run:
    """The search in progress and its trial in progress (training thread only)."""

    def __init__(self, request: SearchRequest, study: optuna.Study, source: tuple[str, int],
                 source_hps: Mapping[str, Any]) -> None:
        self.request = request
        self.study = study
        self.source = source
        self.source_hps = dict(source_hps)
        self.trial: optuna.trial.Trial | None = None
        self.baseline = False
        self.branch = ""
        self.end_step = 0
        self.last_point: tuple[int, float] | None = None
        self.metric_seen = False


class SearchEngine:
    """Runs the searches of one experiment through a :class:`TrialHost`.

    Example (what the controller does):

    ```python
    engine = SearchEngine(logdir, host)          # resumes a search killed mid-way
    ...
    if revision.search is not None:
        engine.submit(revision.search)           # checked; an error goes to host.report_error
    action = engine.on_boundary(step, logs)      # at every batch boundary
    status["searches"] = engine.searches()
    ```

    Args:
        logdir: String. The experiment folder; the study lives in
            ``<logdir>/searches/journal.log``.
        host: TrialHost. The trainer's side.
        storage_url: String or None. Any Optuna storage URL instead of the
            journal file. Defaults to None.
    """

    def __init__(self, logdir: str, host: TrialHost, *, storage_url: str | None = None) -> None:
        self.logdir = logdir
        self.host = host
        self.storage_url = storage_url
        self._storage: Any = None
        self._run: _Run | None = None
        self._queued: SearchRequest | None = None
        self._searches: dict[str, dict[str, Any]] = {}
        self._scanned = False

    # -- public ---------------------------------------------------------------
    @staticmethod
    def needed(logdir: str) -> bool:
        """Whether an experiment has a search record (so an engine is needed
        at start even without a request): one stat, no Optuna import."""
        return has_journal(logdir)

    @property
    def busy(self) -> bool:
        """Whether a search is running (the controller calls :meth:`on_boundary`)."""
        self._scan()
        return self._run is not None or self._queued is not None

    def searches(self) -> dict[str, dict[str, Any]]:
        """``searches`` of the status: ``{id: entry}`` (any thread)."""
        return dict(self._searches)

    def submit(self, request: SearchRequest) -> None:
        """Takes a search request from a control-file revision (training thread).

        A bad request (checked against the optimizer, the logged metrics and
        the checkpoints) is reported through ``host.report_error`` and changes
        nothing; a request whose id was carried out already is ignored.
        """
        try:
            known = self.check(request)
        except ControlError as e:
            self.host.report_error(str(e))
            return
        if known == "same":
            return  # carried out (or being carried out) once per id
        if self._run is not None:
            self._queued = request
            self.host.log(f"retune: search {request.id} waits for search {self._run.request.id} to end")
            return
        self._start_search(request)

    def on_boundary(self, step: int, logs: Mapping[str, Any] | None = None) -> Action:
        """Called at each batch boundary with the step and the metrics logged
        since the last call (None if none). O(1) unless a trial starts or ends."""
        run = self._run
        if run is None:
            if self._queued is None and self._scanned:
                return NOTHING
            self._scan()
            if self._run is None and self._queued is not None:
                request, self._queued = self._queued, None
                self._start_search(request)
            run = self._run
            if run is None:
                return NOTHING
        try:
            return self._advance(run, step, logs)
        except Exception as e:  # a search never kills training
            logger.debug("search failed", exc_info=True)
            self._fail(run, f"search {run.request.id}: {type(e).__name__}: {e}; training goes on "
                            f"from where it is")
            return NOTHING

    def close(self) -> None:
        """Forgets the trial in progress (it is run again when the trainer
        restarts); the study stays as it is."""
        self._run = None
        self._queued = None

    # -- checks ----------------------------------------------------------------
    def check(self, request: SearchRequest) -> str | None:
        """Checks a request against the trainer's state, changing nothing (the
        "validate" of a revision's plan, validate, commit). Returns ``"same"``
        when the request was carried out already (or is being carried out),
        None when it is new.

        Raises:
            ControlError: naming the key (``search.<key>``): an unknown
                hyperparameter, a metric that fit does not log, a ``from``
                without a checkpoint, an id that names another search.
        """
        self._scan()
        # The control schema checked the request without the trainer's state;
        # now with it: the optimizer's hyperparameters and the logged metrics.
        parse_search(dict(request.raw), dict(self.host.hyperparameters()), None, self.host.metrics())
        known = self._known_study(request)
        if known is None and request.source is not None:
            branch, step = request.source
            if self.host.checkpoint_hyperparameters(branch, step) is None:
                raise ControlError(f"search.from.step: branch {json.dumps(branch)} has no checkpoint at step {step}; "
                                   "`tb-retune status` lists the restorable steps")
        return known

    def _known_study(self, request: SearchRequest) -> str | None:
        """``"same"`` when the id names this very search already, None when new;
        raises when the id names another search."""
        if self._storage is None and self.storage_url is None and not has_journal(self.logdir):
            return None  # no search here yet (and checking creates no file)
        try:
            study_id = self._store().get_study_id_from_name(request.id)
        except KeyError:
            return None
        attrs = self._store().get_study_user_attrs(study_id)
        if attrs.get(_status.ATTR_FINGERPRINT) != request.fingerprint():
            raise ControlError(f"search.id: {request.id!r} already names another search of this experiment "
                               f"(state {attrs.get(_status.ATTR_STATE, '?')}); give the new search a new id")
        return "same"

    # -- storage ------------------------------------------------------------------
    def _store(self) -> Any:
        if self._storage is None:
            self._storage = open_storage(self.logdir, self.storage_url)
        return self._storage

    def _load(self, request: SearchRequest) -> optuna.Study:
        import optuna

        return optuna.load_study(study_name=request.id, storage=self._store(),
                                 sampler=make_sampler(request), pruner=make_pruner(request))

    def _scan(self) -> None:
        """Once: every search in the journal into ``searches``, and the one
        left running by a killed trainer taken up again."""
        if self._scanned:
            return
        self._scanned = True
        if self.storage_url is None and not has_journal(self.logdir):
            return
        import optuna

        for summary in optuna.get_all_study_summaries(self._store(), include_best_trial=False):
            attrs = summary.user_attrs
            if _status.ATTR_REQUEST not in attrs:
                continue  # not one of ours
            try:
                request = parse_search(attrs[_status.ATTR_REQUEST])
            except ControlError:
                continue
            study = self._load(request)
            if attrs.get(_status.ATTR_STATE) == "running" and self._run is None:
                src = attrs.get(_status.ATTR_SOURCE) or {}
                self._run = _Run(request, study, (str(src["branch"]), int(src["step"])),
                                 src.get("hyperparameters") or {})
                self._interrupted(self._run)
                self.host.log(f"retune: search {request.id} resumes: "
                              f"{self._counted(self._run)} of {request.trials} trials kept or queued")
            self._publish_study(study)

    def _interrupted(self, run: _Run) -> None:
        """Fails the trials that a killed trainer left running and queues them
        again with the same settings: the total stays ``trials``."""
        from optuna.trial import TrialState

        interrupted = list(run.study.user_attrs.get(_status.ATTR_INTERRUPTED) or [])
        for t in run.study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
            if t.user_attrs.get("role", "trainer") != "trainer":
                continue  # a worker's: Optuna's heartbeat is its judge
            interrupted.append(t.number)
            run.study.set_user_attr(_status.ATTR_INTERRUPTED, interrupted)
            run.study.tell(t.number, state=TrialState.FAIL, skip_if_finished=True)
            baseline = bool(t.user_attrs.get("baseline"))
            if baseline or set(t.params) == set(run.request.space):
                run.study.enqueue_trial(dict(t.params), user_attrs={"baseline": baseline, "retry_of": t.number})

    # -- the lifecycle ----------------------------------------------------------------
    def _start_search(self, request: SearchRequest) -> None:
        import optuna

        try:
            if request.source is not None:
                source = request.source
                self.host.keep_checkpoint(*source)
            else:
                source = self.host.keep_checkpoint_now()
            source_hps = dict(self.host.checkpoint_hyperparameters(*source) or self.host.hyperparameters())
            study = optuna.create_study(study_name=request.id, storage=self._store(),
                                        direction="minimize" if request.mode == "min" else "maximize",
                                        sampler=make_sampler(request), pruner=make_pruner(request))
            study.set_user_attr(_status.ATTR_REQUEST, dict(request.raw))
            study.set_user_attr(_status.ATTR_FINGERPRINT, request.fingerprint())
            study.set_user_attr(_status.ATTR_MODE, request.mode)
            study.set_user_attr(_status.ATTR_SOURCE, {"branch": source[0], "step": source[1],
                                                      "hyperparameters": source_hps})
            # The first trial: the source's own settings, so the search shows what a change gains.
            study.enqueue_trial(baseline_params(request, source_hps), user_attrs={"baseline": True})
            study.set_user_attr(_status.ATTR_STATE, "running")
        except Exception as e:
            self.host.report_error(f"search {request.id}: cannot start: {type(e).__name__}: {e}")
            return
        self._run = _Run(request, study, source, source_hps)
        self._publish_study(study)
        self.host.log(f"retune: search {request.id}: {request.trials} trials of {request.steps_per_trial} "
                      f"steps from {source[0]}@{source[1]}, {request.sampler} sampler, "
                      f"{request.pruner} pruner, objective {request.mode} {request.metric}")

    def _advance(self, run: _Run, step: int, logs: Mapping[str, Any] | None) -> Action:
        if run.trial is None:
            return self._next(run, None)
        start = run.source[1]
        ended: TrialEnd | None = None
        if logs and run.request.metric in logs:
            value = _as_float(logs[run.request.metric])
            if value is not None and start < step:
                run.metric_seen = True
                run.last_point = (step, value)
                run.trial.report(value, step - start)
                if not run.baseline and step < run.end_step and run.trial.should_prune():
                    ended = self._end(run, step, pruned=True)
        if ended is None and step >= run.end_step:
            ended = self._end(run, step, pruned=False)
        if ended is None:
            return NOTHING
        if self._run is not run:  # the search failed at this trial's end
            return Action(ended=ended)
        return self._next(run, ended)

    def _counted(self, run: _Run) -> int:
        """Trials that count towards ``trials``: all but the interrupted ones."""
        interrupted = set(run.study.user_attrs.get(_status.ATTR_INTERRUPTED) or [])
        return sum(1 for t in run.study.get_trials(deepcopy=False) if t.number not in interrupted)

    def _next(self, run: _Run, ended: TrialEnd | None) -> Action:
        from optuna.trial import TrialState

        waiting = run.study.get_trials(deepcopy=False, states=(TrialState.WAITING,))
        if not waiting and self._counted(run) >= run.request.trials:
            running = run.study.get_trials(deepcopy=False, states=(TrialState.RUNNING,))
            if running:
                return Action(ended=ended)  # other processes still run trials of it
            return Action(ended=ended, done=self._finish(run))
        trial = run.study.ask()
        baseline = bool(trial.user_attrs.get("baseline"))
        # The baseline records in Optuna only the source's values that lie in the space.
        fixed = list(baseline_params(run.request, run.source_hps))
        params = suggest(trial, run.request, names=fixed if baseline else None)
        values = {name: run.source_hps.get(name) for name in run.request.space} if baseline else params
        hps = dict(run.source_hps)
        hps.update(values)
        src_branch, src_step = run.source
        trial.set_user_attr("worker", {"host": socket.gethostname(), "pid": os.getpid()})
        trial.set_user_attr("role", "trainer")
        trial.set_user_attr("hyperparameters", values)
        extra = {"search": {"id": run.request.id, "trial": trial.number, "baseline": baseline,
                            "hyperparameters": values}}
        branch = self.host.restore(src_branch, src_step, hps, f"{src_branch}-{run.request.id}-t{trial.number}",
                                   extra)
        trial.set_user_attr("branch", branch)
        run.trial, run.baseline, run.branch = trial, baseline, branch
        run.end_step = src_step + run.request.steps_per_trial
        run.last_point, run.metric_seen = None, False
        self._publish_study(run.study)
        what = "the source's own settings" if baseline else _describe(values)
        self.host.log(f"retune: search {run.request.id} trial {trial.number} ({what}) as branch {branch}")
        return Action(ended=ended, started=TrialStart(run.request.id, trial.number, branch, values, baseline))

    def _end(self, run: _Run, step: int, *, pruned: bool) -> TrialEnd:
        from optuna.trial import TrialState

        assert run.trial is not None
        trial, request = run.trial, run.request
        run.trial = None
        trial.set_user_attr("step", step)
        value: float | None = None
        reason = None
        if pruned:
            state = "pruned"
            run.study.tell(trial, state=TrialState.PRUNED)
        else:
            value = self._measure(run)
            if value is None:
                reason = (f"fit logged no {request.metric} in steps {run.source[1] + 1}-{step} and the trainer "
                          "could not evaluate it")
            elif not math.isfinite(value):
                reason = f"{request.metric} is {value} (the trial diverged)"
            end_branch, end_step = self.host.keep_checkpoint_now()
            trial.set_user_attr("end", {"branch": end_branch, "step": end_step})
            if reason is None:
                state = "complete"
                run.study.tell(trial, value)
            else:
                state, value = "failed", None
                trial.set_user_attr("reason", reason)
                run.study.tell(trial, state=TrialState.FAIL)
        record = {"search": {"id": request.id, "trial": trial.number, "baseline": run.baseline,
                             "state": state, "value": value, "step": step}}
        self.host.update_node_record(record)
        self._publish_study(run.study)
        shown = f"{request.metric} {value:.6g}" if value is not None else (reason or f"pruned at step {step}")
        self.host.log(f"retune: search {request.id} trial {trial.number} {state}: {shown}")
        if run.baseline and reason is not None and not run.metric_seen:
            self._fail(run, f"search.objective.metric: search {request.id}: its first trial logged no "
                            f"{request.metric!r}; fit logs: {', '.join(sorted(self.host.metrics() or [])) or '?'}")
        return TrialEnd(request.id, trial.number, run.branch, state, value, step)

    def _measure(self, run: _Run) -> float | None:
        try:
            value = self.host.evaluate(run.request.metric)
        except Exception as e:
            self.host.report_error(f"search {run.request.id}: evaluating {run.request.metric} failed: "
                                   f"{type(e).__name__}: {e}; using the last logged value")
            value = None
        if value is not None:
            return float(value)
        return run.last_point[1] if run.last_point is not None else None

    def _finish(self, run: _Run) -> SearchDone:
        entry = self._publish_study(run.study)
        best = entry["best"]
        request = run.request
        src_branch, src_step = run.source
        if request.then == "best" and best is not None:
            end = run.study.trials[best["number"]].user_attrs.get("end") or {}
            from_branch, from_step = str(end["branch"]), int(end["step"])
            hps = dict(run.source_hps)
            hps.update(best["hyperparameters"])
            name = f"{src_branch}-{request.id}-best"
        else:
            if request.then == "best":
                self.host.log(f"retune: search {request.id}: no trial completed; going on from the source")
            from_branch, from_step, hps = src_branch, src_step, dict(run.source_hps)
            name = f"{src_branch}-{request.id}-{request.then}"
        extra = {"search": {"id": request.id, "then": request.then,
                            "trial": best["number"] if best is not None else None}}
        branch = self.host.restore(from_branch, from_step, hps, name, extra)
        outcome = {"branch": branch, "from": {"branch": from_branch, "step": from_step}, "time": time.time()}
        run.study.set_user_attr(_status.ATTR_OUTCOME, outcome)
        run.study.set_user_attr(_status.ATTR_STATE, "done")
        self._run = None
        self._publish_study(run.study)
        shown = (f"best trial {best['number']} ({request.metric} {best['value']:.6g})" if best is not None
                 else "no trial completed")
        self.host.log(f"retune: search {request.id} done: {shown}; training goes on as branch {branch}")
        return SearchDone(request.id, request.then, branch, from_branch, from_step, hps,
                          best["number"] if best is not None else None)

    def _fail(self, run: _Run, message: str) -> None:
        self.host.report_error(message)
        self._run = None
        try:
            if run.trial is not None:
                from optuna.trial import TrialState

                run.study.tell(run.trial, state=TrialState.FAIL, skip_if_finished=True)
            run.study.set_user_attr(_status.ATTR_STATE, "failed")
            run.study.set_user_attr(_status.ATTR_OUTCOME, {"error": message, "time": time.time()})
            self._publish_study(run.study)
        except Exception:
            logger.warning("retune: cannot record the failure of search %s", run.request.id, exc_info=True)

    def _publish_study(self, study: optuna.Study) -> dict[str, Any]:
        entry = _status.search_entry(study.user_attrs, study.get_trials(deepcopy=False))
        self._searches = {**self._searches, study.study_name: entry}
        return entry


def _as_float(value: Any) -> float | None:
    try:
        return float(value)
    except (TypeError, ValueError):
        return None


def _describe(values: Mapping[str, Any]) -> str:
    from tb_retune.experiment.control import format_value

    return ", ".join(f"{k}={format_value(v)}" for k, v in values.items())
