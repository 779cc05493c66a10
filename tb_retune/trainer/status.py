"""The trainer's ``retune-status.json``: a heartbeat thread and atomic writes."""

from __future__ import annotations

import contextlib
import logging
import math
import os
import threading
import time
from collections.abc import Callable
from typing import Any

from tb_retune._errors import bound_message
from tb_retune.experiment import atomic as _atomic

logger = logging.getLogger("tb_retune")

MAX_LIST = 50


class StatusFile:
    """Holds the status dict and writes it atomically.

    The training thread changes the dict under :attr:`lock` (cheap); the
    heartbeat thread writes a snapshot every ``heartbeat_s`` seconds, at once
    after :meth:`poke`, and after ``poke(soon=True)`` (what happens every epoch
    or checkpoint) once ``min_gap_s`` has passed since the last write: epochs
    of a tenth of a second cost one write per ``min_gap_s``, not one each. ``prepare`` runs before each write, and what it
    returns is handed to ``refresh``, which fills the dict; ``guard`` (a
    re-entrant lock) is held over both. :meth:`write_now` writes synchronously, for the
    records a restarted trainer relies on (applied restores, new nodes).
    """

    def __init__(self, path: str, data: dict[str, Any], *, heartbeat_s: float = 2.0,
                 refresh: Callable[[dict[str, Any], Any], None] | None = None,
                 prepare: Callable[[], Any] | None = None,
                 guard: contextlib.AbstractContextManager[Any] | None = None,
                 tick: Callable[[], None] | None = None, min_gap_s: float = 0.5) -> None:
        self.path = path
        self.data = data
        self.lock = threading.Lock()
        self._write_lock = threading.Lock()
        self._heartbeat_s = heartbeat_s
        self._min_gap_s = min_gap_s
        self._urgent = False
        self._last_write = -math.inf  # time.monotonic() of the last write
        self._refresh = refresh
        self._prepare = prepare
        self._guard = guard if guard is not None else contextlib.nullcontext()
        self._tick = tick
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="tb-retune-status", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.is_set():
            self._wake.wait(self._heartbeat_s)
            while not self._urgent and not self._stop.is_set():  # only soon pokes: keep the gap
                gap = self._last_write + self._min_gap_s - time.monotonic()
                if gap <= 0:
                    break
                self._wake.clear()
                self._wake.wait(gap)  # an urgent poke or stop() ends it early
            self._wake.clear()
            self._urgent = False
            if self._stop.is_set():
                return
            if self._tick is not None:
                self._tick()
            try:
                self.write_now(durable=False, heartbeat=True)
            except OSError as e:
                logger.warning("retune: cannot write %s: %s", self.path, e)

    def poke(self, *, soon: bool = False) -> None:
        """Asks for a write now, or with ``soon`` within ``min_gap_s`` of the last one."""
        if not soon:
            self._urgent = True
        self._wake.set()

    def update(self, **values: Any) -> None:
        with self.lock:
            self.data.update(values)

    def append(self, key: str, item: dict[str, Any]) -> None:
        """Appends to a list of the status, keeping its last MAX_LIST entries
        (a ``message`` bounded, so ``errors`` stays small whatever is reported)."""
        if isinstance(item.get("message"), str):
            item = dict(item, message=bound_message(item["message"]))
        with self.lock:
            items = self.data.setdefault(key, [])
            items.append(item)
            del items[:-MAX_LIST]

    def write_now(self, *, durable: bool = True, heartbeat: bool = False) -> None:
        with self._guard, self._write_lock:  # the guard first, on every thread
            if heartbeat and self._stop.is_set():
                return  # the last write is the one stop()'s caller makes
            # Before each write, outside the lock that the training thread
            # takes: ``prepare`` (the session saves the trainer state there),
            # whose result ``refresh`` derives the status from.
            prepared = self._prepare() if self._prepare is not None else None
            with self.lock:
                if self._refresh is not None:
                    self._refresh(self.data, prepared)
                self.data["heartbeat"] = time.time()
                # One line, by json's C encoder, under the lock (it is the
                # snapshot): this thread holds the GIL for a fraction of a
                # millisecond, where an indented dump of a copy held it for
                # milliseconds while the training thread waited for it.
                raw = _atomic.dumps(self.data, indent=None)
            # The temporary file lives in a sub-folder: the control-file
            # watcher watches the experiment folder, and a rename from inside
            # it makes watchdog hold its events while it pairs the move.
            tmp_dir = os.path.join(os.path.dirname(self.path), ".retune-tmp")
            _atomic.atomic_write_bytes(self.path, raw, durable=durable, tmp_dir=tmp_dir)
            self._last_write = time.monotonic()

    def stop(self, *, wait: bool = True) -> None:
        """Ends the heartbeat: no heartbeat write starts after this returns,
        and the caller's next :meth:`write_now` comes after one under way
        (both take the write lock). ``wait=False`` does not wait for the
        thread to end (it ends on its own, at once)."""
        self._stop.set()
        self._wake.set()
        thread, self._thread = self._thread, None
        if thread is not None and wait:
            thread.join(timeout=5)
