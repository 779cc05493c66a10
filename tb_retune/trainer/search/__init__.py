"""Search from any node: K settings tried from one checkpoint, each a branch.

The engine (:class:`SearchEngine`) runs the ``search`` request of the control
file with Optuna (ask/tell, its samplers and pruners, its journal storage in
the experiment folder) on the training thread, at batch boundaries, through
a small protocol (:class:`TrialHost`) that the trainer implements. It never
touches Keras; more processes join a running search as workers
(:class:`SearchWorker`, ``tb-retune worker``). Optuna is imported only when a
search runs. See ``docs/search.md``.
"""

from __future__ import annotations

from tb_retune.trainer.search._engine import SearchEngine
from tb_retune.trainer.search._host import NOTHING, Action, Leave, SearchDone, TrialEnd, TrialHost, TrialStart
from tb_retune.trainer.search._status import search_entry
from tb_retune.trainer.search._study import JOURNAL_FILENAME, SEARCH_DIRNAME, journal_path
from tb_retune.trainer.search._worker import NoSearchRunning, SearchWorker, running_searches

__all__ = [
    "JOURNAL_FILENAME",
    "NOTHING",
    "Leave",
    "NoSearchRunning",
    "SEARCH_DIRNAME",
    "Action",
    "SearchDone",
    "SearchEngine",
    "SearchWorker",
    "TrialEnd",
    "TrialHost",
    "TrialStart",
    "journal_path",
    "running_searches",
    "search_entry",
]
