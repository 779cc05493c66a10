"""Knowing that ``fit`` is still alive, and saying ``failed`` when it is not.

Keras calls no callback when ``fit`` raises from another callback or from
validation, and a process that dies of an uncaught exception takes its
daemon threads with it. :class:`FitWatch` notices on the heartbeat thread
that ``fit``'s frame left its thread's stack; :class:`CrashHook` records the
uncaught exception at interpreter exit, so the status says ``failed`` with
the error at once instead of going stale.

Another thread's stack is read through :func:`faulthandler.dump_traceback`,
which walks the interpreter's own frames in one C call with the GIL held.
Following ``f_back`` from :func:`sys._current_frames` instead, as this module
did, crashes Python 3.11 now and then (a segfault in ``PyFrame_GetBack``, or a
deadlock: CPython issues 111363 and 106883): the other thread runs between two
steps of the walk and frees the frames being followed. It did, in a run of the
torch suite.
"""

from __future__ import annotations

import atexit
import faulthandler
import re
import sys
import tempfile
import threading
from collections.abc import Callable
from typing import Any, BinaryIO

_THREAD = re.compile(rb"^(?:Current thread|Thread) 0x([0-9a-f]+)")
_FRAME = re.compile(rb'^  File "(.*)", line \d+ in (.*)$')


def describe_exception(error: BaseException | None) -> str | None:
    if error is None:
        return None
    text = f"{type(error).__name__}: {error}"
    return text if len(text) <= 2000 else text[:1990] + "..."


class FitWatch:
    """Watches one function's frame (``fit``'s) on one thread, without holding it."""

    def __init__(self) -> None:
        self._watched: tuple[int, bytes, bytes] | None = None
        self._dump: BinaryIO | None = None
        self._lock = threading.Lock()  # one dump at a time into the file

    def watch(self, thread_ident: int, frame: Any) -> None:
        code = frame.f_code
        self._watched = (thread_ident, code.co_filename.encode("utf-8", "backslashreplace"),
                         code.co_name.encode("utf-8", "backslashreplace"))

    def clear(self) -> None:
        self._watched = None
        with self._lock:
            dump, self._dump = self._dump, None
        if dump is not None:
            dump.close()

    def gone(self) -> bool:
        """True once no frame of the watched function is on its thread's stack
        (or the thread ended). A stack too deep for the dump counts as not gone."""
        watched = self._watched
        if watched is None:
            return False
        ident, filename, name = watched
        stack = self._stack(ident)
        if stack is None:
            return not any(t.ident == ident for t in threading.enumerate())
        frames, truncated = stack
        return not truncated and (filename, name) not in frames

    def _stack(self, ident: int) -> tuple[set[tuple[bytes, bytes]], bool] | None:
        """The (file, function) pairs on thread ``ident``'s stack and whether
        the dump cut it short; None when the thread is not in the dump."""
        with self._lock:
            if self._dump is None:
                self._dump = tempfile.TemporaryFile(prefix="tb-retune-stacks-")
            dump = self._dump
            dump.seek(0)
            dump.truncate()
            faulthandler.dump_traceback(dump, all_threads=True)
            dump.seek(0)
            text = dump.read()
        frames: set[tuple[bytes, bytes]] | None = None
        truncated = False
        for line in text.splitlines():
            thread = _THREAD.match(line)
            if thread is not None:
                if frames is not None:
                    break  # the next thread's section
                if int(thread.group(1), 16) == ident:
                    frames = set()
                continue
            if frames is None:
                continue
            frame = _FRAME.match(line)
            if frame is not None:
                frames.add((frame.group(1), frame.group(2)))
            elif line.strip() in (b"...", b"<truncated>") or line.endswith(b"..."):
                truncated = True
        return None if frames is None else (frames, truncated)


class CrashHook:
    """Calls ``on_exit(exception)`` while installed when an uncaught exception
    is about to end the process (through ``sys.excepthook``, before the
    interpreter shuts down), or with None at a plain interpreter exit."""

    def __init__(self, on_exit: Callable[[BaseException | None], None]) -> None:
        self._on_exit = on_exit
        self._installed = False
        self._previous_hook: Callable[..., Any] | None = None

    def install(self) -> None:
        if self._installed:
            return
        self._installed = True
        self._previous_hook = sys.excepthook
        sys.excepthook = self._excepthook
        atexit.register(self._at_exit)

    def remove(self) -> None:
        if not self._installed:
            return
        self._installed = False
        if sys.excepthook is self._excepthook:  # unless someone chained after us
            sys.excepthook = self._previous_hook or sys.__excepthook__
        atexit.unregister(self._at_exit)

    def _excepthook(self, kind: type[BaseException], error: BaseException, tb: Any) -> None:
        previous = self._previous_hook or sys.__excepthook__
        if self._installed:
            try:
                self._on_exit(error)
            except Exception:  # never hide the user's traceback
                pass
        previous(kind, error, tb)

    def _at_exit(self) -> None:
        if self._installed:
            self._on_exit(None)


ABANDONED = ("fit() ended without on_train_end: an exception outside the train step "
             "(another callback, validation or the data) ended it")


class RunLiveness:
    """What ends an open run that ``fit`` left without ``on_train_end``.

    ``end(state, error, sync_now)`` is the controller's end. :meth:`tick`
    runs on the heartbeat thread: once ``fit``'s frame is gone, the run ends
    as failed on a thread of its own. At interpreter exit (a crash, Ctrl-C,
    an exit from inside ``fit``) the run ends at once, its files fsynced.
    """

    def __init__(self, end: Callable[[str, str | None, bool], None]) -> None:
        self._end = end
        self._fit = FitWatch()
        self._crash = CrashHook(self._at_exit)
        self._open = False
        self._abandoned = False

    def watch(self, thread_ident: int, frame: Any) -> None:
        self._fit.watch(thread_ident, frame)

    def opened(self) -> None:
        self._open, self._abandoned = True, False
        self._crash.install()

    def closed(self) -> None:
        self._open = False
        self._fit.clear()
        self._crash.remove()

    def tick(self) -> None:
        if self._open and not self._abandoned and self._fit.gone():
            self._abandoned = True
            threading.Thread(target=self._end, args=("failed", ABANDONED, False), name="tb-retune-cleanup",
                             daemon=True).start()

    def _at_exit(self, error: BaseException | None) -> None:
        if not self._open:
            return
        if isinstance(error, KeyboardInterrupt):
            self._end("stopped", None, True)
        else:
            self._end("failed", describe_exception(error) or "the process exited while training was running", True)
