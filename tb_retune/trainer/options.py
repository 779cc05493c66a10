"""The controller's arguments, checked once at construction."""

from __future__ import annotations

import dataclasses
import os
from typing import Any

from tb_retune.trainer.search._heartbeat_defaults import DEFAULT_HEARTBEAT


def _positive_or_none(name: str, value: Any) -> None:
    if value is not None and (isinstance(value, bool) or not isinstance(value, int) or value < 1):
        raise ValueError(f"`{name}` must be a positive integer or None. Received: {name}={value!r}")


@dataclasses.dataclass(frozen=True)
class ControllerOptions:
    """What :class:`~tb_retune.RetuneController` was asked to do (see its docstring)."""

    logdir: str
    checkpoint_every_epochs: int | None = 1
    checkpoint_every_steps: int | None = None
    keep_checkpoints: int | None = 5
    update_freq: str | int = "epoch"
    polling: bool = False
    resume: bool = True
    heartbeat_s: float = 2.0
    debounce_s: float = 0.02
    background_checkpoints: bool = True
    verbose: bool = True
    #: Any Optuna storage URL for the searches' studies; None: the journal file.
    search_storage: str | None = None
    #: ``(heartbeat_interval, grace_period)`` in seconds for the trials of a search.
    search_heartbeat: tuple[int, int] = DEFAULT_HEARTBEAT

    def __post_init__(self) -> None:
        logdir = self.logdir
        if not isinstance(logdir, (str, os.PathLike)) or not str(logdir):
            raise ValueError(f"`logdir` must be a folder path. Received: logdir={logdir!r}")
        object.__setattr__(self, "logdir", os.path.abspath(os.fspath(logdir)))
        for name in ("checkpoint_every_epochs", "checkpoint_every_steps", "keep_checkpoints"):
            _positive_or_none(name, getattr(self, name))
        freq = self.update_freq
        if freq != "epoch" and (isinstance(freq, bool) or not isinstance(freq, int) or freq < 1):
            raise ValueError(f"`update_freq` must be 'epoch' or a positive integer. Received: update_freq={freq!r}")
        if self.search_storage is not None and (not isinstance(self.search_storage, str) or not self.search_storage):
            raise ValueError("`search_storage` must be an Optuna storage URL (e.g. "
                             f"'postgresql://user@host/db') or None. Received: search_storage={self.search_storage!r}")
        hb = self.search_heartbeat
        if (not isinstance(hb, (tuple, list)) or len(hb) != 2
                or any(isinstance(v, bool) or not isinstance(v, int) or v < 1 for v in hb) or hb[1] <= hb[0]):
            raise ValueError("`search_heartbeat` must be (heartbeat_interval, grace_period), positive integer "
                             f"seconds with grace_period > heartbeat_interval. Received: search_heartbeat={hb!r}")
        object.__setattr__(self, "search_heartbeat", (int(hb[0]), int(hb[1])))
        if not isinstance(self.heartbeat_s, (int, float)) or self.heartbeat_s <= 0:
            raise ValueError(f"`heartbeat_s` must be > 0. Received: heartbeat_s={self.heartbeat_s!r}")
