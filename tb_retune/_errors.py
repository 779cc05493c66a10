"""The package's exceptions: one root, so callers can catch all of ours."""

from __future__ import annotations


class RetuneError(Exception):
    """Root of every error that tb-retune raises on purpose."""


class ControlError(RetuneError, ValueError):
    """A control-file revision (or a request to write one) is invalid.

    The message names the key, the value received and what is allowed.
    """


class CheckpointError(RetuneError):
    """A checkpoint is missing, unreadable or does not fit the model."""


class ExperimentLockedError(RetuneError):
    """Another live trainer holds the experiment."""


class ExperimentExistsError(RetuneError):
    """A fresh start was asked for on a folder that already holds an experiment."""
