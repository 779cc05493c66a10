"""What `tb-retune worker` and the training command it runs hand each other:
the spec in the environment and the report file (no TensorFlow, no Optuna)."""

from __future__ import annotations

import os
from typing import Any

import pytest

from tb_retune.experiment import worker as w


def test_the_spec_goes_through_the_environment() -> None:
    spec = w.WorkerSpec(experiment="/x/exp", storage=None, search="s-1", folder="/x/exp/searches/workers/h-1",
                        report="/x/r.json", wait_until=123.5)
    assert w.WorkerSpec.from_env({w.ENV_VAR: spec.to_env()}) == spec
    assert w.WorkerSpec.from_env({}) is None


def test_a_spec_that_is_not_ours_says_what_to_do() -> None:
    with pytest.raises(ValueError, match="unset it to train normally"):
        w.WorkerSpec.from_env({w.ENV_VAR: "{not json"})
    with pytest.raises(ValueError, match="tb-retune worker"):
        w.WorkerSpec.from_env({w.ENV_VAR: '{"experiment": "/x"}'})


def test_a_second_fit_of_the_same_process_adds_to_the_report(tmp_path: Any) -> None:
    path = str(tmp_path / "report.json")
    w.WorkerReport(search="s-1", reason=w.REASON_DONE, trials=(1, 4)).write(path)
    # The script calls fit again: the search is over by then, and that fit runs nothing.
    w.WorkerReport(search=None, reason=w.REASON_NO_SEARCH).write(path)
    report = w.WorkerReport.read(path)
    assert report is not None
    assert (report.search, report.reason, report.trials, report.pid) == ("s-1", w.REASON_DONE, (1, 4), os.getpid())
    # Another process's report (an earlier run of the command) is replaced, not added to.
    w.WorkerReport(search="s-1", reason=w.REASON_DONE, trials=(7,), pid=os.getpid() + 1).write(path)
    report = w.WorkerReport.read(path)
    assert report is not None and report.trials == (7,)
    assert w.WorkerReport.read(str(tmp_path / "missing.json")) is None
