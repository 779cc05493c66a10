"""Which trials of a search count, when several processes share its study.

A search has ``trials`` slots. Every process (the trainer and any number of
workers, ``docs/search.md``) asks the shared Optuna study for trials, and
the storage gives out trial numbers one by one; nothing else is shared and
nobody coordinates. These rules, a pure function of the study's trials, are
what makes "exactly ``trials`` trials" hold however the asks interleave:

- A trial is a **slot** trial (the baseline, or a fresh one from ``ask``) or
  a **retry** (user attribute ``retry_of``: it runs a lost trial's settings
  again). The slot trials in the order of their numbers take the slots; one
  asked after the slots are gone is **surplus**: its process marks it
  (``surplus``) and fails it without running it. Every process computes the
  same answer for the same number, so two processes asking "the last one"
  at once give one of them a surplus trial, never a thirteenth trial.
- A trial is **lost** when it failed without a ``reason``: its process died
  (Optuna's heartbeat failed it), was killed, or ``fit`` ended inside it. A
  failure that the trial itself produced (a diverged value, no metric)
  always has a ``reason`` and counts. A lost trial is run again by its
  **first retry** (the lowest-numbered trial whose ``retry_of`` names it);
  another retry of it, or a retry of a trial that is not lost (it finished
  after all), is surplus.
- So the trials that count are the slot trials in a slot and the first
  retries, minus the lost ones: exactly ``trials`` once none is running,
  none is waiting and every lost trial has its retry.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

#: Trial user attributes of these rules.
ATTR_RETRY_OF = "retry_of"
ATTR_SURPLUS = "surplus"
ATTR_REASON = "reason"


def is_retry(trial: Any) -> bool:
    return trial.user_attrs.get(ATTR_RETRY_OF) is not None


def is_lost(trial: Any) -> bool:
    """Failed without a reason of its own (a dead or stopped process), not surplus."""
    attrs = trial.user_attrs
    return trial.state.name == "FAIL" and not attrs.get(ATTR_REASON) and not attrs.get(ATTR_SURPLUS)


def _by_number(trials: Iterable[Any]) -> list[Any]:
    return sorted(trials, key=lambda t: t.number)


def slot_numbers(trials: Iterable[Any], slots: int) -> set[int]:
    """The numbers of the slot trials that hold a slot (the first ``slots``)."""
    firsts = [t.number for t in _by_number(trials) if not is_retry(t)]
    return set(firsts[:slots])


def first_retries(trials: Iterable[Any]) -> dict[int, int]:
    """``{lost trial number: number of its first retry}``."""
    ordered = _by_number(trials)
    lost = {t.number for t in ordered if is_lost(t)}
    out: dict[int, int] = {}
    for t in ordered:
        of = t.user_attrs.get(ATTR_RETRY_OF)
        if of is not None and int(of) in lost and int(of) not in out:
            out[int(of)] = t.number
    return out


def admitted(trial: Any, trials: Sequence[Any], slots: int) -> bool:
    """Whether ``trial``, just taken from ``ask``, may run (else it is surplus).

    ``trials``: the study's trials, ``trial`` among them."""
    if is_retry(trial):
        return first_retries(trials).get(int(trial.user_attrs[ATTR_RETRY_OF])) == trial.number
    return trial.number in slot_numbers(trials, slots)


def counts(trials: Sequence[Any], slots: int) -> set[int]:
    """The numbers of the trials that count (running ones included)."""
    ordered = _by_number(trials)
    firsts = slot_numbers(ordered, slots)
    retries = set(first_retries(ordered).values())
    return {t.number for t in ordered if (t.number in firsts or t.number in retries)
            and not is_lost(t) and not t.user_attrs.get(ATTR_SURPLUS)}


def slots_taken(trials: Iterable[Any], slots: int) -> bool:
    """Whether every slot has been given out (more asks would be surplus)."""
    return len(slot_numbers(trials, slots)) >= slots


def lost_without_retry(trials: Sequence[Any], slots: int) -> list[Any]:
    """The lost trials that hold a slot (or are a first retry) and have no
    retry yet: a process that failed one died before it queued the retry."""
    ordered = _by_number(trials)
    firsts = slot_numbers(ordered, slots)
    retried = first_retries(ordered)
    chain = firsts | set(retried.values())
    return [t for t in ordered if is_lost(t) and t.number in chain and t.number not in retried]
