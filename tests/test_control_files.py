"""The on-disk contract's files: the one writer (revision stamp, pending restores, umask),
the bounded safe reads, and the one rule of issue 13 bug 9 (``request_state``) against status dicts."""

from __future__ import annotations

import contextlib
import errno
import json
import os
import re
import stat
import subprocess
import sys
import time
from collections.abc import Iterator
from typing import Any

import pytest

from tb_retune._errors import PendingRestoreError
from tb_retune.experiment import atomic, control_file, requests, safe_read
from tb_retune.experiment.safe_read import UnsafeFileError
from tb_retune.reader import folders

NOW = 1_800_000_000.0


def status(**kw: Any) -> dict[str, Any]:
    base: dict[str, Any] = {"pid": os.getpid(), "heartbeat": NOW - 1, "state": "training", "restores_done": [],
                            "hyperparameters": {"learning_rate": 0.01, "momentum": 0.9},
                            "checkpoints": {"main": [0, 100]}}
    base.update(kw)
    return base


def record(revision: str | None, result: str, sha: str = "0" * 64, error: str | None = None) -> dict[str, Any]:
    return {"revision": revision, "sha256": sha, "result": result, "error": error, "time": NOW - 0.5}


# -- request_state: the one rule ------------------------------------------------------------


def dead_pid() -> int:
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid


@pytest.mark.parametrize(
    ("st", "state"),
    [
        (None, "no_trainer"),
        (status(), "pending"),
        (status(control=record("w-aaaaaaaaaaaa", "applied")), "applied"),
        (status(control=record("w-aaaaaaaaaaaa", "rejected", error="restore.step: ...")), "rejected"),
        (status(control=record("w-aaaaaaaaaaaa", "unchanged")), "unchanged"),
        (status(control=record("w-bbbbbbbbbbbb", "applied")), "pending"),  # another revision
        (status(control=record("w-aaaaaaaaaaaa", "bogus")), "pending"),  # not a record
        (status(state="finished"), "no_trainer"),
        (status(state="failed"), "no_trainer"),
        (status(state="finished", control=record("w-aaaaaaaaaaaa", "applied")), "applied"),  # taken before the end
        (status(heartbeat=NOW - 600), "pending"),  # stuck, not known dead: the caller's timeout decides
    ],
)
def test_request_state(st: dict[str, Any] | None, state: str) -> None:
    assert requests.request_state(st, "w-aaaaaaaaaaaa", NOW) == state


def test_a_dead_pid_on_this_host_means_no_trainer() -> None:
    import socket

    pid = dead_pid()
    here = socket.gethostname()
    assert requests.request_state(status(pid=pid, host=here), "w-a", NOW) == "no_trainer"
    assert requests.request_state(status(pid=pid, host="another-machine"), "w-a", NOW) == "pending"
    # Without a host: dead only once the heartbeat is older than a few seconds (it may run elsewhere).
    assert requests.request_state(status(pid=pid, heartbeat=NOW - 1), "w-a", NOW) == "pending"
    assert requests.request_state(status(pid=pid, heartbeat=NOW - 30), "w-a", NOW) == "no_trainer"
    assert requests.request_state(status(pid=os.getpid(), heartbeat=NOW - 30), "w-a", NOW) == "pending"


def test_a_later_write_that_carries_the_request_answers_for_it() -> None:
    st = status(control=record("w-later", "applied"))
    assert requests.request_state(st, "w-mine", NOW) == "pending"
    assert requests.request_state(st, "w-mine", NOW, later=["w-later"]) == "applied"


def test_pending_restore() -> None:
    control = {"restore": {"id": "r-1", "branch": "main", "step": 100}}
    assert requests.pending_restore(control, status(), None) == control["restore"]
    assert requests.pending_restore(control, None, None) == control["restore"]  # trainer alive or not
    assert requests.pending_restore(control, status(restores_done=["r-1"]), None) is None
    assert requests.pending_restore({"restore": None}, status(), None) is None
    # The trainer refused these very bytes: the restore will never happen as it stands.
    refused = status(control=record("w-1", "rejected", sha="ab" * 32))
    assert requests.pending_restore(control, refused, "ab" * 32) is None
    assert requests.pending_restore(control, refused, "cd" * 32) == control["restore"]


# -- the one writer ---------------------------------------------------------------------


@pytest.fixture
def folder(tmp_path: Any) -> str:
    path = str(tmp_path / "exp")
    os.makedirs(path)
    atomic.atomic_write_json(os.path.join(path, "retune-status.json"), status(), durable=False)
    return path


def test_every_write_is_stamped_with_a_new_revision(folder: str) -> None:
    first = control_file.write_control(folder, {"hyperparameters": {"learning_rate": 0.02, "momentum": 0.5}})
    assert re.fullmatch(r"w-[0-9a-f]{12}", first["revision"]["id"])
    assert first["revision"]["keys"] == ["learning_rate", "momentum"]
    again = control_file.write_control(folder, {"hyperparameters": {"learning_rate": 0.02}})
    assert again["revision"]["id"] != first["revision"]["id"] and again["revision"]["keys"] == ["learning_rate"]
    assert again["hyperparameters"] == {"learning_rate": 0.02, "momentum": 0.5}
    restore = control_file.write_control(folder, {"restore": {"id": "r-1", "branch": "main", "step": 100}})
    assert restore["revision"]["keys"] == []
    with open(os.path.join(folder, "retune.json")) as f:
        assert json.load(f) == restore


def test_a_second_restore_while_one_is_pending_is_refused(folder: str) -> None:
    control_file.write_control(folder, {"restore": {"id": "r-1", "branch": "main", "step": 100}})
    with open(os.path.join(folder, "retune.json"), "rb") as f:
        before = f.read()
    with pytest.raises(PendingRestoreError, match=r"^restore: an earlier restore r-1 \(main@100\) is still pending"):
        control_file.write_control(folder, {"restore": {"id": "r-2", "branch": "main", "step": 0}})
    with open(os.path.join(folder, "retune.json"), "rb") as f:
        assert f.read() == before
    # Hyperparameters can still be set meanwhile, and cancelling works.
    control_file.write_control(folder, {"hyperparameters": {"momentum": 0.5}})
    control_file.write_control(folder, {"restore": None})
    control_file.write_control(folder, {"restore": {"id": "r-2", "branch": "main", "step": 0}})


@contextlib.contextmanager
def umask(mask: int) -> Iterator[None]:
    old = os.umask(mask)
    try:
        yield
    finally:
        os.umask(old)


@pytest.mark.parametrize(("mask", "mode"), [(0o022, 0o644), (0o002, 0o664), (0o077, 0o600)])
def test_written_files_honour_the_umask(folder: str, mask: int, mode: int) -> None:
    """Issue 14 item 10: mkstemp's 0600 made retune.json unreadable for a trainer of another user."""
    with umask(mask):
        control_file.write_control(folder, {"hyperparameters": {"momentum": 0.5}})
        atomic.atomic_write_json(os.path.join(folder, "other.json"), {}, durable=False)
    for name in ("retune.json", "other.json"):
        assert stat.S_IMODE(os.stat(os.path.join(folder, name)).st_mode) == mode, name


# -- bounded, safe reads ----------------------------------------------------------------------


def test_safe_reads_refuse_what_is_not_a_regular_file_inside_the_folder(tmp_path: Any) -> None:
    folder = tmp_path / "exp"
    folder.mkdir()
    path = str(folder / "retune.json")
    assert safe_read.read_file(path, 100) is None  # absent
    os.mkdir(path)
    with pytest.raises(UnsafeFileError, match=r"^retune.json: is a folder, not a file"):
        safe_read.read_file(path, 100)
    os.rmdir(path)
    os.mkfifo(path)
    started = time.monotonic()
    with pytest.raises(UnsafeFileError, match=r"^retune.json: is a FIFO \(named pipe\), not a file"):
        safe_read.read_file(path, 100)  # no writer: a plain open() would block here forever
    assert time.monotonic() - started < 30
    os.remove(path)
    os.symlink("/dev/zero", path)
    with pytest.raises(UnsafeFileError, match="is a link to /dev/zero, outside the experiment folder"):
        safe_read.read_file(path, 100)
    os.remove(path)
    (tmp_path / "outside.json").write_text("{}")
    os.symlink(str(tmp_path / "outside.json"), path)
    with pytest.raises(UnsafeFileError, match="outside the experiment folder"):
        safe_read.read_file(path, 100)
    os.remove(path)
    (folder / "real.json").write_text('{"a": 1}')
    os.symlink("real.json", path)  # a link that stays inside is followed
    assert safe_read.read_file(path, 100) == b'{"a": 1}'
    os.remove(path)
    (folder / "retune.json").write_bytes(b"x" * 101)
    with pytest.raises(UnsafeFileError, match="is 101 bytes, larger than the limit of 100 bytes"):
        safe_read.read_file(path, 100)


def test_an_unreadable_file_says_so(tmp_path: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "retune.json"
    path.write_text("{}")
    os.chmod(path, 0o000)
    if os.geteuid() == 0:
        # Root reads a mode-000 file; the fault is made where root makes it impossible.
        real_open = os.open

        def denied(p: Any, flags: int, *args: Any) -> int:
            if os.fspath(p) == str(path):
                raise PermissionError(errno.EACCES, "Permission denied", str(path))
            return real_open(p, flags, *args)

        monkeypatch.setattr(os, "open", denied)
    with pytest.raises(UnsafeFileError, match=r"^retune.json: cannot be read \(Permission denied\); make it readable"):
        safe_read.read_file(str(path), 100)


def test_one_bounded_status_reader_serves_the_writer_and_the_reader(tmp_path: Any) -> None:
    folder = str(tmp_path)
    path = os.path.join(folder, "retune-status.json")

    def both() -> tuple[Any, Any]:
        return control_file.read_status(folder), folders.read_status(folder, ".")

    with open(path, "w") as f:
        f.write('{"state": ' + "[" * 100_000)  # a RecursionError for json.loads
    assert both() == (None, None)
    assert "nested deeper than 32 levels" in str(control_file.read_status_checked(folder)[1])
    os.remove(path)
    os.mkfifo(path)
    assert both() == (None, None)
    os.remove(path)
    with open(path, "wb") as f:
        f.write(b'{"x": "' + b"y" * (4 * 1024 * 1024) + b'"}')
    assert both() == (None, None)
    assert "larger than the limit of 4194304 bytes" in str(control_file.read_status_checked(folder)[1])
    atomic.atomic_write_json(path, status(), durable=False)
    assert both() == (status(), status())
