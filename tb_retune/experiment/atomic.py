"""Atomic file writes and the experiment's trainer lock.

Every file that our code writes and another process reads goes through
:func:`atomic_write_bytes`: a temporary file in the same folder, fsync, then
``os.replace``, so a reader sees the old content or the new, never a mix.
The files get the permissions that the umask leaves of ``0666``, like those
of any other tool (``tempfile.mkstemp`` alone would make them ``0600``, and a
trainer running as another user could not read a ``retune.json`` written by
``tb-retune set``).
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import json
import os
import secrets
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any, BinaryIO

from tb_retune._errors import ExperimentLockedError

#: Largest JSON file that :func:`read_json` reads.
MAX_JSON_BYTES = 16 * 1024 * 1024

def _create_temp(folder: str, prefix: str, suffix: str) -> tuple[int, str]:
    """A new, empty file in ``folder`` with a random name, created as
    ``open(path, "w")`` creates a file: mode 0666 less the process's umask,
    applied by the kernel (``mkstemp``'s 0600 would make a control file
    unreadable for a trainer of another user, and reading the umask from
    ``/proc`` cost a third of a millisecond per write)."""
    flags = os.O_RDWR | os.O_CREAT | os.O_EXCL | getattr(os, "O_CLOEXEC", 0)
    for _ in range(100):
        path = os.path.join(folder, f"{prefix}{secrets.token_hex(6)}{suffix}")
        try:
            return os.open(path, flags, 0o666), path
        except FileExistsError:
            continue
    raise FileExistsError(f"no free temporary name in {folder} (prefix {prefix!r})")


def _fsync(path: str) -> None:
    """fsyncs ``path`` (a file or a folder); gone, or unsupported: passed over."""
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def fsync_dir(path: str) -> None:
    """Makes a rename inside ``path`` durable (no-op where unsupported)."""
    _fsync(path)


def fsync_paths(paths: list[str]) -> None:
    """Makes files already written (and renamed into place) durable: each
    file, then each of their folders once. Files gone since are passed over."""
    for path in paths:
        _fsync(path)
    for folder in dict.fromkeys(os.path.dirname(os.path.abspath(p)) for p in paths):
        _fsync(folder)


@contextlib.contextmanager
def atomic_open(path: str, *, durable: bool = True, prefix: str | None = None,
                tmp_dir: str | None = None) -> Iterator[BinaryIO]:
    """Opens a temporary file beside ``path``; on success it becomes ``path``.

    The file is flushed and fsynced before ``os.replace``, so readers see
    the old content or the new, never a mix; on error the temporary file
    is removed and ``path`` is untouched. ``tmp_dir`` (on the same
    filesystem) keeps the temporary file out of a watched folder.
    """
    folder = os.path.dirname(os.path.abspath(path))
    if tmp_dir is not None:
        os.makedirs(tmp_dir, exist_ok=True)
    fd, tmp = _create_temp(tmp_dir or folder, prefix or ("." + os.path.basename(path) + "."), ".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            yield f
            f.flush()
            if durable:
                os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise
    if durable:
        fsync_dir(folder)


def atomic_write_bytes(path: str, data: bytes, *, durable: bool = True, tmp_dir: str | None = None) -> None:
    """Writes ``data`` to ``path`` atomically (temp file, fsync, os.replace)."""
    with atomic_open(path, durable=durable, tmp_dir=tmp_dir) as f:
        f.write(data)


def dumps(obj: Any, *, indent: int | None = 2, default: Callable[[Any], Any] | None = None) -> bytes:
    """JSON for a file; ``indent=None`` is one line, written by json's C
    encoder (several times faster than an indented dump). ``default`` as json's."""
    return (json.dumps(obj, indent=indent, sort_keys=False, allow_nan=False, default=default) + "\n").encode("utf-8")


def atomic_write_json(path: str, obj: Any, *, durable: bool = True, tmp_dir: str | None = None,
                      indent: int | None = 2) -> None:
    atomic_write_bytes(path, dumps(obj, indent=indent), durable=durable, tmp_dir=tmp_dir)


def read_json(path: str, limit: int = MAX_JSON_BYTES) -> Any:
    """Reads a JSON file safely and bounded; returns None when it does not exist.

    Raises OSError (a folder, a FIFO, a link out of its folder, too large,
    unreadable) or ValueError (invalid JSON), with the reason.
    """
    from tb_retune.experiment import safe_read

    return safe_read.read_json_file(path, limit)


@contextlib.contextmanager
def file_lock(path: str) -> Iterator[None]:
    """An exclusive advisory lock (flock) on ``path``, held for the block.

    Serialises read-merge-write cycles of the control file between the
    plugin's request threads and the command line.
    """
    try:
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o666)
    except PermissionError:  # made by another user: a read-only fd locks as well
        fd = os.open(path, os.O_RDONLY)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        fcntl.flock(fd, fcntl.LOCK_UN)
        os.close(fd)


class TrainerLock:
    """One live trainer per experiment: an flock held for the trainer's life.

    The kernel releases an flock when its process dies, so a trainer killed
    with SIGKILL never leaves a stale lock. The pid inside is for messages.
    """

    #: Locks of this process whose run is ending (its last writes under way):
    #: a new run on the same experiment waits for them instead of being refused.
    _closing: set[str] = set()
    _closing_lock = threading.Lock()
    #: How long a new run waits for a run of this process that is ending.
    CLOSING_WAIT_S = 60.0

    def __init__(self, path: str) -> None:
        self.path = path
        self._fd: int | None = None

    def closing(self) -> None:
        """The run that holds this lock is ending: it releases the lock soon."""
        if self._fd is not None:
            with TrainerLock._closing_lock:
                TrainerLock._closing.add(os.path.abspath(self.path))

    def _ending_here(self) -> bool:
        with TrainerLock._closing_lock:
            return os.path.abspath(self.path) in TrainerLock._closing

    def acquire(self) -> None:
        deadline = time.monotonic() + self.CLOSING_WAIT_S
        while True:
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except OSError as e:
                if e.errno not in (errno.EAGAIN, errno.EACCES, errno.EWOULDBLOCK):
                    os.close(fd)
                    raise
                try:
                    pid = os.read(fd, 64).decode("ascii", "replace").strip() or "?"
                finally:
                    os.close(fd)
            if self._ending_here() and time.monotonic() < deadline:
                # A run of this process is ending (e.g. its fit raised and its cleanup
                # thread is writing the last files): the experiment is free in a moment.
                time.sleep(0.01)
                continue
            raise ExperimentLockedError(
                f"another trainer (pid {pid}) is running on this experiment "
                f"({os.path.dirname(self.path)}); stop it first, or give this run "
                "another logdir"
            ) from None
        # The pid is for messages only (the flock is the lock, and the kernel
        # drops it with the process): no fsync.
        os.ftruncate(fd, 0)
        os.write(fd, str(os.getpid()).encode("ascii"))
        self._fd = fd

    def release(self) -> None:
        if self._fd is not None:
            fcntl.flock(self._fd, fcntl.LOCK_UN)
            os.close(self._fd)
            self._fd = None
            with TrainerLock._closing_lock:
                TrainerLock._closing.discard(os.path.abspath(self.path))
