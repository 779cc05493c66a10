"""What ``tb-retune worker`` hands to the training command it runs.

``tb-retune worker EXP -- COMMAND`` runs the user's own training command
with the environment variable :data:`ENV_VAR` set to a :class:`WorkerSpec`
in JSON; the ``RetuneCallback`` in that command reads it at the start of
``fit`` and joins the running search of ``EXP`` instead of training the
experiment's branch. When ``fit`` ends, the callback writes a
:class:`WorkerReport` to ``report`` for the command line to read (the one
writer of that file); nothing else crosses between the two processes.
No TensorFlow or Optuna here: the command line imports it.
"""

from __future__ import annotations

import dataclasses
import json
import os
from collections.abc import Mapping
from typing import Any

from tb_retune.experiment.atomic import atomic_open

#: The environment variable that makes a ``RetuneCallback`` a search worker.
ENV_VAR = "TB_RETUNE_WORKER"
#: Where workers keep their own status (one folder each) in the experiment.
WORKERS_DIRNAME = "workers"

#: Why a worker's ``fit`` ended (``WorkerReport.reason``).
REASON_DONE = "done"  # the search has no trial left to run
REASON_NO_STEPS = "no_steps"  # this fit had fewer steps left than a trial takes
REASON_FIT_ENDED = "fit_ended"  # fit ended by itself (its epochs were over)
REASON_NO_SEARCH = "no_search"  # no search runs in the experiment
REASON_FAILED = "failed"  # an error (``error`` says which)
REASONS = (REASON_DONE, REASON_NO_STEPS, REASON_FIT_ENDED, REASON_NO_SEARCH, REASON_FAILED)


@dataclasses.dataclass(frozen=True)
class WorkerSpec:
    """Args:
        experiment: The experiment folder (absolute).
        storage: An Optuna storage URL, or None for the experiment's journal.
        search: The id of the search to join, or None for the one running.
        folder: This worker's own folder (its status, state and lock).
        report: Where the callback writes its :class:`WorkerReport`.
        wait_until: Unix time until which the callback waits for a search
            to start (``--wait-for-search``), or None: forever.
    """

    experiment: str
    storage: str | None
    search: str | None
    folder: str
    report: str
    wait_until: float | None = None

    def to_env(self) -> str:
        return json.dumps(dataclasses.asdict(self), sort_keys=True)

    @staticmethod
    def from_env(environ: Mapping[str, str] | None = None) -> WorkerSpec | None:
        """The spec in :data:`ENV_VAR`, or None when it is not set.

        Raises:
            ValueError: the variable is set but is not a spec (says what to do).
        """
        raw = (os.environ if environ is None else environ).get(ENV_VAR)
        if not raw:
            return None
        try:
            doc = json.loads(raw)
            spec = WorkerSpec(experiment=str(doc["experiment"]), storage=doc.get("storage") or None,
                              search=doc.get("search") or None, folder=str(doc["folder"]),
                              report=str(doc["report"]),
                              wait_until=None if doc.get("wait_until") is None else float(doc["wait_until"]))
        except (ValueError, KeyError, TypeError) as e:
            raise ValueError(f"{ENV_VAR} is set but is not what `tb-retune worker` writes ({e}); "
                             f"unset it to train normally, or start the command with `tb-retune worker`") from None
        return spec


@dataclasses.dataclass(frozen=True)
class WorkerReport:
    """What one run of the command did in the search.

    ``trials``: the numbers of the trials it finished (complete, pruned or
    failed by their own result); ``reason``: one of :data:`REASONS`."""

    search: str | None
    reason: str
    trials: tuple[int, ...] = ()
    error: str | None = None
    pid: int = dataclasses.field(default_factory=os.getpid)

    def write(self, path: str) -> None:
        """Writes the report; a later ``fit`` of the same process adds to what
        an earlier one reported (a script may call ``fit`` twice)."""
        report = self
        earlier = WorkerReport.read(path)
        if earlier is not None and earlier.pid == self.pid:
            reason = earlier.reason if self.reason == REASON_NO_SEARCH else self.reason
            report = dataclasses.replace(self, search=self.search or earlier.search, reason=reason,
                                         trials=earlier.trials + self.trials, error=self.error or earlier.error)
        with atomic_open(path) as f:
            f.write(json.dumps({"search": report.search, "reason": report.reason, "trials": list(report.trials),
                                "error": report.error, "pid": report.pid}).encode("utf-8"))

    @staticmethod
    def read(path: str) -> WorkerReport | None:
        try:
            with open(path, "rb") as f:
                doc: Any = json.loads(f.read(1 << 20))
            return WorkerReport(search=doc.get("search"), reason=str(doc["reason"]),
                                trials=tuple(int(n) for n in doc.get("trials") or ()), error=doc.get("error"),
                                pid=int(doc.get("pid") or 0))
        except (OSError, ValueError, KeyError, TypeError):
            return None


def workers_folder(experiment: str) -> str:
    from tb_retune.experiment.search import SEARCH_DIRNAME

    return os.path.join(experiment, SEARCH_DIRNAME, WORKERS_DIRNAME)
