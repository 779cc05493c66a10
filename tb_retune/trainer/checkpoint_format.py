"""The raw checkpoint file format: layout, write, read and verification.

Version 3 (written)::

    MAGIC "TBRETUNE-CKPT-3\\n"          16 bytes
    header length                       8 bytes, little-endian
    CRC-32C of the header               4 bytes, little-endian
    reserved (zero)                     4 bytes
    header                              JSON: {"meta", "arrays", "data_bytes"}
    zero padding to a multiple of 64
    data region                         every array's bytes, each at a 64-byte aligned offset

Each entry of ``arrays`` is ``{"key", "dtype", "shape", "offset", "nbytes",
"crc32c"}``: ``offset`` counts from the start of the data region and ``crc32c``
(8 hex digits) covers that array's bytes. ``data_bytes`` is the data region's
length, so a cut file is told at once by its size.

Why CRC-32C (the ``crc32c`` package): like any 32-bit CRC it always detects
a flipped bit and any burst of errors up to 32 bits long and lets any other
damage (a torn or zeroed sector) pass with a chance of 1 in 2**32; the CPU
computes it in hardware (SSE 4.2, ARMv8), at about 15 GiB/s here against
4 GiB/s for ``zlib.crc32`` and 0.9 GiB/s for ``hashlib.blake2b`` (192 MiB:
13 ms against 47 and 212 ms), and it releases the GIL. That is what a restore
of 17 M parameters paid beyond ``load_weights``. It is not a defence against someone
who forges a file on purpose, which is not the threat: the threat is a disk,
a crash or a person's editor. On write, the checksums are computed while the
disk takes the data (see :func:`write`), so they add little to the durable
write; the per-array values go into the header at the end with one
``pwrite`` (fixed-width hex, so the header's length does not change). On
read, each piece is checksummed just after it is read, while in the cache.

Direct I/O (from 16 MiB): the data region is written from the snapshot's
buffer, and read back into the load's buffer, with ``O_DIRECT``, so it never
passes through the page cache. That is what made the durable write fast and
steady: writing 192 MiB into page-cache pages that the kernel must find
afresh cost 300-450 ms of CPU here (against 43 ms into pages just freed),
while the disk takes the same bytes straight from the reused buffer in
50-90 ms with 2-5 ms of CPU, and the checksums run meanwhile on a helper
thread. For that the header is padded with spaces (JSON allows them) so that
the data region starts at a multiple of 4096 bytes; the layout is otherwise
unchanged, and a reader that knows nothing of it reads the file as before.
Where the file system refuses ``O_DIRECT`` (``EINVAL``) the same bytes go
through the page cache.

Version 2 files (``TBRETUNE-CKPT-2``: the same layout with CRC-32 from
``zlib.crc32``, under the key ``crc32``) are still read and checked.
Version 1 files (``TBRETUNE-CKPT-1``: the same layout without the checksums,
without the 8 bytes after the length and without ``data_bytes``) are still
read: their structure and metadata are checked, their data cannot be.
"""

from __future__ import annotations

import bisect
import contextlib
import dataclasses
import errno
import fcntl
import json
import os
import queue
import threading
import zlib
from collections.abc import Callable, Iterator, Mapping, Sequence
from typing import Any, BinaryIO

import crc32c
import numpy as np

from tb_retune._errors import CheckpointError

MAGIC = b"TBRETUNE-CKPT-3\n"
MAGIC_V2 = b"TBRETUNE-CKPT-2\n"
MAGIC_V1 = b"TBRETUNE-CKPT-1\n"
VERSION = 3
#: Each version's checksum (``fn(data, crc) -> crc``) and its key in the header; version 1 has none.
_CHECKSUMS: dict[int, tuple[Callable[[Any, int], int], str]] = {
    3: (crc32c.crc32c, "crc32c"),
    2: (zlib.crc32, "crc32"),
}
_VERSIONS = {MAGIC: 3, MAGIC_V2: 2, MAGIC_V1: 1}
ALIGN = 64
_PREAMBLE = len(MAGIC) + 8 + 8  # magic, header length, header checksum + reserved
_PREAMBLE_V1 = len(MAGIC_V1) + 8
_CHUNK = 4 << 20  # checksummed and written (or read) in pieces that stay in the cache
_NO_CRC = "00000000"
_OVERLAP_FROM = 16 << 20  # below this, an fdatasync beside the checksums is not worth a thread
#: Data regions of at least this many bytes are written and read with O_DIRECT (tests lower it).
DIRECT_FROM = 16 << 20
#: What O_DIRECT needs aligned: the buffer's address, the file offset and the length (4096 covers
#: devices of 512- and 4096-byte logical blocks).
DIRECT_ALIGN = 4096
_DIRECT_CHUNK = 16 << 20  # one O_DIRECT call: 16 MiB kept the disk as busy as 64 MiB (4 MiB did not)
#: A header larger than this is not ours (a few hundred bytes per variable).
MAX_HEADER_BYTES = 256 << 20


def aligned(n: int) -> int:
    return -(-n // ALIGN) * ALIGN


def aligned_empty(nbytes: int) -> np.ndarray:
    """An uninitialised uint8 array of ``nbytes`` whose address is a multiple of :data:`DIRECT_ALIGN`."""
    raw = np.empty(nbytes + DIRECT_ALIGN, dtype=np.uint8)
    skip = -raw.ctypes.data % DIRECT_ALIGN
    return raw[skip:skip + nbytes]


def _address(view: memoryview) -> int:
    return int(np.frombuffer(view, dtype=np.uint8).ctypes.data) if len(view) else 0


@contextlib.contextmanager
def _direct(fd: int) -> Iterator[bool]:
    """``O_DIRECT`` on ``fd`` for the block where the file system allows it; yields whether it is on."""
    flag = getattr(os, "O_DIRECT", 0)
    flags = fcntl.fcntl(fd, fcntl.F_GETFL)
    try:
        if not flag:
            raise OSError(errno.EINVAL, "no O_DIRECT on this platform")
        fcntl.fcntl(fd, fcntl.F_SETFL, flags | flag)
    except OSError:
        yield False
        return
    try:
        yield True
    finally:
        fcntl.fcntl(fd, fcntl.F_SETFL, flags)


def _direct_part(view: memoryview, pos: int) -> int:
    """How many leading bytes of ``view`` at file offset ``pos`` O_DIRECT can move (0: none)."""
    if pos % DIRECT_ALIGN or _address(view) % DIRECT_ALIGN:
        return 0
    return len(view) // DIRECT_ALIGN * DIRECT_ALIGN


def _transfer(fd: int, view: memoryview, pos: int, *, writing: bool, direct: bool) -> int:
    """Writes ``view`` at ``pos`` (or reads into it), directly where it can; the bytes moved.

    Fewer than ``len(view)`` only when a read reaches the end of the file.
    An ``EINVAL`` from O_DIRECT sends the rest through the page cache.
    """
    done = 0
    n = _direct_part(view, pos) if direct else 0
    if n:
        with _direct(fd) as on:
            try:
                while on and done < n:
                    piece = view[done:min(done + _DIRECT_CHUNK, n)]
                    k = os.pwrite(fd, piece, pos + done) if writing else os.preadv(fd, [piece], pos + done)
                    if k <= 0:
                        return _short(done, writing)
                    done += k
                    if k % DIRECT_ALIGN:
                        break  # an odd count (the end of the file): the rest as below
            except OSError as e:
                if e.errno != errno.EINVAL:
                    raise
    while done < len(view):
        piece = view[done:min(done + _CHUNK, len(view))]
        k = os.pwrite(fd, piece, pos + done) if writing else os.preadv(fd, [piece], pos + done)
        if k <= 0:
            return _short(done, writing)
        done += k
    return done


def _short(done: int, writing: bool) -> int:
    if writing:
        raise OSError(errno.EIO, f"a write stopped after {done} bytes")
    return done


class _Background:
    """``fn()`` on a thread of its own; :meth:`result` joins it and returns or raises its outcome."""

    def __init__(self, fn: Callable[[], Any], name: str) -> None:
        self._fn = fn
        self._out: list[Any] = []
        self._error: list[BaseException] = []
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        try:
            self._out.append(self._fn())
        except BaseException as e:  # handed to the caller of result()
            self._error.append(e)

    def result(self) -> Any:
        self._thread.join()
        if self._error:
            raise self._error[0]
        return self._out[0]


def dtype_name(dtype: np.dtype[Any]) -> str:
    """``dtype.str`` (``<f4``), or the name for extension types (``bfloat16``)."""
    return dtype.name if dtype.kind == "V" else dtype.str


def dtype_of(name: str) -> np.dtype[Any]:
    try:
        return np.dtype(name)
    except TypeError:
        import ml_dtypes  # registers bfloat16, float8_*: shipped with TF, JAX and Keras

        return np.dtype(getattr(ml_dtypes, name))


@dataclasses.dataclass(frozen=True)
class Entry:
    """Where one array lies in the data region."""

    key: str
    dtype: str
    shape: tuple[int, ...]
    offset: int
    nbytes: int
    checksum: str | None = None  # 8 hex digits; None in version 1 files

    def as_json(self, crc: str = _NO_CRC) -> dict[str, Any]:
        return {"key": self.key, "dtype": self.dtype, "shape": list(self.shape), "offset": self.offset,
                "nbytes": self.nbytes, _CHECKSUMS[VERSION][1]: crc}


def plan(keys: Sequence[str], specs: Sequence[tuple[np.dtype[Any], tuple[int, ...]]]) -> tuple[list[Entry], int]:
    """The layout of the data region for arrays of these dtypes and shapes; its total length."""
    entries = []
    offset = 0
    for key, (dtype, shape) in zip(keys, specs, strict=True):
        nbytes = int(np.prod(shape, dtype=np.int64)) * dtype.itemsize
        entries.append(Entry(key, dtype_name(dtype), tuple(int(d) for d in shape), offset, nbytes))
        offset += aligned(nbytes)
    return entries, offset


def _header_bytes(meta: Mapping[str, Any], entries: Sequence[Entry], crcs: Sequence[str], data_bytes: int,
                  *, page_aligned: bool = False) -> bytes:
    """The header's JSON; with ``page_aligned``, padded with spaces so that the data region starts
    at a multiple of :data:`DIRECT_ALIGN` (for O_DIRECT)."""
    doc = {"meta": dict(meta), "arrays": [e.as_json(c) for e, c in zip(entries, crcs, strict=True)],
           "data_bytes": data_bytes}
    raw = json.dumps(doc, default=str).encode("utf-8")
    if page_aligned:
        raw += b" " * (-(_PREAMBLE + len(raw)) % DIRECT_ALIGN)
    return raw


def _preamble(header: bytes) -> bytes:
    return MAGIC + len(header).to_bytes(8, "little") + _CHECKSUMS[VERSION][0](header, 0).to_bytes(4, "little") + bytes(4)


def _checksums(entries: Sequence[Entry], sources: Sequence[memoryview]) -> list[str]:
    checksum = _CHECKSUMS[VERSION][0]
    out = []
    for entry, source in zip(entries, sources, strict=True):
        crc = 0
        for i in range(0, entry.nbytes, _CHUNK):
            crc = checksum(source[i:min(i + _CHUNK, entry.nbytes)], crc)
        out.append(f"{crc:08x}")
    return out


def write(f: BinaryIO, meta: Mapping[str, Any], entries: Sequence[Entry], data_bytes: int,
          sources: Sequence[memoryview], region: memoryview | None = None) -> None:
    """Writes a version-3 checkpoint to ``f`` (opened for writing, at position 0).

    ``sources[i]`` holds entry ``i``'s bytes, followed by its zero padding
    when it comes from a snapshot's buffer (then nothing more is written
    for the padding). ``region``, when given, is that whole buffer: the
    data region as it goes to the file. Nothing is copied: each chunk goes
    from the source to the file.

    From :data:`DIRECT_FROM` bytes, a ``region`` aligned for O_DIRECT goes
    to the disk straight from its buffer while a helper thread computes the
    checksums. Otherwise the checksums are computed from the sources while
    the kernel already writes the data to the disk (an ``fdatasync`` on a
    helper thread). Either way they then go into the header with one
    ``pwrite``, and the caller's fsync has only the header's page left. An
    ``OSError`` (``ENOSPC``) is raised as it is.
    """
    direct = (region is not None and len(region) == data_bytes and data_bytes >= DIRECT_FROM
              and _address(region) % DIRECT_ALIGN == 0)
    header = _header_bytes(meta, entries, [_NO_CRC] * len(entries), data_bytes, page_aligned=direct)
    head = _preamble(header) + header
    if data_bytes >= _OVERLAP_FROM:
        # The whole file's blocks at once: a full disk fails here, before anything is written,
        # and the writes that follow go faster (measured: 56-93 ms against 111-117 ms for 192 MiB).
        try:
            os.posix_fallocate(f.fileno(), 0, aligned(len(head)) + data_bytes)
        except OSError as e:
            if e.errno == errno.ENOSPC:
                raise
    f.write(head + bytes(aligned(len(head)) - len(head)))
    if direct:
        assert region is not None
        f.flush()
        crcs_job = _Background(lambda: _checksums(entries, sources), "tb-retune-checkpoint-crc")
        try:
            _transfer(f.fileno(), region, len(head), writing=True, direct=True)
        finally:
            crcs = crcs_job.result()
    else:
        crcs = _write_buffered(f, entries, data_bytes, sources)
    final = _header_bytes(meta, entries, crcs, data_bytes, page_aligned=direct)
    assert len(final) == len(header), "the checksums changed the header's length"
    os.pwrite(f.fileno(), _preamble(final) + final, 0)


def _write_buffered(f: BinaryIO, entries: Sequence[Entry], data_bytes: int,
                    sources: Sequence[memoryview]) -> list[str]:
    """Writes the data region through the page cache; the checksums (beside an fdatasync when large)."""
    for entry, source in zip(entries, sources, strict=True):
        for i in range(0, entry.nbytes, _CHUNK):
            f.write(source[i:min(i + _CHUNK, entry.nbytes)])
        pad = aligned(entry.nbytes) - entry.nbytes
        if pad:
            f.write(source[entry.nbytes:] if len(source) == entry.nbytes + pad else bytes(pad))
    f.flush()
    if data_bytes < _OVERLAP_FROM:
        return _checksums(entries, sources)
    syncer = _Background(lambda: os.fdatasync(f.fileno()), "tb-retune-checkpoint-sync")
    try:
        crcs = _checksums(entries, sources)
    finally:
        syncer.result()
    return crcs


@dataclasses.dataclass(frozen=True)
class Header:
    meta: dict[str, Any]
    entries: list[Entry]
    start: int  # where the data region begins
    version: int
    data_bytes: int  # the data region's length


def _bad(path: str, what: str) -> CheckpointError:
    return CheckpointError(f"checkpoint {path} is unreadable: {what}")


def read_header(f: BinaryIO, path: str) -> Header:
    """Reads and checks the header; raises CheckpointError saying what is wrong.

    Checks the magic, the header's checksum (versions 2 and 3), that every array
    lies inside the file, and that the file is as long as its header says
    (a cut file fails here, before any data is read).
    """
    size = os.fstat(f.fileno()).st_size
    if size == 0:
        raise _bad(path, "the file is empty (0 bytes): a write that never finished, or a full disk")
    magic = f.read(len(MAGIC))
    version = _VERSIONS.get(magic, 0)
    if not version and len(magic) < len(MAGIC) and any(m.startswith(magic) for m in _VERSIONS):
        raise _bad(path, f"the file is cut short in its first bytes ({size} bytes)")
    if not version:
        raise _bad(path, f"it starts with {magic[:16]!r}, not {MAGIC!r}: not a tb-retune checkpoint")
    preamble = _PREAMBLE if version >= 2 else _PREAMBLE_V1
    rest = f.read(preamble - len(magic))
    if len(rest) < preamble - len(magic):
        raise _bad(path, f"the file is cut short in its first bytes ({size} bytes)")
    length = int.from_bytes(rest[:8], "little")
    if length > min(MAX_HEADER_BYTES, size - preamble):
        raise _bad(path, f"its header length is {length} bytes, but the file has {size} bytes: cut short or damaged")
    raw = f.read(length)
    if version >= 2:
        checksum, name = _CHECKSUMS[version]
        want, got = int.from_bytes(rest[8:12], "little"), checksum(raw, 0)
        if got != want:
            raise _bad(path, f"its header is damaged ({name} {got:08x}, written as {want:08x})")
    try:
        doc = json.loads(raw.decode("utf-8"))
        meta = doc["meta"]
        if not isinstance(meta, dict):
            raise TypeError(f"meta is a {type(meta).__name__}")
        entries = []
        for item in doc["arrays"]:
            shape = tuple(int(d) for d in item["shape"])
            dtype = dtype_of(str(item["dtype"]))
            nbytes = int(np.prod(shape, dtype=np.int64)) * dtype.itemsize
            if any(d < 0 for d in shape) or int(item.get("nbytes", nbytes)) != nbytes:
                raise ValueError(f"array {item['key']!r} has shape {shape} and nbytes {item.get('nbytes')}")
            crc = item.get(_CHECKSUMS[version][1]) if version >= 2 else None
            entries.append(Entry(str(item["key"]), str(item["dtype"]), shape, int(item["offset"]), nbytes,
                                 str(crc) if crc is not None else None))
    except (ValueError, TypeError, KeyError, AttributeError, RecursionError) as e:  # UnicodeDecodeError is a ValueError
        raise _bad(path, f"its header is not valid ({type(e).__name__}: {e})") from None
    start = aligned(preamble + length)
    data_bytes = doc.get("data_bytes")
    if data_bytes is None:  # version 1: the end of the last array
        data_bytes = max((aligned(e.offset + e.nbytes) for e in entries), default=0)
    end = max((e.offset + e.nbytes for e in entries), default=0)
    if version >= 2 and start + int(data_bytes) != size:
        raise _bad(path, f"the file has {size} bytes, its header says {start + int(data_bytes)}: "
                         f"{'cut short' if size < start + int(data_bytes) else 'has bytes appended'}")
    if start + end > size:
        raise _bad(path, f"the file has {size} bytes but its arrays reach byte {start + end}: cut short")
    if any(e.offset < 0 or e.offset % ALIGN for e in entries):
        raise _bad(path, "an array's offset is negative or not aligned: its header is damaged")
    return Header(meta, entries, start, version, int(data_bytes))


def _read_exactly(f: BinaryIO, view: memoryview, path: str, key: str) -> None:
    got = 0
    while got < len(view):
        n = f.readinto(view[got:])  # type: ignore[attr-defined]
        if not n:
            raise _bad(path, f"array {key!r} is cut short")
        got += n


def _check_crc(entry: Entry, crc: int, path: str, name: str) -> None:
    if entry.checksum is not None and f"{crc:08x}" != entry.checksum:
        raise _bad(path, f"array {entry.key!r} is damaged ({name} {crc:08x}, written as {entry.checksum}): "
                         "the file changed after it was written")


class _Checksums:
    """Each entry's checksum (its file version's), fed with the data region in pieces, in order (any piece sizes)."""

    def __init__(self, entries: Sequence[Entry], version: int) -> None:
        self._checksum, self._name = _CHECKSUMS[version]
        self.entries = sorted(entries, key=lambda e: e.offset)
        self._starts = [e.offset for e in self.entries]
        self.crcs = {e.key: 0 for e in self.entries}
        self.scalars: dict[str, np.ndarray] = {}

    def feed(self, offset: int, piece: memoryview) -> None:
        end = offset + len(piece)
        # Entries start in order; one that begins before this piece may still reach into it.
        first = max(0, bisect.bisect_right(self._starts, offset) - 1)
        for entry in self.entries[first:bisect.bisect_left(self._starts, end)]:
            lo, hi = max(entry.offset, offset), min(entry.offset + entry.nbytes, end)
            if lo >= hi:
                continue
            self.crcs[entry.key] = self._checksum(piece[lo - offset:hi - offset], self.crcs[entry.key])
            if int(np.prod(entry.shape, dtype=np.int64)) == 1 and hi - lo == entry.nbytes:
                self.scalars[entry.key] = np.frombuffer(bytes(piece[lo - offset:hi - offset]),
                                                        dtype=dtype_of(entry.dtype)).copy()

    def check(self, path: str) -> None:
        for entry in self.entries:
            _check_crc(entry, self.crcs[entry.key], path, self._name)


def _scan(f: BinaryIO, path: str, header: Header, into: memoryview | None = None) -> _Checksums:
    """Reads a checksummed file's data region, into ``into`` (``data_bytes`` long) or through a
    small buffer, and checksums each piece just after it is read. O_DIRECT where it can."""
    sums = _Checksums(header.entries, header.version)
    direct = header.data_bytes >= DIRECT_FROM
    size = min(_DIRECT_CHUNK if direct else _CHUNK, header.data_bytes)
    scratch = None if into is not None else aligned_empty(size).data
    # Into a buffer of the whole region, a helper thread checksums each piece while the next one
    # is read (the disk's time and the CPU's overlap); through the scratch buffer, one after the other.
    ready: queue.SimpleQueue[tuple[int, memoryview] | None] = queue.SimpleQueue()
    job = None
    if into is not None and direct:
        def checksum_pieces() -> None:
            for offset, piece in iter(ready.get, None):
                sums.feed(offset, piece)

        job = _Background(checksum_pieces, "tb-retune-checkpoint-crc")
    try:
        for i in range(0, header.data_bytes, size or 1):
            n = min(size, header.data_bytes - i)
            piece = into[i:i + n] if into is not None else scratch[:n]  # type: ignore[index]
            if _transfer(f.fileno(), piece, header.start + i, writing=False, direct=direct) < n:
                raise _bad(path, "its data region is cut short")
            if job is None:
                sums.feed(i, piece)
            else:
                ready.put((i, piece))
    finally:
        if job is not None:
            ready.put(None)
            job.result()
    return sums


def read_arrays(f: BinaryIO, path: str, header: Header, buffer: np.ndarray | None = None) -> dict[str, np.ndarray]:
    """Every array, read straight into its own buffer and checked against its checksum.

    With ``buffer`` (uint8, ``header.data_bytes`` long) the arrays are views
    into it, laid out as in the file: no fresh memory to fault in. A
    checksummed file (version 2 or 3) is read as one region (into ``buffer``, or a new one),
    with O_DIRECT from :data:`DIRECT_FROM` bytes.
    """
    if header.version >= 2:
        region = buffer if buffer is not None else aligned_empty(header.data_bytes)
        _scan(f, path, header, region.data if header.data_bytes else None).check(path)
        return {e.key: region[e.offset:e.offset + e.nbytes].view(dtype_of(e.dtype)).reshape(e.shape)
                for e in header.entries}
    out: dict[str, np.ndarray] = {}
    for entry in header.entries:
        if buffer is None:
            arr = np.empty(entry.shape, dtype=dtype_of(entry.dtype))
        else:
            arr = buffer[entry.offset:entry.offset + entry.nbytes].view(dtype_of(entry.dtype)).reshape(entry.shape)
        f.seek(header.start + entry.offset)
        view = arr.reshape(-1).view(np.uint8).data if entry.nbytes else memoryview(b"")
        for i in range(0, entry.nbytes, _CHUNK):
            _read_exactly(f, view[i:i + _CHUNK], path, entry.key)
        out[entry.key] = arr
    return out


def verify_data(f: BinaryIO, path: str, header: Header) -> dict[str, np.ndarray]:
    """Checks every array's checksum, reading the data region in pieces into one small buffer.

    Returns the scalars (arrays of one element) it read on the way, such as
    the optimizer's iteration count, for the caller's checks of the content.
    """
    if header.version >= 2:
        sums = _scan(f, path, header)
        sums.check(path)
        return sums.scalars
    scalars: dict[str, np.ndarray] = {}  # version 1: no checksums; the scalars for the checks
    for entry in header.entries:
        if int(np.prod(entry.shape, dtype=np.int64)) == 1:
            f.seek(header.start + entry.offset)
            buf = memoryview(bytearray(entry.nbytes))
            _read_exactly(f, buf, path, entry.key)
            scalars[entry.key] = np.frombuffer(bytes(buf), dtype=dtype_of(entry.dtype)).copy()
    return scalars


def _is_iteration(key: str) -> bool:
    return key.startswith("optimizer/") and key.rsplit("/", 1)[-1].split("#")[0] in ("iteration", "iterations")


def check_contents(path: str, step: int, header: Header, scalars: Mapping[str, np.ndarray]) -> None:
    """What a well-formed file can still get wrong: no model weights, a negative step, or a step
    that is not the one its name (``step``) says. ``scalars``: its arrays of one element."""
    meta_step = header.meta.get("step")
    if not isinstance(meta_step, int) or isinstance(meta_step, bool) or meta_step < 0:
        raise _bad(path, f"its metadata has step {meta_step!r}, not a step >= 0")
    if meta_step != step:
        raise _bad(path, f"its metadata says step {meta_step}, its name says step {step}")
    if not any(e.key.startswith("model/") for e in header.entries):
        raise _bad(path, "it holds 0 model weights (written before the model was built?)")
    for key, value in scalars.items():
        if _is_iteration(key) and value.dtype.kind in "iu" and int(value.reshape(-1)[0]) < 0:
            raise _bad(path, f"its {key} is {int(value.reshape(-1)[0])}, a negative step")
