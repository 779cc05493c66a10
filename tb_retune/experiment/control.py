"""The control file's schema: parsing and validation, pure (no I/O).

One schema in one place: the trainer, the plugin and the command line all
validate ``retune.json`` revisions with :func:`parse_control`, so a request
that the plugin accepts is one that the trainer will apply. The rules for
single values live in :mod:`tb_retune.experiment.values`, the strict JSON
decoding (duplicate keys, huge integers, depth) in
:mod:`tb_retune.experiment.strict_json`.
"""

from __future__ import annotations

import dataclasses
import json
import math
from collections.abc import Iterable, Mapping
from typing import Any

from tb_retune._errors import ControlError
from tb_retune.experiment import strict_json
from tb_retune.experiment.strict_json import key_text
from tb_retune.experiment.values import (  # noqa: F401  (re-exported: the schema's public names)
    CLIP_KEYS,
    FIXED_AT_BUILD,
    describe,
    format_value,
    validate_hyperparameters,
)

CONTROL_FILENAME = "retune.json"
STATUS_FILENAME = "retune-status.json"
CHECKPOINTS_DIRNAME = "checkpoints"

#: Largest control file that is read at all; larger ones are refused unread.
MAX_CONTROL_BYTES = 256 * 1024

TOP_LEVEL_KEYS = ("hyperparameters", "restore", "schedule", "stop", "notes", "revision", "search")
RESTORE_KEYS = ("id", "branch", "step", "hyperparameters")
SCHEDULE_KEYS = ("at_step", "hyperparameters")
REVISION_KEYS = ("id", "keys")
#: Longest id of a restore, of a revision or of a node named in ``notes``.
MAX_ID_CHARS = 200
#: Longest note on a node, in characters.
MAX_NOTE_CHARS = 500

#: Short names used in edge labels (``lr 1e-3 → 3e-4 @ 1200``).
SHORT_NAMES = {
    "learning_rate": "lr",
    "momentum": "mom",
    "weight_decay": "wd",
    "epsilon": "eps",
    "global_clipnorm": "gclipnorm",
}


@dataclasses.dataclass(frozen=True)
class RestoreRequest:
    """A one-shot request to go back to ``step`` of ``branch``."""

    id: str
    branch: str
    step: int
    hyperparameters: Mapping[str, Any]


@dataclasses.dataclass(frozen=True)
class ScheduleEntry:
    at_step: int
    hyperparameters: Mapping[str, Any]

    def key(self) -> str:
        """A stable identity, used to fire each entry once per branch."""
        return json.dumps(
            {"at_step": self.at_step, "hyperparameters": dict(self.hyperparameters)},
            sort_keys=True,
        )


@dataclasses.dataclass(frozen=True)
class ControlRevision:
    """One valid revision of the control file, immutable."""

    hyperparameters: Mapping[str, Any]
    restore: RestoreRequest | None
    schedule: tuple[ScheduleEntry, ...]
    stop: bool
    raw: Mapping[str, Any]
    #: ``revision.id`` stamped by our writer (None for a hand edit).
    revision_id: str | None = None
    #: ``revision.keys``: the hyperparameters that this write set; the trainer
    #: applies them even when their value in the file did not change.
    revision_keys: tuple[str, ...] = ()
    #: The ``search`` request (``tb_retune.experiment.search.SearchRequest``), or None.
    search: Any = None
    #: ``notes``: node id -> the note wanted on it (``""`` removes it).
    notes: Mapping[str, str] = dataclasses.field(default_factory=dict)


def _check_int_step(where: str, value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ControlError(f"{where}: must be a step number (an integer >= 0), got {describe(value)}")
    if isinstance(value, float) and (not math.isfinite(value) or not value.is_integer()):
        raise ControlError(f"{where}: must be a step number (an integer >= 0), got {describe(value)}")
    if value < 0:
        raise ControlError(f"{where}: must be a step number (an integer >= 0), got {describe(value)}")
    return int(value)


def _check_keys(where: str, obj: Mapping[str, Any], allowed: Iterable[str]) -> None:
    allowed = tuple(allowed)
    for key in obj:
        if key not in allowed:
            raise ControlError(
                f"{where + '.' if where else ''}{key_text(str(key))}: unknown key; "
                f"allowed keys are {', '.join(allowed)}"
            )


def parse_restore(
    value: Any,
    known: Mapping[str, Any] | None,
    checkpoints: Mapping[str, Iterable[int]] | None,
) -> RestoreRequest:
    if not isinstance(value, dict):
        raise ControlError(f"restore: must be an object with id, branch and step, got {describe(value)}")
    _check_keys("restore", value, RESTORE_KEYS)
    for key in ("id", "branch", "step"):
        if key not in value:
            raise ControlError(f"restore.{key}: missing; a restore needs id, branch and step")
    rid = value["id"]
    if not isinstance(rid, str) or not rid or len(rid) > MAX_ID_CHARS:
        raise ControlError(f"restore.id: must be a non-empty string, got {describe(rid)}")
    branch = value["branch"]
    if not isinstance(branch, str) or not branch:
        raise ControlError(f"restore.branch: must be a branch name, got {describe(branch)}")
    step = _check_int_step("restore.step", value["step"])
    if checkpoints is not None:
        if branch not in checkpoints:
            names = ", ".join(sorted(checkpoints)) or "none yet"
            raise ControlError(
                f"restore.branch: no branch {describe(branch)} with checkpoints; branches: {names}"
            )
        steps = sorted(int(s) for s in checkpoints[branch])
        if step not in steps:
            shown = ", ".join(str(s) for s in steps[-20:]) or "none yet"
            raise ControlError(
                f"restore.step: branch {describe(branch)} has no checkpoint at step {step}; "
                f"restorable steps: {shown}"
            )
    hps = validate_hyperparameters(
        "restore.hyperparameters", value.get("hyperparameters", {}), known
    )
    return RestoreRequest(id=rid, branch=branch, step=step, hyperparameters=hps)


def parse_notes(value: Any) -> dict[str, str]:
    """The ``notes`` object: node id -> note text (``""`` removes the note)."""
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise ControlError(f"notes: must be an object {{\"<node id>\": \"text\"}}, got {describe(value)}")
    out = {}
    for node, text in value.items():
        if not isinstance(node, str) or not node or len(node) > MAX_ID_CHARS:
            raise ControlError(f"notes: {key_text(str(node))} is not a node id (a non-empty string of at most "
                               f"{MAX_ID_CHARS} characters)")
        where = f"notes.{key_text(node)}"
        if not isinstance(text, str):
            raise ControlError(f"{where}: must be a string (\"\" removes the note), got {describe(text)}")
        if len(text) > MAX_NOTE_CHARS:
            raise ControlError(f"{where}: the note has {len(text)} characters, more than the limit of "
                               f"{MAX_NOTE_CHARS}; shorten it")
        out[node] = text
    return out


def parse_revision(value: Any, hyperparameters: Mapping[str, Any]) -> tuple[str | None, tuple[str, ...]]:
    """``(id, keys)`` of a ``revision`` object (``(None, ())`` when absent)."""
    if value is None:
        return None, ()
    if not isinstance(value, dict):
        raise ControlError(f"revision: must be an object {{id, keys}} as tb-retune writes it, got {describe(value)}")
    _check_keys("revision", value, REVISION_KEYS)
    rid = value.get("id")
    if not isinstance(rid, str) or not rid or len(rid) > MAX_ID_CHARS:
        raise ControlError(f"revision.id: must be a non-empty string, got {describe(rid)}")
    keys = value.get("keys", [])
    if not isinstance(keys, list) or not all(isinstance(k, str) for k in keys):
        raise ControlError(f"revision.keys: must be a list of hyperparameter names, got {describe(keys)}")
    for k in keys:
        if k == "stop":  # this write asked for a stop (obeyed even if the file said true already)
            continue
        if k not in hyperparameters:
            raise ControlError(
                f"revision.keys: names {key_text(k)}, which hyperparameters does not set; "
                "remove the revision key when editing the file by hand"
            )
    return rid, tuple(keys)


def parse_control_object(
    doc: Any,
    known: Mapping[str, Any] | None = None,
    checkpoints: Mapping[str, Iterable[int]] | None = None,
) -> ControlRevision:
    """Validates a decoded control document; raises ControlError if invalid."""
    if not isinstance(doc, dict):
        raise ControlError(
            f"retune.json: must be a JSON object like {{\"hyperparameters\": {{...}}}}, got {describe(doc)}"
        )
    _check_keys("", doc, TOP_LEVEL_KEYS)
    hps = validate_hyperparameters("hyperparameters", doc.get("hyperparameters", {}), known)
    restore = None
    if doc.get("restore") is not None:
        restore = parse_restore(doc["restore"], known, checkpoints)
    schedule_doc = doc.get("schedule", [])
    if not isinstance(schedule_doc, list):
        raise ControlError(f"schedule: must be a list of {{at_step, hyperparameters}}, got {describe(schedule_doc)}")
    schedule = []
    for i, entry in enumerate(schedule_doc):
        where = f"schedule[{i}]"
        if not isinstance(entry, dict):
            raise ControlError(f"{where}: must be an object with at_step and hyperparameters, got {describe(entry)}")
        _check_keys(where, entry, SCHEDULE_KEYS)
        if "at_step" not in entry:
            raise ControlError(f"{where}.at_step: missing")
        at = _check_int_step(f"{where}.at_step", entry["at_step"])
        ehps = validate_hyperparameters(f"{where}.hyperparameters", entry.get("hyperparameters", {}), known)
        schedule.append(ScheduleEntry(at_step=at, hyperparameters=ehps))
    schedule.sort(key=lambda e: e.at_step)
    stop = doc.get("stop", False)
    if not isinstance(stop, bool):
        raise ControlError(f"stop: must be true or false, got {describe(stop)}")
    notes = parse_notes(doc.get("notes"))
    revision_id, revision_keys = parse_revision(doc.get("revision"), hps)
    search = None
    if doc.get("search") is not None:
        from tb_retune.experiment.search import parse_search  # it builds on this module

        search = parse_search(doc["search"], known, checkpoints)
    return ControlRevision(
        hyperparameters=hps, restore=restore, schedule=tuple(schedule), stop=stop, raw=doc,
        revision_id=revision_id, revision_keys=revision_keys, search=search, notes=notes,
    )


def decode_control(data: bytes) -> Any:
    """Decodes the bytes of a control file, with errors a person can act on.

    ``data`` may be a :class:`~tb_retune.experiment.safe_read.ReadFailure`
    (the file could not be read: a folder, a FIFO, a link out of the
    experiment): its reason is raised like any other error of the file.
    """
    reason = getattr(data, "reason", None)
    if reason is not None:
        raise ControlError(str(reason))
    if len(data) > MAX_CONTROL_BYTES:
        raise ControlError(
            f"retune.json: file is {len(data)} bytes, larger than the limit of "
            f"{MAX_CONTROL_BYTES} bytes; keep only hyperparameters, restore, schedule, stop and notes"
        )
    if not data.strip():
        raise ControlError("retune.json: the file is empty; write a JSON object such as {\"hyperparameters\": {\"learning_rate\": 0.001}}")
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as e:
        raise ControlError(f"retune.json: not UTF-8 text (byte {e.start}); write the file as JSON text") from None
    return strict_json.loads(text, what="retune.json")


def parse_control(
    data: bytes,
    known: Mapping[str, Any] | None = None,
    checkpoints: Mapping[str, Iterable[int]] | None = None,
) -> ControlRevision:
    """Parses and validates the bytes of a control file.

    Args:
        data: The file's content.
        known: The optimizer's hyperparameters in force (name -> value); None
            to check values only.
        checkpoints: Restorable steps per branch; None to skip that check.

    Raises:
        ControlError: naming the key, the value and what is allowed.
    """
    return parse_control_object(decode_control(data), known, checkpoints)


def describe_change(old: Mapping[str, Any], new: Mapping[str, Any]) -> str:
    """``learning_rate 0.001 -> 0.0003, momentum 0.9 -> 0`` for the log."""
    parts = []
    for name in sorted(new):
        if name in old and old[name] == new[name]:
            continue
        parts.append(f"{name} {format_value(old.get(name))} -> {format_value(new[name])}")
    return ", ".join(parts)


def merge_control(current: Mapping[str, Any], update: Mapping[str, Any]) -> dict[str, Any]:
    """Merges a write into the control file's object.

    ``hyperparameters`` and ``notes`` are merged key by key (a note set to
    ``""`` stays, so the trainer records its removal); ``restore``,
    ``schedule`` and ``stop`` replace what was there.
    """
    merged = dict(current)
    for key, value in update.items():
        if key in ("hyperparameters", "notes") and isinstance(merged.get(key), dict) and isinstance(value, dict):
            hp = dict(merged[key])
            hp.update(value)
            merged[key] = hp
        else:
            merged[key] = value
    return merged
