"""Issue 14 item 9 with a real fit(): a control file that is a FIFO, a folder, a link out of the
experiment or unreadable never blocks the trainer, and each is reported in its status."""

from __future__ import annotations

import errno
import os
import threading
from typing import Any

import pytest

from tests.conftest import atomic_save, live_fit, read_status, wait_for


def errors(logdir: str) -> list[str]:
    return [str(e.get("message")) for e in read_status(logdir).get("errors", []) if isinstance(e, dict)]


def wait_error(logdir: str, needle: str) -> None:
    wait_for(lambda: any(needle in m for m in errors(logdir)), timeout=120, what=f"an error with {needle!r}")


def wait_lr(logdir: str, value: float) -> None:
    wait_for(lambda: read_status(logdir).get("hyperparameters", {}).get("learning_rate") == value,
             timeout=120, what=f"learning_rate {value} in force")


def test_a_fifo_at_start_does_not_hang_the_start_and_later_saves_are_seen(tmp_path: Any) -> None:
    logdir = str(tmp_path / "exp")
    os.makedirs(logdir)
    control = os.path.join(logdir, "retune.json")
    os.mkfifo(control)
    started = threading.Event()

    # A writer that never comes: before the fix, begin() blocked in open() forever.
    with live_fit(logdir) as fit:
        started.set()
        assert fit.is_alive()
        wait_error(logdir, "retune.json: is a FIFO (named pipe), not a file")
        wait_for(lambda: read_status(logdir).get("step", 0) > 0, timeout=120, what="training to go on")
        os.remove(control)
        atomic_save(control, {"hyperparameters": {"learning_rate": 0.02}})
        wait_lr(logdir, 0.02)
        # A FIFO made while training: reported, and the watcher still sees the next save.
        os.remove(control)
        os.mkfifo(control)
        wait_for(lambda: sum("is a FIFO" in m for m in errors(logdir)) >= 2, timeout=120, what="a second FIFO error")
        os.remove(control)
        atomic_save(control, {"hyperparameters": {"learning_rate": 0.03}})
        wait_lr(logdir, 0.03)
    assert started.is_set()


def test_a_folder_and_a_link_out_are_reported(tmp_path: Any) -> None:
    logdir = str(tmp_path / "exp")
    outside = tmp_path / "outside.json"
    outside.write_text('{"hyperparameters": {"learning_rate": 0.5}}')
    control = os.path.join(logdir, "retune.json")
    with live_fit(logdir):
        os.mkdir(control)
        wait_error(logdir, "retune.json: is a folder, not a file")
        os.rmdir(control)
        os.symlink(str(outside), control)
        wait_error(logdir, "retune.json: is a link to")
        assert any("outside the experiment folder" in m for m in errors(logdir))
        assert read_status(logdir)["hyperparameters"]["learning_rate"] == 0.01  # never read through the link
        os.remove(control)
        atomic_save(control, {"hyperparameters": {"learning_rate": 0.04}})
        wait_lr(logdir, 0.04)


def test_an_unreadable_control_file_is_reported(tmp_path: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    logdir = str(tmp_path / "exp")
    control = os.path.join(logdir, "retune.json")
    with live_fit(logdir):
        if os.geteuid() == 0:
            # Root reads a mode-000 file: the fault is made where root makes it impossible.
            real_open = os.open

            def denied(path: Any, flags: int, *args: Any) -> int:
                if os.path.basename(os.fspath(path)) == "retune.json" and not flags & (os.O_WRONLY | os.O_RDWR):
                    raise PermissionError(errno.EACCES, "Permission denied", os.fspath(path))
                return real_open(path, flags, *args)

            monkeypatch.setattr(os, "open", denied)
        atomic_save(control, {"hyperparameters": {"learning_rate": 0.05}})
        os.chmod(control, 0o000)
        wait_error(logdir, "retune.json: cannot be read (Permission denied)")
        monkeypatch.undo()
        os.chmod(control, 0o644)
        atomic_save(control, {"hyperparameters": {"learning_rate": 0.06}})
        wait_lr(logdir, 0.06)


def test_a_watcher_stopped_without_waiting_hands_nothing_over_and_ends_on_its_own(tmp_path: Any) -> None:
    """The end of fit tells the watcher to stop and does not join it (``stop(wait=False)``): a
    save after that reaches nobody, and the watcher's thread stops its observer and ends."""
    from tb_retune.trainer.watcher import ControlWatcher

    folder = tmp_path / "exp"
    folder.mkdir()
    control = str(folder / "retune.json")
    seen: list[bytes | None] = []
    watcher = ControlWatcher(control, seen.append, debounce_s=0.01)
    watcher.read_now()
    watcher.start(background=True)
    atomic_save(control, {"hyperparameters": {"learning_rate": 0.5}})
    wait_for(lambda: seen, timeout=120, what="the first save handed over")
    thread = watcher._thread
    assert thread is not None
    watcher.stop(wait=False)
    handed = len(seen)
    atomic_save(control, {"hyperparameters": {"learning_rate": 0.25}})
    thread.join(timeout=120)
    assert not thread.is_alive()
    assert watcher._observer is None  # the watcher's own thread stopped it
    assert len(seen) == handed
