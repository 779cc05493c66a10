"""The trainer's side of a search: a :class:`~tb_retune.trainer.search.TrialHost`
over a :class:`~tb_retune.trainer.session.Session`.

The search engine (``tb_retune.trainer.search``) never touches Keras; this
host does what it asks with the trainer's own parts: a trial starts with the
restore that the control file's ``restore`` uses (``changes.apply_restore``:
weights, optimizer slots, step, the saved hyperparameters, a new branch and
its first node), the checkpoints are the policy's (``keep_before_change``),
node records are the records' writer, and the objective is evaluated on the
data that ``fit`` was given (:class:`EvaluationData`). Every method runs on
the training thread at a batch boundary.
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Collection, Mapping
from typing import Any

from tb_retune._errors import ControlError
from tb_retune.experiment.control import RestoreRequest
from tb_retune.trainer.changes import apply_restore, keep_state_before_change
from tb_retune.trainer.session import Session

logger = logging.getLogger("tb_retune")


@dataclasses.dataclass(frozen=True)
class EvaluationData:
    """What a trial's objective is measured on: ``fit``'s data.

    ``validation`` is ``(x, y, sample_weight)`` of ``validation_data`` (or
    the split of ``validation_split``), ``training`` the same for the training
    data when it can be read more than once (arrays, tensors, a
    ``tf.data.Dataset``, a ``PyDataset``); None where there is none.
    """

    validation: tuple[Any, Any, Any] | None = None
    training: tuple[Any, Any, Any] | None = None
    batch_size: int | None = None
    validation_batch_size: int | None = None
    validation_steps: int | None = None


def fit_evaluation_data(fit_locals: Mapping[str, Any]) -> EvaluationData:
    """The evaluation data from the local variables of Keras's ``fit`` at
    ``on_train_begin`` (``x``, ``y`` after ``validation_split``, ``val_x``...)."""
    validation = None
    if fit_locals.get("validation_data") is not None and "val_x" in fit_locals:
        validation = (fit_locals.get("val_x"), fit_locals.get("val_y"), fit_locals.get("val_sample_weight"))
    x = fit_locals.get("x")
    training = (x, fit_locals.get("y"), fit_locals.get("sample_weight")) if _rereadable(x) else None
    bs = fit_locals.get("batch_size")
    return EvaluationData(validation=validation, training=training,
                          batch_size=bs if isinstance(bs, int) else None,
                          validation_batch_size=_int_or_none(fit_locals.get("validation_batch_size")),
                          validation_steps=_int_or_none(fit_locals.get("validation_steps")))


def _int_or_none(value: Any) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) else None


def _rereadable(x: Any) -> bool:
    """Data that a second pass reads again from its start (not a generator)."""
    if x is None:
        return False
    if hasattr(x, "shape") or isinstance(x, (list, tuple, dict)):
        return True
    kind = type(x).__name__
    module = type(x).__module__ or ""
    tf_dataset = module.startswith("tensorflow") and "Dataset" in kind
    return tf_dataset or (hasattr(x, "__getitem__") and hasattr(x, "__len__"))


class SessionTrialHost:
    """A :class:`~tb_retune.trainer.search.TrialHost` over a trainer session.

    Args:
        session: The run's session.
        evaluation: Where the objective is evaluated; None: the engine falls
            back to the metric's last logged point (a custom loop).
    """

    def __init__(self, session: Session, evaluation: EvaluationData | None = None) -> None:
        self.s = session
        self.evaluation = evaluation
        #: Set when a restore needs the train function traced again.
        self.retrace = False
        #: Whether the last boundary restored (the step counter was re-read).
        self.restored = False
        self._logged: set[str] = set()
        self._pending: dict[str, Any] = {}

    # -- what the controller feeds in ----------------------------------------------
    def note_logs(self, logs: Mapping[str, Any]) -> None:
        """The metrics logged at a step (scalars): the engine gets them at the next boundary."""
        for k, v in logs.items():
            if isinstance(k, str):
                self._pending[k] = v
                self._logged.add(k)

    def take_logs(self) -> dict[str, Any] | None:
        logs, self._pending = self._pending, {}
        return logs or None

    def logged_metrics(self) -> list[str] | None:
        """``status["metrics"]``: the names logged so far, or None before the first."""
        return sorted(self._logged) or None

    def take_retrace(self) -> bool:
        retrace, self.retrace = self.retrace, False
        return retrace

    # -- TrialHost ------------------------------------------------------------------
    def hyperparameters(self) -> Mapping[str, Any]:
        return self.s.handle.get()

    def metrics(self) -> Collection[str] | None:
        return self.logged_metrics()

    def checkpoint_hyperparameters(self, branch: str, step: int) -> Mapping[str, Any] | None:
        s = self.s
        s.checkpoints.flush()  # a write or a promotion (a rename) of it may be under way
        info = s.store.find(branch, step)  # another process's (a worker's trial, the trainer's source)
        if info is None:
            return None
        return dict(s.store.read_meta(info).get("hyperparameters") or {})

    def keep_checkpoint(self, branch: str, step: int) -> None:
        self.s.checkpoints.writer.promote(branch, step, "boundary")

    def keep_checkpoint_now(self) -> tuple[str, int]:
        s = self.s
        if not s.checkpoints.ready():
            raise ControlError("search.from: the model is not built yet, so there is no state to search from; "
                               "give search.from a checkpoint, or write the request once training runs")
        step = s.steps.known
        keep_state_before_change(s, step)
        # Durable before the trial's result is told: another process may go on from it.
        s.checkpoints.flush()
        with s.state.lock:
            return s.state.branch, step

    def restore(self, branch: str, step: int, hyperparameters: Mapping[str, Any], new_branch_name: str,
                node_record_extra: Mapping[str, Any]) -> str:
        s = self.s
        request = RestoreRequest(id=f"{new_branch_name}@{step}", branch=branch, step=step,
                                 hyperparameters=dict(hyperparameters))
        self.retrace |= apply_restore(s, request, branch_name=new_branch_name, record_extra=node_record_extra)
        self.restored = True
        with s.state.lock:
            return s.state.branch

    def update_node_record(self, node_record_extra: Mapping[str, Any]) -> None:
        s = self.s
        with s.state.lock:
            record = dict(s.state.node_records.get(s.state.node) or {})
            if not record:
                return
            for key, value in node_record_extra.items():
                old = record.get(key)
                record[key] = {**old, **value} if isinstance(old, Mapping) and isinstance(value, Mapping) else value
            s.state.node_records[s.state.node] = record
        s.records.write_record(record)

    def evaluate(self, metric: str) -> float | None:
        e = self.evaluation
        if e is None:
            return None
        if metric.startswith("val_"):
            data, name = e.validation, metric[len("val_"):]
            batch_size, steps = e.validation_batch_size or e.batch_size, e.validation_steps
        else:
            data, name, batch_size, steps = e.training, metric, e.batch_size, None
        if data is None:
            return None
        x, y, sample_weight = data
        result = self.s.model.evaluate(x=x, y=y, sample_weight=sample_weight, batch_size=batch_size, steps=steps,
                                       verbose=0, return_dict=True)
        value = result.get(name)
        return float(value) if value is not None else None

    def report_error(self, message: str) -> None:
        self.s.report_error(message)

    def wait(self, seconds: float) -> bool:
        # The boundary holds the commit lock; the status must not stop for the wait.
        with self.s.state.commit_lock_released():
            return not self.s.wait_for_revision(seconds)

    def steps_left(self) -> int | None:
        return self.s.steps_left()

    def log(self, message: str) -> None:
        self.s.log(message)


# -- the controller's calls (a few words each at its call sites) --------------------
def attach(s: Session, evaluation: EvaluationData | None) -> None:
    """Gives the session its search engine (begin): it takes up a search left running."""
    from tb_retune.trainer.search import SearchEngine

    s.search_host = SessionTrialHost(s, evaluation)
    s.search = SearchEngine(s.logdir, s.search_host, storage_url=s.options.search_storage,
                            heartbeat=s.options.search_heartbeat)


def busy(s: Session) -> bool:
    """O(1): whether a search runs or waits (the engine reads its journal once)."""
    return s.search is not None and s.search.busy


def boundary(s: Session, step: int) -> bool:
    """The search's turn at a batch boundary; returns whether to retrace."""
    host = s.search_host
    if s.search is None or host is None:
        return False
    host.restored = False
    s.search.on_boundary(step, host.take_logs())
    if host.restored:
        s.steps.calls = 1  # the restore re-read the step; count the batch about to run
        s.publish(durable=True)  # a trial's branch: a restart must know it
    return host.take_retrace()


def note_logs(s: Session, logs: Mapping[str, Any]) -> None:
    if s.search_host is not None:
        s.search_host.note_logs(logs)


def close(s: Session | None) -> None:
    """end(): the trial in progress is run again by the next run; the study stays."""
    if s is not None and s.search is not None:
        s.search.close()
