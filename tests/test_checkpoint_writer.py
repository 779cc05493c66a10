"""The checkpoint writer's last job (``finish``): after everything submitted,
without the caller waiting, and waited for by the interpreter at exit."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
import threading
from typing import Any

import pytest

from tb_retune.trainer.checkpoint_writer import BackgroundWriter, InlineWriter
from tb_retune.trainer.checkpoints import CheckpointStore


def _writer(folder: str, errors: list[str]) -> BackgroundWriter:
    return BackgroundWriter(CheckpointStore(folder), on_written=lambda info: None, on_error=errors.append)


def test_finish_runs_its_job_after_the_others_and_the_caller_does_not_wait(tmp_path: Any) -> None:
    errors: list[str] = []
    writer = _writer(str(tmp_path), errors)
    gate, order = threading.Event(), []
    writer.run(lambda: (gate.wait(60), order.append("earlier")), "an earlier job")
    writer.finish(lambda: order.append("last"), "the last job")
    assert order == []  # finish returned while the earlier job still waits
    gate.set()
    writer._thread.join(60)
    assert not writer._thread.is_alive()
    assert order == ["earlier", "last"] and errors == []


def test_a_failing_last_job_is_reported_and_the_thread_still_ends(tmp_path: Any) -> None:
    errors: list[str] = []
    writer = _writer(str(tmp_path), errors)
    writer.finish(lambda: 1 / 0, "the last job")
    writer._thread.join(60)
    assert not writer._thread.is_alive()
    assert errors and errors[0].startswith("the last job: ZeroDivisionError")


@pytest.mark.parametrize("kind", ["BackgroundWriter", "InlineWriter"])
def test_the_interpreter_waits_for_the_last_job_at_exit(tmp_path: Any, kind: str) -> None:
    """The background writer's thread is a daemon (and the inline writer's
    last job runs on a thread of its own): the process must not end before
    the last job did."""
    marker = tmp_path / "done"
    script = textwrap.dedent(f"""
        import time
        from tb_retune.trainer.checkpoint_writer import {kind}
        from tb_retune.trainer.checkpoints import CheckpointStore

        def last():
            time.sleep(1.0)  # the main thread has long returned
            open({str(marker)!r}, "w").write("ok")

        w = {kind}(CheckpointStore({str(tmp_path)!r}), on_written=lambda info: None, on_error=print)
        w.finish(last, "the last job")
        print("main thread done", flush=True)
    """)
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=300,
                          env=dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3"))
    assert proc.returncode == 0, proc.stderr
    assert "main thread done" in proc.stdout
    assert marker.read_text() == "ok"


def test_an_inline_writer_runs_the_last_job_off_the_callers_thread(tmp_path: Any) -> None:
    writer = InlineWriter(CheckpointStore(str(tmp_path)), on_written=lambda info: None, on_error=print)
    ran_on: list[str] = []
    done = threading.Event()
    writer.finish(lambda: (ran_on.append(threading.current_thread().name), done.set()), "the last job")
    assert done.wait(60)
    assert ran_on == ["tb-retune-sync"]
