"""``POST /data/plugin/retune/search``: the tab's "Search from here" writes a
search request through the same checked, locked writer as the CLI."""

from __future__ import annotations

import json
import os
from typing import Any

import pytest

from tb_retune.testing.synthetic import make_experiment
from tests.plugin_support import App, strict_json

REQUEST = {"space": {"learning_rate": {"low": 1e-4, "high": 0.3, "log": True}}, "trials": 4,
           "steps_per_trial": 50, "objective": {"metric": "loss"}}


@pytest.fixture
def app(tmp_path: Any) -> App:
    make_experiment(str(tmp_path / "exp"), branches=1, nodes=2)
    status_path = str(tmp_path / "exp" / "retune-status.json")
    with open(status_path) as f:
        status = json.load(f)
    status["metrics"] = ["loss", "accuracy"]
    status["searches"] = {"s-old": {"state": "done", "trials": []}}
    with open(status_path, "w") as f:
        json.dump(status, f)
    return App(str(tmp_path))


def control_of(app: App) -> Any:
    path = os.path.join(app.logdir, "exp", "retune.json")
    if not os.path.exists(path):
        return None
    with open(path) as f:
        return json.load(f)


def test_a_search_is_written_with_a_new_id(app: App) -> None:
    step = strict_json(app.get("status?experiment=exp").data)["checkpoints"]["main"][0]
    body = {"experiment": "exp", "search": {**REQUEST, "from": {"branch": "main", "step": step}}}
    response = app.post("search", body)
    assert response.status_code == 200, response.data
    reply = strict_json(response.data)
    assert reply["id"].startswith("s-") and reply["written"]["search"]["id"] == reply["id"]
    assert control_of(app)["search"] == {**body["search"], "id": reply["id"]}
    again = strict_json(app.post("search", body).data)
    assert again["id"] != reply["id"]  # each press of the button is a new search
    assert control_of(app)["search"]["id"] == again["id"]


@pytest.mark.parametrize(("search", "needle"), [
    ({**REQUEST, "sampler": "bayes"}, "search.sampler: unknown sampler"),
    ({**REQUEST, "objective": {"metric": "val_loss"}}, 'search.objective.metric: fit does not log "val_loss"'),
    ({**REQUEST, "id": "s-old"}, "search.id: 's-old' already names a search"),
    ({**REQUEST, "from": {"branch": "main", "step": 7}}, "search.from.step"),
    ({**REQUEST, "space": {"lerning_rate": {"low": 0.1, "high": 0.2}}}, "search.space.lerning_rate"),
    ([1], "search: must be an object"),
])
def test_a_bad_search_is_refused_and_writes_nothing(app: App, search: Any, needle: str) -> None:
    response = app.post("search", {"experiment": "exp", "search": search})
    assert response.status_code == 400, response.data
    assert needle in strict_json(response.data)["error"]
    assert control_of(app) is None


def test_unknown_keys_are_refused(app: App) -> None:
    response = app.post("search", {"experiment": "exp", "search": REQUEST, "trials": 3})
    assert response.status_code == 400 and "trials: unknown key" in strict_json(response.data)["error"]
