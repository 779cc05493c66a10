"""Every branch is a session of TensorBoard's own HParams dashboard.

The pure builders read back with the hparams plugin's own parsers; a real
``tensorboard`` process serves ``/data/plugin/hparams/experiment`` and
``/session_groups`` over experiments written with the trainer's writers; and a
real ``fit`` (with a change and a restore) writes the sessions itself.
"""

from __future__ import annotations

import json
import os
import urllib.parse
from collections.abc import Iterator
from typing import Any

import pytest

from tb_retune.trainer import hparams as hp

try:  # tests/ as a package
    from tests.browser import support
except ImportError:  # tests/ on sys.path
    from browser import support  # type: ignore[no-redef]


def _content(summary: Any) -> bytes:
    (value,) = summary.value
    assert value.metadata.plugin_data.plugin_name == "hparams"
    return value.metadata.plugin_data.content


# ---------------------------------------------------------------- pure builders


def test_session_pb_holds_the_values_a_session_can_hold() -> None:
    from tensorboard.plugins.hparams import metadata

    pb = hp.session_pb("digits/main-s1", {"learning_rate": 0.003, "momentum": 0.9, "nesterov": True,
                                          "weight_decay": None, "name": "SGD", "steps": 4, "bad": float("nan")},
                       start_time_secs=12.0)
    assert pb.value[0].tag == hp.SESSION_START_TAG
    info = metadata.parse_session_start_info_plugin_data(_content(pb))
    assert info.group_name == "digits/main-s1"
    assert info.start_time_secs == 12.0
    assert info.hparams["learning_rate"].number_value == pytest.approx(0.003)
    assert info.hparams["steps"].number_value == 4
    assert info.hparams["nesterov"].bool_value is True
    assert info.hparams["name"].string_value == "SGD"
    # Turned off (None) and non-finite values are left out.
    assert "weight_decay" not in info.hparams and "bad" not in info.hparams


def test_experiment_pb_lists_hyperparameters_by_type_and_metrics_in_order() -> None:
    from tensorboard.plugins.hparams import api_pb2, metadata

    pb = hp.experiment_pb({"learning_rate": 0.1, "nesterov": False, "weight_decay": None},
                          ["val_accuracy", "accuracy", "val_loss", "loss"], time_created_secs=5.0)
    assert pb.value[0].tag == hp.EXPERIMENT_TAG
    exp = metadata.parse_experiment_plugin_data(_content(pb))
    assert [(i.name, i.type) for i in exp.hparam_infos] == [
        ("learning_rate", api_pb2.DATA_TYPE_FLOAT64), ("nesterov", api_pb2.DATA_TYPE_BOOL)]
    assert [m.name.tag for m in exp.metric_infos] == ["loss", "val_loss", "accuracy", "val_accuracy"]
    assert [m.name.group for m in exp.metric_infos] == ["", "", "", ""]
    assert exp.metric_infos[1].dataset_type == api_pb2.DATASET_VALIDATION
    assert exp.metric_infos[0].dataset_type == api_pb2.DATASET_TRAINING


def test_recorder_writes_each_branch_once_and_only_with_values() -> None:
    written: list[tuple[str, int]] = []

    class Writer:
        def summary(self, pb: Any, step: int) -> None:
            written.append((pb.value[0].tag, step))

    rec = hp.HParamsRecorder("/logs/digits")
    rec.saw({"loss": 0.5, "val_loss": 0.6, "accuracy": 0.7, "note": "text", "flag": True})
    assert rec.metrics == ["loss", "val_loss", "accuracy"]
    assert rec.trial_id("main") == "digits/main"
    assert rec.branch_ends(None, "main", {"learning_rate": 0.1}, 0) is False
    assert rec.branch_ends(Writer(), "main", {}, 0) is False
    assert rec.branch_ends(Writer(), "main", {"learning_rate": 0.1}, 40) is True
    assert rec.branch_ends(Writer(), "main", {"learning_rate": 0.2}, 80) is False
    assert written == [(hp.EXPERIMENT_TAG, 40), (hp.SESSION_START_TAG, 40), (hp.SESSION_END_TAG, 40)]


# ------------------------------------------------- a real tensorboard process


def _hparams(base: str, route: str, request: dict[str, Any]) -> Any:
    query = urllib.parse.urlencode({"request": json.dumps(request)})
    return support.get_json(f"{base}/data/plugin/hparams/{route}?{query}", timeout=60)


SESSION_GROUPS = {
    "experimentName": "",
    "allowedStatuses": ["STATUS_UNKNOWN", "STATUS_SUCCESS", "STATUS_FAILURE", "STATUS_RUNNING"],
    "colParams": [],
    "startIndex": 0,
    "sliceSize": 1000,
}


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, str]]:
    logdir = str(tmp_path_factory.mktemp("hparams") / "logs")
    tb = support.TensorBoard(logdir).start()
    try:
        from tb_retune.testing.synthetic import make_experiment

        # Finished: every branch has ended, so every branch is a session.
        make_experiment(os.path.join(logdir, "digits"), branches=4, nodes=12, steps_per_node=100, seed=1,
                        alive=False, hparams=True)
        yield tb.wait_ready(("digits",)), logdir
    finally:
        tb.stop()


def test_tensorboard_hparams_lists_every_branch_with_its_latest_values(served: tuple[str, str]) -> None:
    import time

    base, _ = served
    tree = support.get_json(f"{base}/data/plugin/retune/tree?experiment=digits")
    metrics = support.get_json(f"{base}/data/plugin/retune/metrics?experiment=digits")["metrics"]
    nodes = {n["id"]: dict(n, metrics=metrics[n["id"]]) for n in tree["nodes"]}
    deadline = time.monotonic() + 90
    while True:
        groups = _hparams(base, "session_groups", SESSION_GROUPS).get("sessionGroups", [])
        if len(groups) == len(tree["branches"]) or time.monotonic() > deadline:
            break
        time.sleep(1)
    experiment = _hparams(base, "experiment", {"experimentName": ""})
    names = sorted(i["name"] for i in experiment["hparamInfos"])
    assert names == ["learning_rate", "momentum", "nesterov"]  # weight_decay is None: left out
    metrics = [m["name"]["tag"] for m in experiment["metricInfos"]]
    assert metrics == ["loss", "val_loss", "accuracy", "val_accuracy"]

    by_name = {g["name"]: g for g in groups}
    assert sorted(by_name) == sorted(f"digits/{b['name']}" for b in tree["branches"])
    for b in tree["branches"]:
        group = by_name[f"digits/{b['name']}"]
        latest = nodes[b["nodes"][-1]]["hyperparameters"]
        assert group["hparams"]["learning_rate"] == pytest.approx(latest["learning_rate"])
        assert group["hparams"]["momentum"] == pytest.approx(latest["momentum"])
        assert group["hparams"]["nesterov"] is latest["nesterov"]
        (session,) = group["sessions"]
        assert session["name"] == b["run"]
        assert session["status"] == "STATUS_SUCCESS"
        values = {m["name"]["tag"]: m["value"] for m in session["metricValues"]}
        assert set(values) == set(metrics)
        assert values["val_loss"] == pytest.approx(nodes[b["nodes"][-1]]["metrics"]["val_loss"]["value"], rel=1e-5)


# ------------------------------------------------------------------ a real fit


def _session(run_dir: str) -> tuple[Any, Any]:
    from tensorboard.backend.event_processing import plugin_event_accumulator as pea
    from tensorboard.plugins.hparams import metadata

    acc = pea.EventAccumulator(run_dir)
    acc.Reload()
    start = metadata.parse_session_start_info_plugin_data(
        acc.SummaryMetadata(hp.SESSION_START_TAG).plugin_data.content)
    exp = metadata.parse_experiment_plugin_data(acc.SummaryMetadata(hp.EXPERIMENT_TAG).plugin_data.content)
    return start, exp


def test_a_real_fit_writes_the_session_of_each_branch_it_ends(tmp_path: Any) -> None:
    import tb_retune
    from tb_retune.experiment import atomic as _atomic
    from tests.conftest import read_status, tiny_data, tiny_model

    folder = str(tmp_path / "exp")
    os.makedirs(folder)
    control = os.path.join(folder, "retune.json")
    x, y = tiny_data(128)
    # First fit: a change at step 20 makes main's latest node lr = 0.05.
    _atomic.atomic_write_json(control, {"schedule": [{"at_step": 20, "hyperparameters": {"learning_rate": 0.05}}]})
    model = tiny_model()
    model.fit(x, y, batch_size=8, epochs=2, verbose=0, validation_split=0.25,
              callbacks=[tb_retune.RetuneCallback(folder, verbose=False)])
    start, exp = _session(os.path.join(folder, "main"))
    assert start.group_name == "exp/main"
    assert start.hparams["learning_rate"].number_value == pytest.approx(0.05)
    assert start.hparams["momentum"].number_value == pytest.approx(0.9)
    assert {m.name.tag for m in exp.metric_infos} >= {"loss", "val_loss", "accuracy", "val_accuracy"}
    assert "learning_rate" in {i.name for i in exp.hparam_infos}

    # Second fit: a restore of main at its first checkpoint, with another lr: a new branch, its own session.
    step = min(read_status(folder)["checkpoints"]["main"])
    _atomic.atomic_write_json(control, {"restore": {"id": "r-hp", "branch": "main", "step": step,
                                                    "hyperparameters": {"learning_rate": 0.2}}})
    model = tiny_model()
    model.fit(x, y, batch_size=8, epochs=3, verbose=0, validation_split=0.25,
              callbacks=[tb_retune.RetuneCallback(folder, verbose=False)])
    branch = read_status(folder)["branch"]
    assert branch != "main"
    start, _ = _session(os.path.join(folder, branch))
    assert start.group_name == f"exp/{branch}"
    assert start.hparams["learning_rate"].number_value == pytest.approx(0.2)
    # main's session is still the one it ended with.
    assert _session(os.path.join(folder, "main"))[0].hparams["learning_rate"].number_value == pytest.approx(0.05)
