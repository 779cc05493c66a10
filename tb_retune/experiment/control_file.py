"""Safe writes to an experiment's control file, shared by the plugin and the CLI.

A write is validated with the trainer's schema against the trainer's status
(its hyperparameters and checkpoints), merged with what the file holds, and
published atomically under a file lock, so two writers at the same moment
never lose one another and the file is never left invalid.
"""

from __future__ import annotations

import os
import time
import uuid
from collections.abc import Mapping
from typing import Any

from tb_retune._errors import ControlError
from tb_retune.experiment import atomic as _atomic
from tb_retune.experiment.control import (
    CONTROL_FILENAME,
    STATUS_FILENAME,
    decode_control,
    merge_control,
    parse_control_object,
)

LOCK_FILENAME = ".retune.json.lock"


def new_restore_id() -> str:
    return f"r-{time.strftime('%Y%m%d-%H%M%S')}-{uuid.uuid4().hex[:6]}"


def read_status(folder: str) -> dict[str, Any] | None:
    try:
        status = _atomic.read_json(os.path.join(folder, STATUS_FILENAME))
    except (OSError, ValueError):
        return None
    return status if isinstance(status, dict) else None


def known_from_status(status: Mapping[str, Any] | None) -> tuple[dict[str, Any] | None, dict[str, list[int]] | None]:
    """The hyperparameters and checkpoints to validate against."""
    if not status:
        return None, None
    hps = status.get("hyperparameters")
    ckpts = status.get("checkpoints")
    return (dict(hps) if isinstance(hps, dict) and hps else None,
            {str(k): list(v) for k, v in ckpts.items()} if isinstance(ckpts, dict) else None)


def read_control(folder: str) -> dict[str, Any]:
    """The control file's object; ``{}`` when absent. An invalid file raises."""
    path = os.path.join(folder, CONTROL_FILENAME)
    try:
        with open(path, "rb") as f:
            data = f.read()
    except FileNotFoundError:
        return {}
    if not data.strip():
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

    Returns the whole new content. Raises ControlError (nothing written) when
    the update or the merged file would be invalid, and OSError when the
    folder cannot be written.
    """
    known, checkpoints = known_from_status(read_status(folder))
    # Validate the update alone first, so the error names what was sent.
    parse_control_object(dict(update), known, checkpoints)
    with _atomic.file_lock(os.path.join(folder, LOCK_FILENAME)):
        try:
            current = read_control(folder)
        except ControlError:
            current = {}  # a broken hand-edited file is replaced by a valid one
        merged = merge_control(current, update)
        try:
            parse_control_object(merged, known, None)
        except ControlError:
            # What was there is stale against the trainer (e.g. a restore to
            # a checkpoint since removed): keep only what is still valid.
            merged = merge_control({k: v for k, v in current.items() if k == "hyperparameters"}, update)
            parse_control_object(merged, known, None)
        _atomic.atomic_write_json(os.path.join(folder, CONTROL_FILENAME), merged)
    return merged
