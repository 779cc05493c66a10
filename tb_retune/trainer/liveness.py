"""Knowing that ``fit`` is still alive, and saying ``failed`` when it is not.

Keras calls no callback when ``fit`` raises from another callback or from
validation, and a process that dies of an uncaught exception takes its
daemon threads with it. :class:`FitWatch` notices on the heartbeat thread
that ``fit``'s frame left its thread's stack; :class:`CrashHook` records the
uncaught exception at interpreter exit, so the status says ``failed`` with
the error at once instead of going stale.
"""

from __future__ import annotations

import atexit
import sys
from collections.abc import Callable
from typing import Any


def describe_exception(error: BaseException | None) -> str | None:
    if error is None:
        return None
    text = f"{type(error).__name__}: {error}"
    return text if len(text) <= 2000 else text[:1990] + "..."


class FitWatch:
    """Watches one frame (``fit``'s) on one thread."""

    def __init__(self) -> None:
        self._watched: tuple[int, Any] | None = None

    def watch(self, thread_ident: int, frame: Any) -> None:
        self._watched = (thread_ident, frame)

    def clear(self) -> None:
        self._watched = None

    def gone(self) -> bool:
        """True once the watched frame is no longer on its thread's stack."""
        watched = self._watched
        if watched is None:
            return False
        ident, target = watched
        frame = sys._current_frames().get(ident)
        while frame is not None:
            if frame is target:
                return False
            frame = frame.f_back
        return True


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
