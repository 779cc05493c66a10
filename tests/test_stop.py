"""Stopping a training: the plugin's ``POST stop`` route, ``tb-retune stop`` and a real ``fit`` stopped by them."""

from __future__ import annotations

import json
import os
from typing import Any

import pytest

from tb_retune.cli import main as cli_main
from tests.conftest import live_fit, read_status, wait_for
from tests.plugin_support import App, make_logdir, strict_json


@pytest.fixture(scope="module")
def app(tmp_path_factory: pytest.TempPathFactory) -> App:
    return App(make_logdir(str(tmp_path_factory.mktemp("logdir"))))


def _control(folder: str) -> dict[str, Any]:
    with open(os.path.join(folder, "retune.json"), encoding="utf-8") as f:
        return json.load(f)


def test_stop_route_writes_stop_merged_into_the_control_file(app: App) -> None:
    folder = os.path.join(app.logdir, "digits")
    r = app.post("hyperparameters", {"experiment": "digits", "hyperparameters": {"learning_rate": 0.0003}})
    assert r.status_code == 200, r.data
    r = app.post("stop", {"experiment": "digits"})
    assert r.status_code == 200, r.data
    body = strict_json(r.data)
    assert body["written"] == {"stop": True}
    assert body["control"]["stop"] is True
    control = _control(folder)
    assert control["stop"] is True and control["hyperparameters"] == {"learning_rate": 0.0003}


@pytest.mark.parametrize(
    ("body", "code", "says"),
    [
        ({}, 400, "experiment: missing"),
        ({"experiment": "digits", "now": True}, 400, "now: unknown key"),
        ({"experiment": "nope"}, 404, "nope"),
        ({"experiment": "../x"}, 400, ""),
    ],
)
def test_stop_route_refuses_bad_requests(app: App, body: dict[str, Any], code: int, says: str) -> None:
    r = app.post("stop", body)
    assert r.status_code == code, r.data
    assert says in strict_json(r.data)["error"]


def test_stop_route_needs_an_experiment_a_trainer_ran_in(app: App, tmp_path: Any) -> None:
    folder = os.path.join(app.logdir, "digits")
    os.replace(os.path.join(folder, "retune-status.json"), str(tmp_path / "status.json"))
    try:
        r = app.post("stop", {"experiment": "digits"})
        assert r.status_code == 400 and "nothing to stop" in strict_json(r.data)["error"]
    finally:
        os.replace(str(tmp_path / "status.json"), os.path.join(folder, "retune-status.json"))


def test_cli_stop_ends_a_real_fit(tmp_path: Any, capsys: pytest.CaptureFixture[str]) -> None:
    folder = str(tmp_path / "exp")
    with live_fit(folder) as fit:
        assert cli_main(["stop", folder, "--wait", "--timeout", "60"]) == 0
        fit.join_ok(timeout=60)
    out = capsys.readouterr().out
    assert "stopped at step" in out
    assert _control(folder)["stop"] is True
    assert wait_for(lambda: read_status(folder).get("state") == "stopped", what="state stopped")
    # Without --wait it only writes (and says so).
    assert cli_main(["stop", folder]) == 0
    assert "the trainer ends fit after its current batch" in capsys.readouterr().out
