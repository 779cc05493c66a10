"""Event files written on the caller's thread: the TFRecord framing of
TensorBoard's events, with the CRC-32C of the ``crc32c`` package.

TensorBoard's own ``EventFileWriter`` hands each event to a thread of its own
and waits for that thread on every ``flush`` (and once when it is made, for
the file's first event). A trainer opens a writer at every branch start, so
on a busy machine starting and waiting for that thread cost the training
thread 1-3 ms of its start; and its pure-Python CRC-32C costs ~20 us per 200
bytes. Here an event is framed and appended to a buffered file at once (a few
microseconds), and ``flush`` is one ``write``. The caller serialises its own
calls (``trainer.records.NodeRecords`` holds a lock around each).

The file is what TensorBoard writes and reads: named
``events.out.tfevents.<time>.<host>.<pid>.<n>``, its first event the file
version, then one record per event: length (uint64, little-endian), the
masked CRC-32C of the length, the bytes, the masked CRC-32C of the bytes.
"""

from __future__ import annotations

import itertools
import os
import socket
import struct
import time
from collections.abc import Iterable
from typing import BinaryIO

import crc32c
from tensorboard.compat.proto import event_pb2

__all__ = ["EventFile", "frame", "write_records"]

_FILE_VERSION = "brain.Event:2"
_numbers = itertools.count()  # the <n> of the name: two writers of one process in one second differ


def _masked(data: bytes) -> int:
    crc = crc32c.crc32c(data)
    return (((crc >> 15) | (crc << 17)) + 0xA282EAD8) & 0xFFFFFFFF


def frame(data: bytes) -> bytes:
    """One TFRecord: what a reader of event files (TensorBoard's, TensorFlow's) reads back as ``data``."""
    length = struct.pack("<Q", len(data))
    return b"".join((length, struct.pack("<I", _masked(length)), data, struct.pack("<I", _masked(data))))


def write_records(f: BinaryIO, events: Iterable[event_pb2.Event]) -> None:
    """Appends ``events`` to an open file, framed."""
    for event in events:
        f.write(frame(event.SerializeToString()))


class EventFile:
    """A new event file in ``folder`` (created if missing), written on the caller's thread."""

    def __init__(self, folder: str) -> None:
        os.makedirs(folder, exist_ok=True)
        name = f"events.out.tfevents.{int(time.time()):010d}.{socket.gethostname()}.{os.getpid()}.{next(_numbers)}"
        self.path = os.path.join(folder, name)
        self._f: BinaryIO | None = open(self.path, "xb")  # noqa: SIM115 (closed by close())
        self.add(event_pb2.Event(wall_time=time.time(), file_version=_FILE_VERSION,
                                 source_metadata=event_pb2.SourceMetadata(writer="tb_retune")))
        self.flush()

    def add(self, event: event_pb2.Event) -> None:
        """Appends ``event`` (to the file's buffer: :meth:`flush` writes it)."""
        if self._f is None:
            raise ValueError(f"the event file {self.path} is closed")
        self._f.write(frame(event.SerializeToString()))

    def flush(self) -> None:
        """Hands what is buffered to the operating system (no fsync, as TensorBoard's writer)."""
        if self._f is not None:
            self._f.flush()

    def close(self) -> None:
        f, self._f = self._f, None
        if f is not None:
            f.close()
