"""The tree route's cache: which runs to list again, the status file, the reply's bytes.

A refresh of a large tree used to list every node tag and every scalar series
of every branch through the data provider, only to find that nothing changed
(at 10,000 nodes that listing was most of a warm request). The trainer writes
to one branch at a time, and its status file says which, so
:class:`ListingPlan` lists again only the runs that can have changed:

- runs not listed before (a new branch, a trial of a search);
- the branch that the status file names (the trainer's; alive or not, so the
  last events of a finished run are seen whenever the data provider loads them);
- a branch that was the status file's branch, or whose listing changed, within
  :data:`HOT_S` seconds (after a restore or a resume the old branch's last
  events come with the data provider's next reload, which may be later);
- :data:`SWEEP_PER_REQUEST` of the others per request, least recently listed
  first, so that a change no status file tells of (another process writing
  into an old branch) shows within a bounded number of requests (an
  experiment of up to that many branches is listed whole at every request).

Without a status file every run is listed at every request, as before.

:class:`StatusMemo` keeps the decoded status file until the file changes
(its ``stat`` signature), and :class:`Reply` keeps the tree's JSON with its
gzip-compressed form, so a refresh compresses only the parts that change with
every heartbeat (TensorBoard's ``http_util.Respond`` would gzip the whole
reply again on every request).
"""

from __future__ import annotations

import dataclasses
import os
import threading
import zlib
from collections.abc import Callable, Iterable, Mapping
from typing import Any, TypeVar

#: Seconds a branch stays listed at every request after it stopped being the
#: trainer's branch or after its listing last changed.
HOT_S = 60.0
#: Other branches listed again per request, least recently listed first.
SWEEP_PER_REQUEST = 32
#: Fields of a node that the tree reply leaves out: the tree view does not
#: draw them (it links nodes by ``parent``); the ``node`` route has them, and
#: the ``metrics`` route every node's ``metrics``.
REPLY_DROPS_NODE_FIELDS = ("children", "reason", "time", "metrics")
#: Keys of a node's ``search`` record that the tree reply keeps: the search
#: and the trial number of a trial's node (the tree draws a search's trials as
#: one group), or the search and ``then`` for the branch that goes on after it.
REPLY_SEARCH_KEYS = ("id", "trial", "then")
#: Fields of a branch that the tree reply leaves out (not read by the tab).
REPLY_DROPS_BRANCH_FIELDS = ("time",)
#: Keys of the status file that the tree reply leaves out of its ``status``:
#: per-branch lists that grow with every node (the nodes and branches carry
#: their checkpoints; the ``status`` route has the whole file).
REPLY_DROPS_STATUS_KEYS = ("checkpoints", "checkpoint_nodes")
#: Compression level of the cached reply: TensorBoard's own (``http_util``).
GZIP_LEVEL = 3

_T = TypeVar("_T")


# -- what to list ---------------------------------------------------------------


@dataclasses.dataclass
class _Seen:
    """When one run was last listed, and when it was last seen changing."""

    listed_at: float
    changed_at: float


class ListingPlan:
    """Which runs of an experiment a request lists through the data provider.

    Thread-safe. Times are the store's clock (seconds).

    Args:
        hot_s: See :data:`HOT_S`.
        sweep: See :data:`SWEEP_PER_REQUEST`.
    """

    def __init__(self, *, hot_s: float = HOT_S, sweep: int = SWEEP_PER_REQUEST) -> None:
        self.hot_s = hot_s
        self.sweep = sweep
        self._lock = threading.Lock()
        self._seen: dict[tuple[str, str], _Seen] = {}

    def plan(self, experiment_id: str, runs: Iterable[str], *, live_run: str | None,
             now: float, everything: bool = False) -> list[str]:
        """The runs of ``runs`` to list now (see the module's docstring).

        Args:
            experiment_id: TensorBoard's experiment id.
            runs: The experiment's branches as run names.
            live_run: The run of the branch that the status file names.
            now: The current time.
            everything: List every run (no status file tells what changed).
        """
        runs = list(runs)
        with self._lock:
            if live_run is not None and (experiment_id, live_run) in self._seen:
                # The trainer's branch counts as changing for as long as it is
                # the trainer's, and for hot_s after.
                self._seen[(experiment_id, live_run)].changed_at = now
            hot: list[str] = []
            cold: list[tuple[float, str]] = []
            for run in runs:
                seen = self._seen.get((experiment_id, run))
                if everything or seen is None or run == live_run or now - seen.changed_at < self.hot_s:
                    hot.append(run)
                else:
                    cold.append((seen.listed_at, run))
        cold.sort()
        return hot + [run for _, run in cold[: self.sweep]]

    def listed(self, experiment_id: str, runs: Iterable[str], *, changed: Iterable[str], now: float) -> None:
        """Records that ``runs`` were listed at ``now``, and which of them had changed.

        A run listed for the first time counts as changed only when some of
        ``runs`` were known already (a new branch while the plugin watches);
        the first listing of a whole experiment starts it cold.
        """
        changed = set(changed)
        runs = list(runs)
        with self._lock:
            known = any((experiment_id, run) in self._seen for run in runs)
            for run in runs:
                key = (experiment_id, run)
                seen = self._seen.get(key)
                if seen is None:
                    self._seen[key] = _Seen(listed_at=now, changed_at=now if known else float("-inf"))
                else:
                    seen.listed_at = now
                    if run in changed:
                        seen.changed_at = now

    def forget(self, experiment_id: str, keep: Iterable[str]) -> None:
        """Drops the runs of ``experiment_id`` that are not in ``keep`` (runs that are gone)."""
        keep = set(keep)
        with self._lock:
            for key in [k for k in self._seen if k[0] == experiment_id and k[1] not in keep]:
                del self._seen[key]


# -- the status file ------------------------------------------------------------


def _signature(path: str) -> tuple[int, int, int, int] | None:
    try:
        st = os.stat(path)
    except OSError:
        return None
    return (st.st_ino, st.st_size, st.st_mtime_ns, st.st_ctime_ns)


class StatusMemo:
    """The decoded status file of each experiment, read again only when the file changes.

    The file is ``stat``-ed before it is read, so a replacement during the
    read is seen by the next request. A status that changes at every
    heartbeat is read every time; an idle or finished experiment's (several
    hundred KiB at 10,000 nodes) only once.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._memo: dict[str, tuple[tuple[int, int, int, int], Any]] = {}

    def read(self, path: str | None, load: Callable[[], _T]) -> _T:
        """``load()``, or what it returned for the same file before.

        Args:
            path: The local path of the file; None (a remote logdir) always loads.
            load: Reads and decodes the file.
        """
        signature = _signature(path) if path is not None else None
        if signature is None or path is None:
            return load()
        with self._lock:
            found = self._memo.get(path)
        if found is not None and found[0] == signature:
            value: _T = found[1]
            return value
        value = load()
        with self._lock:
            self._memo[path] = (signature, value)
        return value


# -- the reply --------------------------------------------------------------------


def reply_tree(tree: Mapping[str, Any]) -> dict[str, Any]:
    """The tree as the ``tree`` route sends it: without the fields the tab does
    not read (:data:`REPLY_DROPS_NODE_FIELDS`, :data:`REPLY_DROPS_BRANCH_FIELDS`).
    Every other key passes through unchanged."""
    out = dict(tree)
    if isinstance(tree.get("nodes"), list):
        out["nodes"] = [_reply_node(n) for n in tree["nodes"]]
    if isinstance(tree.get("branches"), list):
        out["branches"] = [_without(b, REPLY_DROPS_BRANCH_FIELDS) for b in tree["branches"]]
    return out


def _reply_node(node: Any) -> Any:
    """A node as the tree reply sends it: without :data:`REPLY_DROPS_NODE_FIELDS`,
    its ``search`` cut to :func:`reply_search` (left out when it has none)."""
    out = _without(node, REPLY_DROPS_NODE_FIELDS)
    if isinstance(out, dict) and "search" in out:
        search = reply_search(out.pop("search"))
        if search is not None:
            out["search"] = search
    return out


def reply_search(search: Any) -> dict[str, Any] | None:
    """A node record's ``search`` as the tree reply sends it: ``{"id", "trial"}``
    for a trial's node, ``{"id", "then"}`` for the branch after a search (its
    ``trial`` is the best trial's number, not its own); None for a node that
    is not of a search. The ``node`` route has the whole record."""
    if not isinstance(search, Mapping) or not isinstance(search.get("id"), str):
        return None
    if "then" in search:
        return {"id": search["id"], "then": search["then"]}
    return {k: search[k] for k in ("id", "trial") if k in search}


def reply_status(status: Mapping[str, Any] | None) -> dict[str, Any] | None:
    """The status file as the tree reply embeds it (see :data:`REPLY_DROPS_STATUS_KEYS`)."""
    return None if status is None else _without(status, REPLY_DROPS_STATUS_KEYS)


def _without(item: Any, keys: tuple[str, ...]) -> Any:
    if not isinstance(item, Mapping):
        return item
    return {k: v for k, v in item.items() if k not in keys}


class Reply:
    """A JSON object reply whose first part is fixed and whose last keys change per request.

    ``head`` is the fixed part, serialised once; :meth:`body` appends the
    keys of a ``tail`` object. :meth:`gzip_body` gives the same bytes as one
    gzip stream: the head is compressed once and the compressor's state kept
    (``zlib`` ``copy()``), so a request compresses only its tail.

    Args:
        head: A JSON object's bytes (``{...}``).
    """

    def __init__(self, head: bytes) -> None:
        if not (head.startswith(b"{") and head.endswith(b"}")):
            raise ValueError("Reply: head must be the bytes of a JSON object")
        self._head = head[:-1]
        #: A fingerprint of ``head`` (CRC-32, hex): the same bytes, the same key.
        self.key = f"{zlib.crc32(head):08x}"
        self._lock = threading.Lock()
        self._gzip: tuple[bytes, Any] | None = None

    def _tail(self, tail: bytes) -> bytes:
        if not (tail.startswith(b"{") and tail.endswith(b"}")):
            raise ValueError("Reply: tail must be the bytes of a JSON object")
        if tail == b"{}":
            return b"}"
        return (b"," if self._head != b"{" else b"") + tail[1:]

    def body(self, tail: bytes) -> bytes:
        """The whole reply: head and tail merged into one object."""
        return self._head + self._tail(tail)

    def gzip_body(self, tail: bytes) -> bytes:
        """:meth:`body`, gzip-compressed (one gzip member)."""
        with self._lock:
            if self._gzip is None:
                compressor = zlib.compressobj(GZIP_LEVEL, zlib.DEFLATED, 16 + zlib.MAX_WBITS)
                self._gzip = (compressor.compress(self._head), compressor)
            start, compressor = self._gzip
            rest = compressor.copy()
        return start + rest.compress(self._tail(tail)) + rest.flush()
