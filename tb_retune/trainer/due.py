"""When a batch boundary can next have anything to do.

Every batch asks whether something is due: a new control-file revision, a
schedule entry, a periodic checkpoint, an agreement of several processes, a
search, a resume or a deferred checkpoint. All but the first are known in
advance. :func:`quiet_until` folds them into one step number, computed
again after every boundary that did any work (and at each epoch's end), so
a batch before that step costs one comparison and one look at the mailbox.
"""

from __future__ import annotations

import math

from tb_retune.trainer import search_host
from tb_retune.trainer.distributed import Cluster
from tb_retune.trainer.session import Session

#: A boundary at any step may have work: every batch takes the full look.
ALWAYS = -1


def next_multiple(step: int, every: int, *, above_zero: bool = False) -> int:
    """The smallest multiple of ``every`` that is at least ``step`` (above 0 with ``above_zero``)."""
    first = -(-step // every) * every
    return every if above_zero and first <= 0 else first


def quiet_until(s: Session, cluster: Cluster | None) -> float:
    """The first step (of a batch about to run, from ``s.steps.current()``)
    at which anything but a new revision can be due; :data:`ALWAYS` while
    something is due at every boundary (a search, a resume, a deferred
    checkpoint, a search worker); ``inf`` when nothing ever is."""
    if (s.worker_spec is not None or s.checkpoints.deferred is not None or s.resume_pending
            or search_host.busy(s)):
        return ALWAYS
    step = s.steps.current()
    candidates: list[int] = []
    if s.schedule.next_step is not None:
        candidates.append(s.schedule.next_step)
    every = s.checkpoints.every_steps
    if every:
        candidates.append(next_multiple(step, every, above_zero=True))
    if cluster is not None:
        candidates.append(next_multiple(step, cluster.every))
    return min(candidates, default=math.inf)
