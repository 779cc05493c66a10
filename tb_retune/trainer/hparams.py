"""Every branch as a session of TensorBoard's own HParams dashboard.

TensorBoard's ``hparams`` plugin compares *sessions*: runs that hold a
``_hparams_/session_start_info`` summary (their hyperparameters) beside their
scalars (their metrics), listed by an ``_hparams_/experiment`` summary (which
hyperparameters and metrics there are). The trainer writes both into each
branch's run, so the HParams tab lists every branch (and every search trial,
which is a branch) with its values, and its table, parallel coordinates and
scatter plots compare them.

**The rule.** A branch's session holds the hyperparameters in force on the
branch's *latest node*: the values the branch trained with last. TensorBoard
keeps the *first* summary of a tag that it reads in a run (later ones are
ignored, also after a restart), so the session is written once, when the
branch's latest node is final: when training leaves the branch (a restore
starts another one; a search trial ends) and at the end of ``fit`` for the
branch it ends on. A branch that is still training is not in the HParams tab
yet. Its metrics are every scalar tag the branch logs at epoch ends
(``loss``, ``val_loss``, the compiled metrics): the session's values are the
last ones TensorBoard has of each tag in the branch's run. A hyperparameter
set to ``None`` (turned off) is left out; its column is empty for the branch.

The builders (``session_pb``, ``experiment_pb``) are pure, like TensorBoard's
own ``*_pb`` functions; :class:`HParamsRecorder` decides when to write. Its
calls happen at node boundaries and epoch ends only, never per batch.
"""

from __future__ import annotations

import math
import os
import time
from collections.abc import Iterable, Mapping
from typing import Any, Protocol

from tensorboard.compat.proto import summary_pb2
from tensorboard.plugins.hparams import api_pb2
from tensorboard.plugins.hparams import summary as hp_summary
from tensorboard.plugins.hparams import summary_v2 as hp_summary_v2

#: Tags of the hparams plugin's summaries (tensorboard.plugins.hparams.metadata).
SESSION_START_TAG = "_hparams_/session_start_info"
SESSION_END_TAG = "_hparams_/session_end_info"
EXPERIMENT_TAG = "_hparams_/experiment"


class SummaryWriter(Protocol):
    """What the recorder writes through: a branch's event file (trainer.summaries.BranchWriter)."""

    def summary(self, pb: summary_pb2.Summary, step: int) -> None: ...


def _as_tensorboard_proto(pb: Any) -> summary_pb2.Summary:
    """The same Summary as TensorBoard's own proto class (the hparams plugin may build TensorFlow's)."""
    return pb if isinstance(pb, summary_pb2.Summary) else summary_pb2.Summary.FromString(pb.SerializeToString())


def session_values(hyperparameters: Mapping[str, Any]) -> dict[str, bool | float | str]:
    """The values that an HParams session can hold: booleans, finite numbers, strings.

    ``None`` (a hyperparameter turned off) and non-finite numbers are left out.
    """
    out: dict[str, bool | float | str] = {}
    for name, value in hyperparameters.items():
        if isinstance(value, bool) or isinstance(value, str):
            out[name] = value
        elif isinstance(value, (int, float)) and math.isfinite(float(value)):
            out[name] = float(value)
    return out


def session_pb(trial_id: str, hyperparameters: Mapping[str, Any], *,
               start_time_secs: float | None = None) -> summary_pb2.Summary:
    """The session start summary of one branch: its hyperparameters, grouped by ``trial_id``.

    Every branch is its own group (``trial_id`` is unique per branch), so two
    branches with the same values stay two rows in the HParams table.
    """
    return _as_tensorboard_proto(hp_summary_v2.hparams_pb(session_values(hyperparameters), trial_id=trial_id,
                                                          start_time_secs=start_time_secs))


def session_end_pb(state: str, *, end_time_secs: float | None = None) -> summary_pb2.Summary:
    """The session end summary: ``finished``/``stopped``/``left`` are a success, ``failed`` a failure."""
    status = api_pb2.STATUS_FAILURE if state == "failed" else api_pb2.STATUS_SUCCESS
    return _as_tensorboard_proto(hp_summary.session_end_pb(status, end_time_secs=end_time_secs))


def _hparam_info(name: str, value: Any) -> api_pb2.HParamInfo:
    if isinstance(value, bool):
        kind = api_pb2.DATA_TYPE_BOOL
    elif isinstance(value, str):
        kind = api_pb2.DATA_TYPE_STRING
    else:
        kind = api_pb2.DATA_TYPE_FLOAT64
    return api_pb2.HParamInfo(name=name, type=kind)


def metric_names(tags: Iterable[str]) -> list[str]:
    """The metrics of a session, in order: ``loss`` first, each train metric before its ``val_`` twin."""
    def key(tag: str) -> tuple[int, str, int]:
        base = tag[4:] if tag.startswith("val_") else tag
        return (0 if base == "loss" else 1, base, 1 if tag.startswith("val_") else 0)
    return sorted(set(tags), key=key)


def experiment_pb(hyperparameters: Mapping[str, Any], metrics: Iterable[str], *,
                  time_created_secs: float | None = None) -> summary_pb2.Summary:
    """The experiment summary: the hyperparameters (typed by their values) and the metrics.

    A metric named ``val_*`` is a validation metric, the others training
    metrics; each is the scalar tag of that name in the session's own run.
    """
    values = session_values(hyperparameters)
    infos = [_hparam_info(name, values[name]) for name in sorted(values)]
    metric_infos = [
        api_pb2.MetricInfo(
            name=api_pb2.MetricName(group="", tag=tag),
            dataset_type=api_pb2.DATASET_VALIDATION if tag.startswith("val_") else api_pb2.DATASET_TRAINING,
        )
        for tag in metric_names(metrics)
    ]
    return _as_tensorboard_proto(hp_summary.experiment_pb(infos, metric_infos, time_created_secs=time_created_secs))


class HParamsRecorder:
    """Writes each branch's HParams session once its latest node is final (see the module's rule).

    Args:
        experiment_dir: The experiment's folder; its name and the branch's
            name make the session's trial id (``<experiment>/<branch>``).
    """

    def __init__(self, experiment_dir: str) -> None:
        self.experiment = os.path.basename(os.path.normpath(os.path.abspath(experiment_dir)))
        self._metrics: set[str] = set()
        self._written: set[str] = set()

    @property
    def metrics(self) -> list[str]:
        return metric_names(self._metrics)

    def saw(self, logs: Mapping[str, Any] | None) -> None:
        """At an epoch end: the scalar tags logged (the metrics of every branch of this fit)."""
        for tag, value in (logs or {}).items():
            if isinstance(value, bool):
                continue
            try:
                float(value)
            except (TypeError, ValueError):
                continue
            self._metrics.add(str(tag))

    def trial_id(self, branch: str) -> str:
        return f"{self.experiment}/{branch}"

    def branch_ends(self, writer: SummaryWriter | None, branch: str, hyperparameters: Mapping[str, Any] | None,
                    step: int, *, state: str = "finished") -> bool:
        """Writes ``branch``'s session: its latest node's ``hyperparameters`` and the metrics seen.

        Call when training leaves the branch (before its writer closes) and at
        the end of ``fit``. Returns whether it wrote (once per branch and
        recorder; nothing without a writer or hyperparameters).
        """
        if writer is None or not hyperparameters or branch in self._written:
            return False
        now = time.time()
        writer.summary(experiment_pb(hyperparameters, self._metrics, time_created_secs=now), step)
        writer.summary(session_pb(self.trial_id(branch), hyperparameters, start_time_secs=now), step)
        writer.summary(session_end_pb(state, end_time_secs=now), step)
        self._written.add(branch)
        return True
