"""The Optuna side of a search: the journal storage in the experiment folder,
the sampler and pruner that a request names, a search's study, and a
trial's parameters.

Optuna is imported here, inside the functions, so that importing the search
package costs nothing for a run that never searches.
"""

from __future__ import annotations

import hashlib
import os
import warnings
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from tb_retune.experiment.search import JOURNAL_FILENAME, SEARCH_DIRNAME, Choices, Range, SearchRequest

if TYPE_CHECKING:
    import optuna


#: Successive halving and Hyperband: rungs at r, 3r, 9r, ... with r = steps_per_trial // 9.
REDUCTION_FACTOR = 3
#: The median pruner decides once this many trials have finished.
MEDIAN_STARTUP_TRIALS = 2


def journal_path(logdir: str) -> str:
    return os.path.join(logdir, SEARCH_DIRNAME, JOURNAL_FILENAME)


def has_journal(logdir: str) -> bool:
    """Whether the experiment has searched before (cheap: one stat)."""
    return os.path.isfile(journal_path(logdir))


def open_storage(logdir: str, url: str | None = None, *, heartbeat: tuple[int, int] | None = None
                 ) -> optuna.storages.BaseStorage:
    """The study storage: ``url`` (any Optuna storage URL), else the journal
    file ``<logdir>/searches/journal.log`` with Optuna's file lock.

    ``heartbeat``: ``(heartbeat_interval, grace_period)`` in seconds: a
    storage whose trials carry Optuna's heartbeat, whose stale trials are
    failed and queued again (``_heartbeat``): the journal with our heartbeat,
    an RDB URL (``postgresql://``, ``mysql://``, ``sqlite://``) with Optuna's."""
    import optuna
    from optuna.storages.journal import JournalFileBackend, JournalStorage

    if url:
        if heartbeat is not None and is_rdb_url(url):
            from tb_retune.trainer.search._heartbeat import retry_lost

            return optuna.storages.RDBStorage(url, heartbeat_interval=heartbeat[0], grace_period=heartbeat[1],
                                              heartbeat_stale_trial_callback=retry_lost)
        return optuna.storages.get_storage(url)
    path = journal_path(logdir)
    os.makedirs(os.path.dirname(path), exist_ok=True)
    if heartbeat is not None:
        from tb_retune.trainer.search._heartbeat import HeartbeatJournalStorage

        return HeartbeatJournalStorage(JournalFileBackend(path), heartbeat_interval=heartbeat[0],
                                       grace_period=heartbeat[1])
    return JournalStorage(JournalFileBackend(path))


def study_heartbeat(attrs: Mapping[str, Any]) -> tuple[int, int]:
    """A study's ``(heartbeat_interval, grace_period)`` (the defaults for a study that has none)."""
    from tb_retune.trainer.search import _status
    from tb_retune.trainer.search._heartbeat_defaults import DEFAULT_HEARTBEAT

    hb = attrs.get(_status.ATTR_HEARTBEAT)
    if isinstance(hb, Mapping):
        try:
            return int(hb["heartbeat_interval"]), int(hb["grace_period"])
        except (KeyError, TypeError, ValueError):
            pass
    return DEFAULT_HEARTBEAT


def is_rdb_url(url: str) -> bool:
    """Whether ``url`` names a database of Optuna's RDB storage (SQLAlchemy's URL form)."""
    scheme = url.split(":", 1)[0].split("+", 1)[0].lower()
    return scheme in ("postgresql", "mysql", "sqlite", "oracle", "mssql", "mariadb")


def seed_of(search_id: str, salt: str = "") -> int:
    """A seed derived from the search's id: the same request samples the same
    sequence (until its trials' results differ). A worker adds its own
    ``salt`` (host and pid), so that two processes do not draw the same
    random settings."""
    return int.from_bytes(hashlib.sha256((search_id + salt).encode("utf-8")).digest()[:4], "little")


def make_sampler(request: SearchRequest, salt: str = "") -> optuna.samplers.BaseSampler:
    import optuna

    seed = seed_of(request.id, salt)
    if request.sampler == "random":
        return optuna.samplers.RandomSampler(seed=seed)
    if request.sampler == "grid":
        return _grid_sampler({name: dim.grid() for name, dim in request.space.items()}, seed=seed)
    if request.sampler == "qmc":
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)  # since Optuna 3.0
            return optuna.samplers.QMCSampler(seed=seed, scramble=True, warn_independent_sampling=False)
    # TPE: a third of the trials (at least 2) sampled at random first, then the model.
    startup = max(2, request.trials // 3)
    return optuna.samplers.TPESampler(seed=seed, n_startup_trials=startup)


def _grid_sampler(space: Mapping[str, list[Any]], seed: int) -> optuna.samplers.BaseSampler:
    import optuna

    class NoStopGridSampler(optuna.samplers.GridSampler):
        """Optuna's grid sampler without its ``study.stop()`` once the grid is
        used up: that works only inside ``study.optimize`` (under ask/tell it
        raises from ``tell``), and the engine counts the trials itself (the
        schema caps them at the grid's size plus the baseline)."""

        def after_trial(self, study: Any, trial: Any, state: Any, values: Any) -> None:
            return None

    return NoStopGridSampler(dict(space), seed=seed)


def make_pruner(request: SearchRequest) -> optuna.pruners.BasePruner:
    import optuna

    rung = max(1, request.steps_per_trial // REDUCTION_FACTOR**2)
    if request.pruner == "median":
        return optuna.pruners.MedianPruner(n_startup_trials=MEDIAN_STARTUP_TRIALS, n_warmup_steps=0)
    if request.pruner == "successive_halving":
        return optuna.pruners.SuccessiveHalvingPruner(min_resource=rung, reduction_factor=REDUCTION_FACTOR)
    if request.pruner == "hyperband":
        return optuna.pruners.HyperbandPruner(min_resource=rung, max_resource=request.steps_per_trial,
                                              reduction_factor=REDUCTION_FACTOR)
    return optuna.pruners.NopPruner()


def suggest(trial: optuna.trial.Trial, request: SearchRequest, names: list[str] | None = None) -> dict[str, Any]:
    """Asks ``trial`` for a value of each hyperparameter of the space (or of
    ``names`` only). An enqueued trial gets its fixed values."""
    out: dict[str, Any] = {}
    for name, dim in request.space.items():
        if names is not None and name not in names:
            continue
        if isinstance(dim, Choices):
            out[name] = trial.suggest_categorical(name, list(dim.choices))
        elif isinstance(dim, Range) and dim.integer:
            out[name] = trial.suggest_int(name, int(dim.low), int(dim.high),
                                          step=int(dim.step or 1), log=dim.log)
        else:
            out[name] = trial.suggest_float(name, float(dim.low), float(dim.high),
                                            step=dim.step, log=dim.log)
    return out


def baseline_params(request: SearchRequest, source: Mapping[str, Any]) -> dict[str, Any]:
    """The source's own values of the space's hyperparameters that lie in the
    space (among the choices, or in the range and on its step): those become
    the baseline trial's Optuna parameters, so the samplers learn from it. A
    value outside the space is left out of the parameters (a sampler's model
    is built on the space's bounds); the baseline still runs with it, and its
    ``hyperparameters`` say so."""
    return {name: source[name] for name, dim in request.space.items()
            if name in source and dim.contains(source[name])}


def create_search_study(storage: Any, request: SearchRequest, source: tuple[str, int],
                        source_hps: Mapping[str, Any], *, heartbeat: tuple[int, int] | None = None
                        ) -> optuna.Study:
    """A new study for ``request``: its record in the study's user attributes
    (the request, the source and its hyperparameters, the state last) and
    the baseline enqueued as its first trial."""
    import optuna

    from tb_retune.trainer.search import _status

    study = optuna.create_study(study_name=request.id, storage=storage,
                                direction="minimize" if request.mode == "min" else "maximize",
                                sampler=make_sampler(request), pruner=make_pruner(request))
    study.set_user_attr(_status.ATTR_REQUEST, dict(request.raw))
    study.set_user_attr(_status.ATTR_FINGERPRINT, request.fingerprint())
    study.set_user_attr(_status.ATTR_MODE, request.mode)
    if heartbeat is not None:
        study.set_user_attr(_status.ATTR_HEARTBEAT, {"heartbeat_interval": int(heartbeat[0]),
                                                     "grace_period": int(heartbeat[1])})
    study.set_user_attr(_status.ATTR_SOURCE, {"branch": source[0], "step": source[1],
                                              "hyperparameters": dict(source_hps)})
    # The first trial: the source's own settings, so the search shows what a change gains.
    study.enqueue_trial(baseline_params(request, source_hps), user_attrs={"baseline": True})
    # Last: a study without a state is one whose creation was cut short (it is started afresh).
    study.set_user_attr(_status.ATTR_STATE, "running")
    return study
