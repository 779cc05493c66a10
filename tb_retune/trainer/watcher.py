"""Watches the control file with watchdog and hands over each new revision.

Watching one file means watching its folder: an editor's atomic save arrives
as a move onto the file (``dest_path``), an in-place save as several writes,
and the file may be created, deleted and created again. Bursts are debounced;
the file is read on the watcher's own thread, never on the training thread.
"""

from __future__ import annotations

import logging
import os
import threading
from collections.abc import Callable

from watchdog.events import FileSystemEvent, FileSystemEventHandler
from watchdog.observers import Observer
from watchdog.observers.api import BaseObserver
from watchdog.observers.polling import PollingObserver

from tb_retune.experiment import safe_read
from tb_retune.experiment.control import MAX_CONTROL_BYTES

logger = logging.getLogger("tb_retune")


class _QuietStopFilter(logging.Filter):
    """Drops watchdog's harmless error when events arrive while it stops."""

    def filter(self, record: logging.LogRecord) -> bool:
        return "called when the thread is inactive" not in record.getMessage()


logging.getLogger("watchdog.observers.inotify").addFilter(_QuietStopFilter())


class _Handler(FileSystemEventHandler):
    def __init__(self, path: str, poke: Callable[[bool], None]) -> None:
        self._path = os.path.abspath(path)
        self._poke = poke

    def on_any_event(self, event: FileSystemEvent) -> None:
        if event.event_type in ("opened", "closed_no_write"):
            return
        dest = getattr(event, "dest_path", "")
        if event.event_type == "moved" and dest and os.path.abspath(os.fsdecode(dest)) == self._path:
            # An atomic save: the file is complete, no need to wait.
            self._poke(True)
            return
        if event.src_path and os.path.abspath(os.fsdecode(event.src_path)) == self._path:
            self._poke(False)


class ControlWatcher:
    """Calls ``on_revision(data)`` on its own thread after the file changes.

    ``data`` is the file's bytes, None when the file does not exist, or a
    :class:`~tb_retune.experiment.safe_read.ReadFailure` (no bytes, and the
    reason) when it cannot be read: a folder, a FIFO, a link out of the
    experiment folder, unreadable, or larger than ``max_bytes``.

    Args:
        path: The control file.
        on_revision: Called with each new content (debounced).
        debounce_s: Quiet time after the last event before reading.
        polling: Use watchdog's polling observer (for filesystems without
            inotify, e.g. some network mounts).
        poll_interval_s: The polling observer's interval.
        on_kind: Called with ``"polling"`` when inotify is unavailable and
            the watcher falls back to polling after a background start.
    """

    def __init__(
        self,
        path: str,
        on_revision: Callable[[bytes | None], None],
        *,
        debounce_s: float = 0.02,
        polling: bool = False,
        poll_interval_s: float = 0.5,
        max_bytes: int = MAX_CONTROL_BYTES,
        on_kind: Callable[[str], None] | None = None,
    ) -> None:
        self.path = os.path.abspath(path)
        self._on_revision = on_revision
        self._debounce_s = debounce_s
        self._polling = polling
        self._poll_interval_s = poll_interval_s
        self._max_bytes = max_bytes
        self._wake = threading.Event()
        self._complete = threading.Event()
        self._stopping = threading.Event()
        self._observer: BaseObserver | None = None
        self._observer_lock = threading.Lock()
        self._on_kind = on_kind
        self._thread: threading.Thread | None = None
        self._last: bytes | None = None
        self.kind = "polling" if polling else "native"

    def start(self, *, initial: bool = True, background: bool = False) -> None:
        """Starts watching.

        ``initial``: read the file once watching, and hand it over if it
        differs from what :meth:`read_now` read. ``background``: set up the
        observer (inotify's set-up takes milliseconds) on the watcher's own
        thread, then read the file (``initial`` is implied): a save made
        before the observer watched is handed over all the same.
        """
        os.makedirs(os.path.dirname(self.path), exist_ok=True)
        if not background:
            self._start_observer()
        self._thread = threading.Thread(target=self._run, args=(background,), name="tb-retune-control", daemon=True)
        self._thread.start()
        if initial and not background:
            self._wake.set()

    def _start_observer(self) -> None:
        folder = os.path.dirname(self.path)
        handler = _Handler(self.path, self._poke)
        with self._observer_lock:
            if self._stopping.is_set():
                return
            observer: BaseObserver
            if self._polling:
                observer = PollingObserver(timeout=self._poll_interval_s)
            else:
                observer = Observer()
            try:
                observer.schedule(handler, folder, recursive=False)
                observer.start()
            except OSError as e:
                if self._polling:
                    raise
                logger.warning("retune: file events unavailable (%s); polling %s instead", e, folder)
                observer = PollingObserver(timeout=self._poll_interval_s)
                observer.schedule(handler, folder, recursive=False)
                observer.start()
                self.kind = "polling"
                if self._on_kind is not None:
                    self._on_kind(self.kind)
            self._observer = observer

    def _poke(self, complete: bool) -> None:
        if complete:
            self._complete.set()
        self._wake.set()

    def read_now(self) -> bytes | None:
        """Reads the file on the caller's thread; later events only report
        content that differs from this."""
        self._last = self._read()
        return self._last

    def _read(self) -> bytes | None:
        """The file's bytes (bounded), None when absent, or a ReadFailure.

        Only a regular file is opened, without blocking (a FIFO) and without
        following a link out of the experiment folder; a file that cannot be
        read is handed over as a :class:`ReadFailure`, whose reason the
        schema reports like any invalid revision, so it reaches the status.
        """
        try:
            return safe_read.read_file(self.path, self._max_bytes, within=os.path.dirname(self.path))
        except OSError as e:
            logger.warning("retune: cannot read %s: %s", self.path, e)
            return safe_read.ReadFailure(str(e))

    def _run(self, start_observer: bool = False) -> None:
        try:
            self._watch(start_observer)
        finally:
            if self._stopping.is_set():
                self._stop_observer()  # stop(wait=False) leaves it to this thread

    def _watch(self, start_observer: bool) -> None:
        if start_observer:
            try:
                self._start_observer()
            except OSError as e:
                logger.error("retune: cannot watch %s: %s; changes to it are not seen", self.path, e)
                return
            self._wake.set()  # what was saved before the observer watched
        while not self._stopping.is_set():
            self._wake.wait()
            if self._stopping.is_set():
                return
            # Debounce: wait until the events stop for debounce_s, unless the
            # file was renamed into place whole.
            while not self._complete.is_set():
                self._wake.clear()
                if self._stopping.wait(self._debounce_s):
                    return
                if not self._wake.is_set():
                    break
            self._complete.clear()
            self._wake.clear()
            data = self._read()
            if data == self._last or self._stopping.is_set():
                continue
            self._last = data
            try:
                self._on_revision(data)
            except Exception:  # never let the watcher die
                logger.exception("retune: error while handling a control-file revision")

    def stop(self, *, wait: bool = True) -> None:
        """Stops watching: no revision is handed over once this returns.

        ``wait=False`` returns at once (one being handed over may still
        arrive); the watcher's thread stops the observer and ends on its own,
        within milliseconds: the end of a ``fit`` does not wait for it."""
        self._stopping.set()
        self._wake.set()
        thread, self._thread = self._thread, None
        if not wait and thread is not None:
            return
        if thread is not None:  # first: it may be starting the observer
            thread.join(timeout=5)
        self._stop_observer()

    def _stop_observer(self) -> None:
        with self._observer_lock:
            observer, self._observer = self._observer, None
        if observer is not None:
            observer.stop()
            observer.join(timeout=5)
