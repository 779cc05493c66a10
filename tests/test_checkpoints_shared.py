"""One checkpoint folder shared by the trainer and search workers (other
processes): each sees what the others wrote or renamed, and a worker's store
never removes, renames or sets aside a file it did not make."""

from __future__ import annotations

import os
from typing import Any

import numpy as np

from tb_retune.trainer.checkpoints import CheckpointStore
from tb_retune.trainer.worker import WorkerStore
from tests.test_checkpoint_store import _save, _trained, _values


def test_a_checkpoint_another_process_renamed_is_read_under_its_new_name(tmp_path: Any) -> None:
    folder = str(tmp_path / "checkpoints")
    model = _trained()
    trainer = CheckpointStore(folder)
    _save(trainer, model, 40, kind="epoch")
    worker = WorkerStore(folder)  # lists the folder: main@40 as an epoch checkpoint
    # The trainer keeps the search's source out of the retention policy: a rename to "boundary".
    trainer.promote("main", 40, "boundary")
    stale = worker.get("main", 40)
    assert stale is not None and not os.path.exists(stale.path)
    meta = worker.read_meta(stale)  # found again under its new name, not "unreadable"
    assert meta["hyperparameters"] == {"learning_rate": 0.01}
    info = worker.get("main", 40)
    assert info is not None and info.kind == "boundary" and os.path.exists(info.path)
    other = _trained(seed=1)
    worker.load(other, other.optimizer, stale)  # a load through the old name too
    for (name, want), got in zip(_values(model).items(), _values(other).values(), strict=True):
        assert np.array_equal(want, got), name


def test_a_checkpoint_written_by_another_process_is_found(tmp_path: Any) -> None:
    folder = str(tmp_path / "checkpoints")
    trainer = CheckpointStore(folder)
    worker = WorkerStore(folder)
    model = _trained()
    _save(worker, model, 70, kind="boundary", branch="main-s-1-t3")  # a worker's trial end state
    assert trainer.get("main-s-1-t3", 70) is None  # listed when the trainer started: not yet there
    info = trainer.find("main-s-1-t3", 70)
    assert info is not None and info.kind == "boundary"
    assert trainer.read_meta(info)


def test_a_worker_store_leaves_the_other_processes_files_alone(tmp_path: Any) -> None:
    folder = str(tmp_path / "checkpoints")
    model = _trained()
    trainer = CheckpointStore(folder, keep_last=1)
    _save(trainer, model, 10)
    # The trainer's write in progress: a temporary file that a starting store must not sweep away.
    tmp = os.path.join(folder, "main", ".tmp-in-progress.ckpt")
    with open(tmp, "wb") as f:
        f.write(b"half")
    worker = WorkerStore(folder, keep_last=1)
    assert os.path.exists(tmp)
    # Its own trial branch is pruned by its retention policy; the trainer's files are never touched.
    for step in (20, 30, 40):
        _save(worker, model, step, kind="epoch", branch="main-s-1-t1")
    assert worker.steps()["main-s-1-t1"] == [40]
    worker.promote("main", 10, "boundary")  # not its file: no rename
    kept = trainer.get("main", 10)
    assert kept is not None and kept.kind == "epoch" and os.path.exists(kept.path)


def test_a_starting_trainer_sweeps_only_the_temporary_files_of_writers_that_are_gone(tmp_path: Any) -> None:
    import subprocess
    import sys

    from tb_retune.trainer.checkpoint_index import temporary_prefix

    folder = str(tmp_path / "checkpoints")
    branch = os.path.join(folder, "main-s-1-t2")
    os.makedirs(branch)
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True,
                          text=True, check=True)
    mine = temporary_prefix()
    gone = mine.replace(f"-{os.getpid()}-", f"-{int(dead.stdout)}-")
    files = {"live": mine + "a.ckpt",  # a write in progress (here: this process's, as a worker's would be)
             "dead": gone + "b.ckpt",  # its writer died mid-write
             "old": ".tmp-abc.npz",  # no writer named (an older version's)
             "foreign": ".tmp-otherhost-42-c.ckpt"}  # another machine's worker: kept (for a day)
    for name in files.values():
        with open(os.path.join(branch, name), "wb") as f:
            f.write(b"x")
    CheckpointStore(folder)  # a trainer starting (again) on the shared folder
    left = set(os.listdir(branch))
    assert left == {files["live"], files["foreign"]}, left
