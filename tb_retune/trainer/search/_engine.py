"""The search engine: the searches of one experiment, each an Optuna study
in the experiment's journal, taken from control-file requests (checked,
once per id, one at a time) and taken up again after a restart.

It runs on the training thread at batch boundaries and acts only through
its :class:`~tb_retune.trainer.search.TrialHost`; the trials of the search
in progress are :class:`~tb_retune.trainer.search._trials.SearchRun`'s.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from tb_retune._errors import ControlError
from tb_retune.experiment.search import SearchRequest, parse_search
from tb_retune.trainer.search import _status
from tb_retune.trainer.search._host import NOTHING, Action, TrialHost
from tb_retune.trainer.search._study import (
    create_search_study,
    has_journal,
    journal_path,
    make_pruner,
    make_sampler,
    open_storage,
)
from tb_retune.trainer.search._trials import SearchRun

if TYPE_CHECKING:
    import optuna

logger = logging.getLogger("tb_retune")

#: The storage's place when the journal could not be read at the start.
_BROKEN = object()


class SearchEngine:
    """Runs the searches of one experiment through a :class:`TrialHost`.

    Example (what the controller does):

    ```python
    engine = SearchEngine(logdir, host)          # begin(): resumes a search killed mid-way
    engine.check(revision.search)                # a revision's validate step: raises ControlError
    engine.submit(revision.search)               # its commit step (an error goes to host.report_error)
    if engine.busy:                              # at every batch boundary, O(1) when idle
        action = engine.on_boundary(step, logs)  # logs: the metrics logged since the last call
    status["searches"] = engine.searches()       # the status refresh, any thread
    ```

    Args:
        logdir: String. The experiment folder; the study lives in
            ``<logdir>/searches/journal.log``.
        host: TrialHost. The trainer's side.
        storage_url: String or None. Any Optuna storage URL instead of the
            journal file. Defaults to None.
        heartbeat: ``(heartbeat_interval, grace_period)`` in seconds, for
            the trials of the searches this engine starts (recorded in the
            study: every worker uses the same). Defaults to (5, 30).
    """

    def __init__(self, logdir: str, host: TrialHost, *, storage_url: str | None = None,
                 heartbeat: tuple[int, int] | None = None) -> None:
        from tb_retune.trainer.search._heartbeat_defaults import DEFAULT_HEARTBEAT

        self.logdir = logdir
        self.host = host
        self.storage_url = storage_url
        self.heartbeat = heartbeat or DEFAULT_HEARTBEAT
        self._storage: Any = None
        self._run: SearchRun | None = None
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

    @property
    def running(self) -> str | None:
        """The id of the search in progress, or None (O(1) once scanned)."""
        self._scan()
        return self._run.request.id if self._run is not None else None

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
            request, known = self._checked(request)
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
            action = run.advance(step, logs)
        except Exception as e:  # a search never kills training
            logger.debug("search failed", exc_info=True)
            run.fail(f"search {run.request.id}: {type(e).__name__}: {e}; training goes on from where it is")
            action = NOTHING
        if run.over:
            self._run = None
        return action

    def close(self) -> None:
        """``fit`` ends: the trial in progress is lost and queued again (run by
        the next run of the trainer, or by a worker); the study stays."""
        if self._run is not None:
            self._run.abandon()
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
        return self._checked(request)[1]

    def _checked(self, request: SearchRequest) -> tuple[SearchRequest, str | None]:
        self._scan()
        if self._known_study(request) == "same":
            # Carried out (or under way) already: checked when it started; the
            # file keeps it, so every later start sees it again.
            return request, "same"
        # The control schema may have checked the request without the trainer's
        # state; now with it: the optimizer's hyperparameters (and so which are
        # integers) and the logged metrics.
        request = parse_search(dict(request.raw), dict(self.host.hyperparameters()), None, self.host.metrics())
        if request.source is not None:
            branch, step = request.source
            if self.host.checkpoint_hyperparameters(branch, step) is None:
                raise ControlError(f"search.from.step: branch {json.dumps(branch)} has no checkpoint at step {step}; "
                                   "`tb-retune status` lists the restorable steps")
        return request, None

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
        if self._storage is _BROKEN:
            raise ControlError(f"search: the study storage {self._where()} could not be read at the start "
                               "of this run; searches are off until the trainer restarts")
        if self._storage is None:
            self._storage = open_storage(self.logdir, self.storage_url, heartbeat=self.heartbeat)
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

        try:
            summaries = optuna.get_all_study_summaries(self._store(), include_best_trial=False)
        except Exception as e:  # an unreadable journal must not stop training
            self.host.report_error(f"search: cannot read {self._where()}: {type(e).__name__}: {e}; searches "
                                   "are off for this run (move the file away to start afresh)")
            self._storage = _BROKEN
            return
        for summary in summaries:
            attrs = summary.user_attrs
            if _status.ATTR_REQUEST not in attrs:
                continue  # not one of ours
            try:  # with the optimizer's hyperparameters: integers stay integers
                request = parse_search(attrs[_status.ATTR_REQUEST], dict(self.host.hyperparameters()))
            except ControlError:
                try:
                    request = parse_search(attrs[_status.ATTR_REQUEST])
                except ControlError:
                    continue
            try:
                if _status.ATTR_STATE not in attrs:
                    # A trainer died while it created the study: forget it, so the
                    # request (still in retune.json) starts afresh.
                    optuna.delete_study(study_name=summary.study_name, storage=self._store())
                    continue
                study = self._load(request)
                if attrs.get(_status.ATTR_STATE) == "running" and self._run is None:
                    src = attrs[_status.ATTR_SOURCE]
                    run = SearchRun(request, study, (str(src["branch"]), int(src["step"])),
                                    src.get("hyperparameters") or {}, self.host, self._publish_study)
                    run.take_over_interrupted()
                    self._run = run
                    self.host.log(f"retune: search {request.id} resumes: "
                                  f"{run.counted()} of {request.trials} trials kept or queued")
                self._publish_study(study)
            except Exception as e:
                self.host.report_error(f"search {request.id}: cannot resume: {type(e).__name__}: {e}")

    def _where(self) -> str:
        return self.storage_url or journal_path(self.logdir)

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
            study = create_search_study(self._store(), request, source, source_hps, heartbeat=self.heartbeat)
        except ControlError as e:
            self.host.report_error(str(e))
            return
        except Exception as e:
            self.host.report_error(f"search {request.id}: cannot start: {type(e).__name__}: {e}")
            try:  # a half-made study would make the request look carried out
                optuna.delete_study(study_name=request.id, storage=self._store())
            except Exception:
                pass
            return
        self._run = SearchRun(request, study, source, source_hps, self.host, self._publish_study)
        self._publish_study(study)
        self.host.log(f"retune: search {request.id}: {request.trials} trials of {request.steps_per_trial} "
                      f"steps from {source[0]}@{source[1]}, {request.sampler} sampler, "
                      f"{request.pruner} pruner, objective {request.mode} {request.metric}")

    def _publish_study(self, study: optuna.Study) -> dict[str, Any]:
        entry = _status.search_entry(study.user_attrs, study.get_trials(deepcopy=False))
        self._searches = {**self._searches, study.study_name: entry}
        return entry

