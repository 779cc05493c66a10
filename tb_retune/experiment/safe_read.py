"""Bounded, safe reads of small files that another process may have replaced with anything.

The control and status files live in a folder that people, editors and other
processes write. Before a read, such a file may have become a folder, a FIFO
(``open`` would block until a writer comes), a link to ``/dev/zero`` (a read
without a limit never ends) or a link to a file outside the experiment (whose
contents must not be served). :func:`read_file` opens only regular files,
without blocking and without following a link out of the folder, and never
reads more than its limit; what it refuses it says in a sentence.

Example:

```python
from tb_retune.experiment.safe_read import read_file

data = read_file("runs/digits/retune.json", 256 * 1024, within="runs/digits")
```
"""

from __future__ import annotations

import errno
import os
import stat
from typing import Any

from tb_retune._errors import RetuneError
from tb_retune.experiment import strict_json


class UnsafeFileError(RetuneError, OSError):
    """A file that is not read: not a regular file, a link out of its folder,
    unreadable, or larger than the limit. The message says which, and what to do."""


class ReadFailure(bytes):
    """What the control-file watcher hands over for a file it could not read.

    No bytes, and :attr:`reason` (the message for the status). The control
    schema raises the reason as the revision's error
    (:func:`tb_retune.experiment.control.decode_control`), so an unreadable
    file reaches the status on the same path as an invalid one.
    """

    reason: str

    def __new__(cls, reason: str) -> ReadFailure:
        obj = super().__new__(cls, b"")
        obj.reason = reason
        return obj

    def __eq__(self, other: object) -> bool:
        return isinstance(other, ReadFailure) and other.reason == self.reason

    def __ne__(self, other: object) -> bool:
        return not self == other

    def __hash__(self) -> int:
        return hash(("ReadFailure", self.reason))


def _kind(mode: int) -> str:
    if stat.S_ISDIR(mode):
        return "a folder"
    if stat.S_ISFIFO(mode):
        return "a FIFO (named pipe)"
    if stat.S_ISCHR(mode) or stat.S_ISBLK(mode):
        return "a device"
    if stat.S_ISSOCK(mode):
        return "a socket"
    return "not a regular file"


def _inside(path: str, folder: str) -> bool:
    return path == folder or os.path.commonpath([folder, path]) == folder


def read_file(path: str, limit: int, *, within: str | None = None) -> bytes | None:
    """The bytes of the regular file ``path``; None when it does not exist.

    Args:
        path: A local file.
        limit: Most bytes read; a larger file is refused unread.
        within: A folder that ``path`` (links resolved) must stay inside;
            defaults to ``path``'s own folder.

    Raises:
        UnsafeFileError: ``path`` is a folder, a FIFO, a device or a socket,
            a link that leads out of ``within``, larger than ``limit``, or
            cannot be opened (the OS error's reason, e.g. permission denied).
    """
    name = os.path.basename(path)
    folder = os.path.realpath(within if within is not None else os.path.dirname(os.path.abspath(path)))
    real = os.path.realpath(path)
    if not _inside(real, folder):
        if not os.path.lexists(path):
            return None
        raise UnsafeFileError(
            f"{name}: is a link to {real}, outside the experiment folder {folder}; "
            f"replace the link by a regular file"
        )
    try:
        # O_NONBLOCK: opening a FIFO returns at once instead of waiting for a
        # writer; O_NOFOLLOW: the resolved path must not have become a link.
        fd = os.open(real, os.O_RDONLY | os.O_NONBLOCK | os.O_NOFOLLOW | getattr(os, "O_CLOEXEC", 0))
    except FileNotFoundError:
        return None
    except OSError as e:
        if e.errno == errno.ELOOP:
            raise UnsafeFileError(f"{name}: became a link while being read; save it again") from None
        if e.errno == errno.EISDIR:
            raise UnsafeFileError(f"{name}: is a folder, not a file; remove the folder") from None
        raise UnsafeFileError(
            f"{name}: cannot be read ({e.strerror or e}); make it readable for the user "
            f"that runs this process (uid {os.getuid()})"
        ) from None
    try:
        info = os.fstat(fd)
        if not stat.S_ISREG(info.st_mode):
            raise UnsafeFileError(f"{name}: is {_kind(info.st_mode)}, not a file; remove it and save it again")
        if info.st_size > limit:
            raise UnsafeFileError(
                f"{name}: is {info.st_size} bytes, larger than the limit of {limit} bytes"
            )
        chunks: list[bytes] = []
        size = 0
        while size <= limit:
            try:
                chunk = os.read(fd, limit + 1 - size)
            except BlockingIOError:  # not expected for a regular file
                break
            if not chunk:
                break
            chunks.append(chunk)
            size += len(chunk)
        data = b"".join(chunks)
    finally:
        os.close(fd)
    if len(data) > limit:
        raise UnsafeFileError(f"{name}: grew past the limit of {limit} bytes while being read")
    return data


def read_small(path: str, limit: int, *, within: str | None = None) -> bytes | None:
    """Like :func:`read_file`, also for remote paths (``gs://``: through TensorFlow's gfile)."""
    if "://" not in path:
        return read_file(path, limit, within=within)
    from tensorboard.compat import tf  # lazy: may import TensorFlow for gs://

    gfile = tf.io.gfile
    try:
        if not gfile.exists(path):
            return None
        with gfile.GFile(path, "rb") as f:
            data: bytes = f.read(limit + 1)
    except Exception as e:  # any filesystem error of a remote store
        raise UnsafeFileError(f"{path}: cannot be read ({e})") from None
    if len(data) > limit:
        raise UnsafeFileError(f"{path}: larger than the limit of {limit} bytes")
    return data


def read_json_file(path: str, limit: int, *, within: str | None = None, what: str | None = None) -> Any:
    """The decoded JSON of a small file; None when it does not exist.

    Raises UnsafeFileError (see :func:`read_small`) or ControlError (invalid,
    too deeply nested, a key given twice, ...; naming the key).
    """
    data = read_small(path, limit, within=within)
    if data is None:
        return None
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as e:
        from tb_retune._errors import ControlError

        raise ControlError(f"{what or os.path.basename(path)}: not UTF-8 text (byte {e.start})") from None
    return strict_json.loads(text, what=what or os.path.basename(path))
