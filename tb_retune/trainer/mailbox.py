"""The one hand-over point between the watcher thread and the training thread.

The watcher posts each valid revision with a new sequence number; the
training thread compares the number at each batch boundary (an int read,
O(1)) and takes the newest revision when it differs. Both sides meet under
one :class:`threading.Condition`, which also lets a caller wait for a
revision to be posted or taken instead of polling.
"""

from __future__ import annotations

import threading
from typing import Generic, TypeVar

T = TypeVar("T")


class RevisionMailbox(Generic[T]):
    """Holds the newest posted item; older ones are superseded."""

    def __init__(self) -> None:
        self._cond = threading.Condition()
        self._item: T | None = None
        self._posted = 0
        self._taken = 0

    @property
    def posted(self) -> int:
        """The sequence number of the newest item posted."""
        return self._posted

    @property
    def taken(self) -> int:
        """The sequence number of the newest item taken."""
        return self._taken

    def due(self) -> bool:
        """True when an item is waiting (plain reads: the batch-loop check)."""
        return self._posted != self._taken

    def post(self, item: T) -> int:
        with self._cond:
            self._item = item
            self._posted += 1
            self._cond.notify_all()
            return self._posted

    def take(self) -> T | None:
        """The newest item not taken yet, or None."""
        with self._cond:
            if self._posted == self._taken:
                return None
            item, self._item = self._item, None
            self._taken = self._posted
            self._cond.notify_all()
            return item

    def wait_posted(self, after: int, timeout: float | None = None) -> bool:
        """Waits until an item newer than sequence number ``after`` is posted."""
        with self._cond:
            return self._cond.wait_for(lambda: self._posted > after, timeout)

    def wait_taken(self, seq: int, timeout: float | None = None) -> bool:
        """Waits until the item with sequence number ``seq`` (or a newer one) is taken."""
        with self._cond:
            return self._cond.wait_for(lambda: self._taken >= seq, timeout)
