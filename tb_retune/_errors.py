"""The package's exceptions: one root, so callers can catch all of ours."""

from __future__ import annotations

#: Longest message of an error that a person sees (the status file's
#: ``errors``, the tab, the command line); longer ones are cut in the middle.
MAX_MESSAGE_CHARS = 500
#: Longest key path kept at the start of a cut message.
_MAX_KEY_PART = 200


def bound_message(message: str, limit: int = MAX_MESSAGE_CHARS) -> str:
    """``message`` cut to ``limit`` characters, keeping the key it starts with.

    Messages read ``key: what was wrong``; the key (up to 200 characters) is
    kept, the rest is cut and says how much was left out.
    """
    if len(message) <= limit:
        return message
    key, sep, rest = message.partition(": ")
    if not sep or len(key) > _MAX_KEY_PART:
        key, sep, rest = "", "", message
    head = key + sep
    room = max(limit - len(head) - 40, 20)
    return f"{head}{rest[:room]}... ({len(rest) - room} more characters)"


class RetuneError(Exception):
    """Root of every error that tb-retune raises on purpose."""


class ControlError(RetuneError, ValueError):
    """A control-file revision (or a request to write one) is invalid.

    The message names the key, the value received and what is allowed; it is
    bounded (:data:`MAX_MESSAGE_CHARS`), so no input makes it large.
    """

    def __init__(self, message: str = "", *args: object) -> None:
        super().__init__(bound_message(str(message)), *args)


class PendingRestoreError(ControlError):
    """A restore was asked for while an earlier one is still to be carried out."""


class CheckpointError(RetuneError):
    """A checkpoint is missing, unreadable or does not fit the model."""


class ExperimentLockedError(RetuneError):
    """Another live trainer holds the experiment."""


class ExperimentExistsError(RetuneError):
    """A fresh start was asked for on a folder that already holds an experiment."""
