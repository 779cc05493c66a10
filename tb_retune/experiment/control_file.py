"""Safe writes to an experiment's control file, shared by the plugin and the CLI.

A write is validated with the trainer's schema against the trainer's status
(its hyperparameters and checkpoints), merged with what the file holds,
stamped with a new ``revision`` (see :mod:`tb_retune.experiment.requests`)
and published atomically under a file lock, so two writers at the same moment
never lose one another and the file is never left invalid. The status file is
read here too, by the one bounded reader that the plugin and the CLI share.
"""

from __future__ import annotations

import hashlib
import os
import time
import uuid
from collections.abc import Mapping
from typing import Any

from tb_retune._errors import ControlError, PendingRestoreError
from tb_retune.experiment import atomic as _atomic
from tb_retune.experiment import requests, safe_read
from tb_retune.experiment.control import (
    CONTROL_FILENAME,
    MAX_CONTROL_BYTES,
    STATUS_FILENAME,
    decode_control,
    merge_control,
    parse_control_object,
)

LOCK_FILENAME = ".retune.json.lock"
#: Largest status file that is read at all.
MAX_STATUS_BYTES = 4 * 1024 * 1024


def new_restore_id() -> str:
    return f"r-{time.strftime('%Y%m%d-%H%M%S')}-{uuid.uuid4().hex[:6]}"


def new_revision_id() -> str:
    """``w-<12 hex>``: the id our writer stamps on each write."""
    return f"w-{uuid.uuid4().hex[:12]}"


def join(folder: str, filename: str) -> str:
    """``folder/filename``, for a local folder or a remote one (``gs://...``)."""
    return os.path.join(folder, filename) if "://" not in folder else folder.rstrip("/") + "/" + filename


def read_status_checked(folder: str) -> tuple[dict[str, Any] | None, str | None]:
    """``(status, error)``: the decoded ``retune-status.json`` of ``folder``.

    ``(None, None)`` when there is none; ``(None, why)`` when it cannot be
    used: not a regular file, a link out of the folder, larger than
    :data:`MAX_STATUS_BYTES`, invalid JSON (e.g. a writer that is not atomic,
    caught mid-write), or not an object.
    """
    within = folder if "://" not in folder else None
    try:
        status = safe_read.read_json_file(join(folder, STATUS_FILENAME), MAX_STATUS_BYTES, within=within)
    except (OSError, ControlError) as e:
        return None, str(e)
    if status is None:
        return None, None
    if not isinstance(status, dict):
        return None, f"{STATUS_FILENAME}: holds something other than a JSON object"
    return status, None


def read_status(folder: str) -> dict[str, Any] | None:
    """The decoded ``retune-status.json`` of ``folder``, or None (absent or unusable)."""
    return read_status_checked(folder)[0]


def known_from_status(status: Mapping[str, Any] | None) -> tuple[dict[str, Any] | None, dict[str, list[int]] | None]:
    """The hyperparameters and checkpoints to validate against."""
    if not status:
        return None, None
    hps = status.get("hyperparameters")
    ckpts = status.get("checkpoints")
    return (dict(hps) if isinstance(hps, dict) and hps else None,
            {str(k): list(v) for k, v in ckpts.items() if isinstance(v, list)} if isinstance(ckpts, dict) else None)


def read_control_bytes(folder: str) -> bytes | None:
    """The control file's bytes, bounded; None when absent.

    Raises UnsafeFileError for a folder, FIFO, device, a link out of the
    experiment folder, or a file larger than the schema's limit.
    """
    within = folder if "://" not in folder else None
    return safe_read.read_small(join(folder, CONTROL_FILENAME), MAX_CONTROL_BYTES, within=within)


def read_control(folder: str) -> dict[str, Any]:
    """The control file's object; ``{}`` when absent. An invalid file raises
    ControlError, one that cannot be read safely UnsafeFileError."""
    data = read_control_bytes(folder)
    if data is None or not data.strip():
        return {}
    return decode_control_object(data)


def decode_control_object(data: bytes) -> dict[str, Any]:
    """The object that a control file's bytes hold; anything else raises ControlError."""
    doc = decode_control(data)
    if not isinstance(doc, dict):
        raise ControlError("retune.json: holds something other than a JSON object; fix or delete it")
    return doc


def write_control(folder: str, update: Mapping[str, Any]) -> dict[str, Any]:
    """Validates ``update``, merges it into ``<folder>/retune.json`` atomically.

    The file is stamped with a new ``revision`` whose ``keys`` are the
    hyperparameters that ``update`` sets; returns the whole new content
    (``content["revision"]["id"]`` is the id to follow with
    :func:`tb_retune.experiment.requests.request_state`).

    Raises:
        PendingRestoreError: ``update`` holds a new restore while the one in
            the file is still pending (nothing written).
        ControlError: the update or the merged file would be invalid
            (nothing written).
        UnsafeFileError: the control file is a folder, a FIFO, a link out
            of the experiment folder or too large (nothing written).
        OSError: the folder cannot be written.
    """
    status = read_status(folder)
    known, checkpoints = known_from_status(status)
    # Validate the update alone first, so the error names what was sent.
    parse_control_object(dict(update), known, checkpoints)
    with _atomic.file_lock(os.path.join(folder, LOCK_FILENAME)):
        data = read_control_bytes(folder)
        try:
            current = decode_control_object(data) if data is not None and data.strip() else {}
        except ControlError:
            current = {}  # a broken hand-edited file is replaced by a valid one
        if isinstance(update.get("restore"), Mapping):
            # The status is read again under the lock: the trainer may have
            # carried out the earlier restore since.
            sha = hashlib.sha256(data).hexdigest() if data is not None else None
            pending = requests.pending_restore(current, read_status(folder), sha)
            if pending is not None and pending.get("id") != update["restore"].get("id"):
                raise PendingRestoreError(requests.describe_pending(pending))
        merged = merge_control(current, update)
        try:
            parse_control_object(merged, known, None)
        except ControlError:
            # What was there is stale against the trainer (e.g. a restore to
            # a checkpoint since removed): keep only what is still valid.
            merged = merge_control({k: v for k, v in current.items() if k == "hyperparameters"}, update)
            parse_control_object(merged, known, None)
        hps = update.get("hyperparameters")
        keys = sorted(hps) if isinstance(hps, Mapping) else []
        if update.get("stop") is True:
            keys.append("stop")  # a new stop is obeyed even when the file said true already
        merged["revision"] = {"id": new_revision_id(), "keys": keys}
        data_out = _atomic.dumps(merged)
        if len(data_out) > MAX_CONTROL_BYTES:
            # The trainer would refuse the whole file unread (notes are what grows).
            raise ControlError(
                f"retune.json: this write would make the file {len(data_out)} bytes, larger than the limit of "
                f"{MAX_CONTROL_BYTES} bytes; delete from its notes those the tree shows already (the event files "
                "keep them) or shorten the schedule"
            )
        _atomic.atomic_write_bytes(os.path.join(folder, CONTROL_FILENAME), data_out)
    return merged
