"""Notes on nodes: which note records the trainer writes, and when.

A person attaches a note to a node through the control file's ``notes``
key (``{"<node id>": "text"}``, ``""`` removes it). The trainer records each
note in the event files, as a ``retune`` summary under ``retune/note/<node
id>`` (:func:`tb_retune.experiment.metadata.note_pb`), so the tree stays
rebuildable from the event files alone.

**The rule.** A note record is written when a revision of the control file
is applied and a node's note in it differs from the text last recorded for
that node (a node never recorded counts as ``""``); a node that the file
does not name keeps its note. So a note is written once per change, not at
every revision. What was recorded is kept in the trainer's status
(internal key ``notes_recorded``: node id -> the record written), so a
restarted trainer does not write the notes again; and as a resume drops
the events at or after its step from the active branch's run (and
TensorBoard does too, from the ``SessionLog.START`` there), the resumed
trainer writes every recorded record again at the resume step with its
original ``time``: the latest record of a node, by ``time``, is its note,
wherever and however often it was written.

Records go into the run that the trainer is writing (the active branch),
whatever branch the node belongs to: the reader gathers the notes of every
run of the experiment.

Example (what the controller does at a revision and at a resume)::

    recorded = notes.record_notes(writer, revision.notes, status.get("notes_recorded"), step)
    status.update(notes_recorded=recorded)
    ...
    notes.rewrite_notes(writer, previous.get("notes_recorded"), resume_step)
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from typing import Any

from tb_retune.experiment import metadata
from tb_retune.trainer.summaries import BranchWriter

#: The status key where the trainer keeps the note records it wrote.
STATUS_KEY = "notes_recorded"


def recorded_texts(recorded: Mapping[str, Any] | None) -> dict[str, str]:
    """Node id -> the text last recorded, from the status' ``notes_recorded``."""
    out = {}
    for node, record in (recorded or {}).items():
        if isinstance(record, Mapping) and isinstance(record.get("text"), str):
            out[str(node)] = record["text"]
    return out


def notes_to_write(
    wanted: Mapping[str, str], recorded: Mapping[str, Any] | None, *, now: float
) -> list[dict[str, Any]]:
    """The note records to write for a revision (pure).

    Args:
        wanted: The revision's notes (``ControlRevision.notes``).
        recorded: The status' ``notes_recorded`` (None when there is none).
        now: The records' ``time``.

    Returns:
        One record per node whose wanted text differs from the recorded
        one, sorted by node id; ``[]`` when nothing changed.
    """
    texts = recorded_texts(recorded)
    return [
        metadata.note_record(node, text, now)
        for node, text in sorted(wanted.items())
        if text != texts.get(node, "")
    ]


def recorded_after(
    recorded: Mapping[str, Any] | None, records: list[dict[str, Any]]
) -> dict[str, dict[str, Any]]:
    """The ``notes_recorded`` once ``records`` are written (pure)."""
    out = {str(k): dict(v) for k, v in (recorded or {}).items() if isinstance(v, Mapping)}
    for record in records:
        out[str(record["node"])] = dict(record)
    return out


def record_notes(
    writer: BranchWriter | None,
    wanted: Mapping[str, str],
    recorded: Mapping[str, Any] | None,
    step: int,
    *,
    now: float | None = None,
) -> dict[str, dict[str, Any]]:
    """Writes the notes that changed at ``step`` and returns the new ``notes_recorded``.

    With no writer (nothing open yet) nothing is written and ``recorded`` is
    returned unchanged, so the notes are written at the next revision.
    """
    records = notes_to_write(wanted, recorded, now=time.time() if now is None else now)
    if writer is None or not records:
        return recorded_after(recorded, [])
    writer.notes(records, step)
    return recorded_after(recorded, records)


def rewrite_notes(writer: BranchWriter | None, recorded: Mapping[str, Any] | None, step: int) -> None:
    """Writes every recorded note record again at ``step`` (after a resume).

    The records keep their ``time``, so a note changed later elsewhere still
    wins; removals (``""``) are written too, so an older note does not come
    back.
    """
    if writer is None:
        return
    records = [dict(v) for _, v in sorted(recorded_after(recorded, []).items())
               if isinstance(v.get("text"), str) and isinstance(v.get("time"), (int, float))]
    writer.notes(records, step)
