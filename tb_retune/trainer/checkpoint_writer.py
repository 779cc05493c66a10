"""How checkpoints become durable: on a thread of their own, or inline.

The controller talks to one writer interface (``submit, promote, run,
pending, flush, stop, finish``) whichever is in use. ``run`` hands the writer other
work that must happen in order with the checkpoints but not on the training
thread (a run's start: the root node's record, the first state save), so the
order on disk is the order of submission. A checkpoint is named by ``(branch,
step)``: a promotion or a restore resolves the file through the store under
its lock when it runs, never through a path captured earlier on another
thread.
"""

from __future__ import annotations

import atexit
import contextlib
import errno
import logging
import queue
import threading
from collections.abc import Callable, Iterator
from typing import Any, Protocol

from tb_retune._errors import CheckpointError
from tb_retune.trainer.checkpoints import CheckpointInfo, CheckpointStore, Snapshot

logger = logging.getLogger("tb_retune")


def describe_write_error(step: int, error: BaseException) -> str:
    """The message a person sees when a checkpoint could not be written."""
    if isinstance(error, OSError) and error.errno == errno.ENOSPC:
        return (f"checkpoint at step {step} not written: no space left on device ({error}); "
                "training goes on without it; free some space and the next checkpoint is written")
    return f"checkpoint at step {step} not written: {type(error).__name__}: {error}; training goes on without it"


class CheckpointWriter(Protocol):
    """What the controller needs from a writer."""

    def submit(self, snap: Snapshot) -> None: ...

    def promote(self, branch: str, step: int, kind: str) -> None: ...

    def run(self, job: Callable[[], None], what: str) -> None: ...

    def held(self) -> contextlib.AbstractContextManager[None]: ...

    def pending(self, branch: str, step: int) -> bool: ...

    def flush(self) -> None: ...

    def stop(self) -> None: ...

    def finish(self, job: Callable[[], None], what: str) -> None: ...


class InlineWriter:
    """Writes each checkpoint on the caller's thread, at once."""

    def __init__(self, store: CheckpointStore, on_written: Callable[[CheckpointInfo], None],
                 on_error: Callable[[str], None]) -> None:
        self.store = store
        self._on_written = on_written
        self._on_error = on_error
        self._full = False  # reported once per stretch of a full disk

    def submit(self, snap: Snapshot) -> None:
        try:
            info = self.store.write(snap)
        except (OSError, CheckpointError) as e:
            full = isinstance(e, OSError) and e.errno == errno.ENOSPC
            if full and self._full:
                logger.info("retune: %s", describe_write_error(snap.step, e))
            else:
                self._on_error(describe_write_error(snap.step, e))
            self._full = full
            return
        if self._full:
            self._full = False
            self._on_error(f"checkpoints are written again (step {snap.step}): the disk has space again")
        self._on_written(info)

    def promote(self, branch: str, step: int, kind: str) -> None:
        try:
            self.store.promote(branch, step, kind)
        except (OSError, CheckpointError) as e:
            self._on_error(f"checkpoint at step {step}: {e}")

    def run(self, job: Callable[[], None], what: str) -> None:
        """Runs ``job`` now; a failure is reported (``what`` names it), never raised."""
        try:
            job()
        except Exception as e:  # the job's own failure, never the end of fit
            logger.exception("retune: %s failed", what)
            self._on_error(f"{what}: {type(e).__name__}: {e}")

    def pending(self, branch: str, step: int) -> bool:
        return False

    def held(self) -> contextlib.AbstractContextManager[None]:
        return contextlib.nullcontext()

    def flush(self) -> None:
        pass

    def stop(self) -> None:
        pass

    def finish(self, job: Callable[[], None], what: str) -> None:
        """Runs ``job`` on a thread of its own that the interpreter waits for
        at exit (not a daemon); the caller goes on."""
        threading.Thread(target=self.run, args=(job, what), name="tb-retune-sync", daemon=False).start()


class BackgroundWriter:
    """Writes checkpoints on a thread of its own, in the order submitted.

    The training thread only copies the values (:meth:`CheckpointStore.snapshot`);
    the write, the fsync and the publication happen here, so a node boundary
    costs the training loop a memory copy. A checkpoint is published (and
    listed as restorable) only once it is durable.
    """

    def __init__(self, store: CheckpointStore, on_written: Callable[[CheckpointInfo], None],
                 on_error: Callable[[str], None]) -> None:
        self.store = store
        self._inline = InlineWriter(store, on_written, on_error)
        self._on_error = on_error
        self._queue: queue.Queue[Any] = queue.Queue()
        self._pending: set[tuple[str, int]] = set()
        self._pending_lock = threading.Lock()
        self._held: list[Any] | None = None  # jobs held back on the training thread (see held)
        self._thread = threading.Thread(target=self._run, name="tb-retune-checkpoints", daemon=True)
        self._thread.start()

    def submit(self, snap: Snapshot) -> None:
        with self._pending_lock:
            self._pending.add((snap.branch, snap.step))
        self._put(snap)

    def promote(self, branch: str, step: int, kind: str) -> None:
        self._put(("promote", branch, step, kind))

    def run(self, job: Callable[[], None], what: str) -> None:
        """Runs ``job`` on the writer's thread, after what was submitted before it."""
        self._put(("run", job, what))

    def _put(self, job: Any) -> None:
        if self._held is not None:
            self._held.append(job)
        else:
            self._queue.put(job)

    @contextlib.contextmanager
    def held(self) -> Iterator[None]:
        """Jobs submitted in the block (by the thread that holds it) reach the
        writer's thread when it ends, in order: the writer does not compete
        for the GIL with the rest of a batch boundary's work (a snapshot is
        taken at once; only its write waits). Not re-entrant."""
        if self._held is not None:
            yield
            return
        self._held = []
        try:
            yield
        finally:
            self._release()

    def _release(self) -> None:
        held, self._held = self._held, None
        for job in held or ():
            self._queue.put(job)

    def pending(self, branch: str, step: int) -> bool:
        with self._pending_lock:
            return (branch, step) in self._pending

    def _run(self) -> None:
        while True:
            job = self._queue.get()
            try:
                if job is None:
                    atexit.unregister(self._join_at_exit)  # registered by finish(), if it was called
                    return
                if isinstance(job, Snapshot):
                    try:
                        self._inline.submit(job)
                    finally:
                        with self._pending_lock:
                            self._pending.discard((job.branch, job.step))
                elif job[0] == "run":
                    self._inline.run(job[1], job[2])
                else:
                    _, branch, step, kind = job
                    self._inline.promote(branch, step, kind)
            except Exception as e:  # never let the writer die silently
                logger.exception("retune: checkpoint writer error")
                self._on_error(f"checkpoint writer: {type(e).__name__}: {e}")
            finally:
                self._queue.task_done()

    def flush(self) -> None:
        """Waits until everything submitted is written (held jobs included)."""
        if self._held is not None:
            self._release()
            self._held = []
        self._queue.join()

    def stop(self) -> None:
        self._queue.put(None)
        self._thread.join(timeout=60)

    def finish(self, job: Callable[[], None], what: str) -> None:
        """Runs ``job`` after everything submitted, then ends; the caller does
        not wait for it, the interpreter does at exit (the thread is a
        daemon, so that a run that never ends cannot hold the process: a
        handler at exit joins it instead). Starting no thread here spares
        the caller waiting for one to be scheduled (1-4 ms on a busy machine)."""
        self.run(job, what)
        atexit.register(self._join_at_exit)
        self._queue.put(None)

    def _join_at_exit(self) -> None:
        self._thread.join(timeout=60)


def make_writer(background: bool, store: CheckpointStore, on_written: Callable[[CheckpointInfo], None],
                on_error: Callable[[str], None]) -> CheckpointWriter:
    cls = BackgroundWriter if background else InlineWriter
    return cls(store, on_written, on_error)
