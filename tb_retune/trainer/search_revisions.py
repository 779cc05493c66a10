"""A control-file revision while a search runs, and a revision's ``search``.

The rule while a search runs (``docs/search.md``): a change of
hyperparameters, a restore or a new schedule in the control file would make
the trials incomparable, so they are refused (one error naming ``search``)
and the rest of the revision is taken: ``stop`` still stops, and a new
``search`` request waits for the one in progress. A refused change is not
taken later: write it again once the search is done. (A refused schedule is
the exception: the file still differs from the schedule in force, so the
first revision after the search takes it.)

:func:`during_search` is the end of the revision's plan, :func:`validate`
and :func:`commit` its search parts (``revisions``).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from tb_retune.experiment.control import format_value
from tb_retune.trainer.session import Session

if TYPE_CHECKING:
    from tb_retune.trainer.revisions import RevisionPlan

_MISSING = object()


@dataclasses.dataclass(frozen=True)
class SearchPart:
    """What a revision holds about searches: a request to submit, a restore refused."""

    request: Any = None  # tb_retune.experiment.search.SearchRequest
    refused_restore: str | None = None

    def empty(self) -> bool:
        return self.request is None


def during_search(s: Session, p: RevisionPlan, seen: Mapping[str, Any] | None,
                  request: Any) -> RevisionPlan:
    """The plan as it is taken: with the revision's search request, and with
    the changes stripped (and reported) while a search runs."""
    if request is not None and s.search is not None and s.search.check(request) == "same":
        request = None  # carried out (or under way) already: the file keeps it
    running = s.search.running if s.search is not None else None
    if running is None:
        return dataclasses.replace(p, search=SearchPart(request))
    refused = [f"hyperparameters.{k}={format_value(v)}" for k, v in p.hyperparameters.items()
               if seen is None or seen.get(k, _MISSING) != v]
    if p.restore is not None:
        refused.append(f"restore {p.restore.branch}@{p.restore.step} (id {p.restore.id})")
    if p.schedule is not None:
        refused.append("schedule")
    if refused:
        s.report_error(
            f"search: search {running} is running, so {', '.join(refused)} from the control file "
            "is not carried out (a change during a search makes its trials incomparable); write it again "
            "once the search is done (`tb-retune status` shows it), or stop training with stop")
    return dataclasses.replace(
        p, hyperparameters={}, restore=None, schedule=None,
        search=SearchPart(request, p.restore.id if p.restore is not None else None))


def validate(s: Session, p: RevisionPlan) -> None:
    """Checks the revision's search request (raises ControlError naming ``search``)."""
    if s.search is not None and p.search is not None and p.search.request is not None:
        s.search.check(p.search.request)


def commit(s: Session, p: RevisionPlan) -> None:
    if p.search is None:
        return
    if p.search.refused_restore is not None:
        s.state.add_restore_done(p.search.refused_restore)  # refused for good, like one carried out
    if s.search is not None and p.search.request is not None:
        s.search.submit(p.search.request)
