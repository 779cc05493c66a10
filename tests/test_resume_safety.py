"""A resume never loses logged data and never trusts a bad checkpoint.

Issue 14 item 2 (a damaged latest checkpoint must not stop every start, nor
load garbage, nor delete the branch's logged points) and issue 21 (a resume
dropped the last completed epoch's scalars). Real ``fit`` with
RetuneCallback, real event files read back by TensorBoard's own loaders.
"""

from __future__ import annotations

import os
import re
from typing import Any

import pytest

from tests.conftest import read_status, tiny_data, tiny_model

STEPS_PER_EPOCH = 4  # 64 samples, batch 16


def _fit(logdir: str, epochs: int, capsys: Any) -> str:
    import tb_retune

    model = tiny_model()
    x, y = tiny_data(64)
    model.fit(x, y, batch_size=16, epochs=epochs, verbose=0, shuffle=False,
              callbacks=[tb_retune.RetuneCallback(logdir, verbose=True)])
    return str(capsys.readouterr().out)


def _served_steps(logdir: str, run: str, tag: str) -> list[int]:
    """The steps of ``tag`` as TensorBoard's data provider serves them (orphan purging on)."""
    from tensorboard import context
    from tensorboard.backend.event_processing import data_provider, plugin_event_multiplexer

    mux = plugin_event_multiplexer.EventMultiplexer(tensor_size_guidance={"scalars": 0})
    mux.AddRunsFromDirectory(logdir)
    mux.Reload()
    provider = data_provider.MultiplexerDataProvider(mux, logdir)
    scalars = provider.read_scalars(context.RequestContext(), experiment_id="", plugin_name="scalars",
                                    downsample=10_000, run_tag_filter=None)
    return [d.step for d in scalars[run][tag]]


def _file_steps(path: str, tag: str) -> list[int]:
    from tensorboard.backend.event_processing.event_file_loader import EventFileLoader

    return [e.step for e in EventFileLoader(path).Load() if any(v.tag == tag for v in e.summary.value)]


def _run_files(folder: str) -> list[str]:
    return sorted(os.path.join(folder, n) for n in os.listdir(folder) if "tfevents" in n)


def test_truncate_run_keeps_the_checkpoint_step_and_sets_the_rest_aside(tmp_path: Any) -> None:
    from tb_retune.trainer.summaries import BranchWriter, truncate_run

    run = str(tmp_path / "exp" / "main")
    writer = BranchWriter(run, start_step=0)
    for step in range(0, 41, 8):
        writer.scalars(step, {"loss": 1.0 / (step + 1)})
    writer.close()
    assert truncate_run(run, 16) == 3
    (events,) = _run_files(run)
    assert _file_steps(events, "loss") == [0, 8, 16]  # the point at the checkpoint's step stays
    # What was cut is kept beside it, readable, and not read by TensorBoard.
    aside = [n for n in os.listdir(run) if n.startswith(".retune-dropped-after-0000000016.")]
    assert len(aside) == 1 and "tfevents" not in aside[0]
    assert _file_steps(os.path.join(run, aside[0]), "loss") == [24, 32, 40]
    assert _served_steps(str(tmp_path / "exp"), "main", "loss") == [0, 8, 16]
    assert truncate_run(run, 16) == 0  # nothing more to cut
    with pytest.raises(ValueError, match=r"step must be an integer >= 0 \(a checkpoint's step\), got -1"):
        truncate_run(run, -1)
    assert _file_steps(events, "loss") == [0, 8, 16]


def test_a_resume_keeps_the_last_completed_epochs_scalars(tmp_path: Any, capsys: Any) -> None:
    """Issue 21: every resume dropped the scalars of the epoch its checkpoint closes."""
    logdir = str(tmp_path / "exp")
    _fit(logdir, 2, capsys)
    out = _fit(logdir, 3, capsys)  # the script run again: resumes at the end of epoch 2
    assert f"retune: resumed branch main at step {2 * STEPS_PER_EPOCH} " in out, out
    steps = [STEPS_PER_EPOCH, 2 * STEPS_PER_EPOCH, 3 * STEPS_PER_EPOCH]
    assert _served_steps(logdir, "main", "epoch_loss" if _has(logdir, "epoch_loss") else "loss") == steps
    assert read_status(logdir)["state"] == "finished"


def _has(logdir: str, tag: str) -> bool:
    return any(_file_steps(p, tag) for p in _run_files(os.path.join(logdir, "main")))


def _flip_a_bit_in_the_data(path: str) -> None:
    from tb_retune.trainer import checkpoint_format as fmt

    with open(path, "r+b") as f:
        header = fmt.read_header(f, path)
        biggest = max(header.entries, key=lambda e: e.nbytes)
        at = header.start + biggest.offset + biggest.nbytes // 2
        f.seek(at)
        byte = f.read(1)[0]
        f.seek(at)
        f.write(bytes([byte ^ 0x01]))


@pytest.mark.parametrize("damage", ["one bit flipped", "empty", "cut short"])
def test_a_damaged_latest_checkpoint_falls_back_to_the_previous_good_one(tmp_path: Any, capsys: Any,
                                                                         damage: str) -> None:
    from tb_retune.trainer.checkpoints import CheckpointStore

    logdir = str(tmp_path / "exp")
    _fit(logdir, 3, capsys)
    store = CheckpointStore(os.path.join(logdir, "checkpoints"))
    latest = store.latest("main")
    assert latest is not None and latest.step == 3 * STEPS_PER_EPOCH
    if damage == "one bit flipped":
        _flip_a_bit_in_the_data(latest.path)
    elif damage == "empty":
        open(latest.path, "wb").close()
    else:
        with open(latest.path, "r+b") as f:
            f.truncate(os.path.getsize(latest.path) - 100)

    out = _fit(logdir, 4, capsys)  # starts, instead of failing on the bad file
    resumed = re.findall(r"retune: resumed branch main at step (-?\d+)", out)
    assert resumed == [str(2 * STEPS_PER_EPOCH)], out
    status = read_status(logdir)
    assert status["state"] == "finished" and status["step"] == 4 * STEPS_PER_EPOCH
    skipped = [e["message"] for e in status["errors"] if e["message"].startswith("resume: passed over a bad checkpoint")]
    assert len(skipped) == 1 and latest.path in skipped[0], status["errors"]
    assert os.path.exists(latest.path + ".bad")  # set aside, not deleted
    # Every epoch logged once, none lost: epoch 3 trained again from epoch 2's checkpoint.
    tag = "epoch_loss" if _has(logdir, "epoch_loss") else "loss"
    assert _served_steps(logdir, "main", tag) == [STEPS_PER_EPOCH * e for e in (1, 2, 3, 4)]
    # The old run's point at epoch 3 was cut by the resume, and kept aside.
    run = os.path.join(logdir, "main")
    aside = [os.path.join(run, n) for n in os.listdir(run) if n.startswith(".retune-dropped-after-")]
    assert [s for p in aside for s in _file_steps(p, tag)] == [3 * STEPS_PER_EPOCH]


@pytest.mark.parametrize("background", [False, True], ids=["inline writer", "background writer"])
def test_a_pending_restore_to_the_last_periodic_checkpoint_is_carried_out(tmp_path: Any, background: bool) -> None:
    """Issue 13 bug 4: the restore keeps that checkpoint (a promotion renames its file) and loads it."""
    import json

    import tb_retune

    logdir = str(tmp_path / "exp")
    x, y = tiny_data(64)

    def fit(epochs: int) -> None:
        model = tiny_model()
        model.fit(x, y, batch_size=16, epochs=epochs, verbose=0, shuffle=False,
                  callbacks=[tb_retune.RetuneCallback(logdir, verbose=False, background_checkpoints=background)])

    fit(1)  # its last checkpoint is the epoch's, at step 4: a plain kind, renamed when kept
    last = 1 * STEPS_PER_EPOCH
    assert read_status(logdir)["checkpoints"]["main"][-1] == last
    with open(os.path.join(logdir, "retune.json"), "w") as f:
        json.dump({"restore": {"id": "r-last", "branch": "main", "step": last}}, f)
    fit(2)
    status = read_status(logdir)
    assert status["errors"] == [], status["errors"]
    assert status["restores_done"] == ["r-last"] and status["branch"] == f"main-s{last}"
    assert status["state"] == "finished" and status["step"] == 2 * STEPS_PER_EPOCH
    assert last in status["checkpoints"]["main"]  # kept, as a boundary now
    assert any(n.startswith(f"step-{last:010d}--") and n.endswith("--boundary.ckpt")
               for n in os.listdir(os.path.join(logdir, "checkpoints", "main")))
