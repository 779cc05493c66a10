"""The trainer state file is written from one encoding of the state, the same bytes
as the copy (``to_dict``) gives, and refused alike when it cannot be JSON."""

from __future__ import annotations

import json
import math
import os
from typing import Any

import pytest

from tb_retune.experiment import atomic
from tb_retune.trainer.state import STATE_FILENAME, TrainerState


def _filled(folder: str) -> TrainerState:
    state = TrainerState(folder)
    state.branch, state.node, state.node_start, state.epoch = "main-s1", "main-s1-2", 40, 3
    state.hyperparameters = {"learning_rate": 0.001, "nesterov": True, "weight_decay": None}
    state.node_seq = {"main": 3, "main-s1": 2}
    state.restores_done = ["r1", "r2"]
    state.branches = {"main-s1": {"parent_node": "main-2", "start_step": 20, "steps": (20, 40)}}
    # Values JSON has no type for become text, as the copy made them.
    state.node_records = {"main-s1-2": {"odd": {1, 2}, 7: "an int key", "when": 1.5e-7}}
    state.applied = [{"step": 40, "changes": {"learning_rate": [0.002, 0.001]}}]
    return state


def test_the_saved_bytes_are_the_copy_encoded_once(tmp_path: Any) -> None:
    state = _filled(str(tmp_path))
    want = atomic.dumps(state.to_dict(), indent=None)
    assert state.to_bytes() == want
    state.save(durable=False)
    with open(os.path.join(str(tmp_path), STATE_FILENAME), "rb") as f:
        assert f.read() == want
    assert json.loads(want)["node_records"]["main-s1-2"]["7"] == "an int key"
    # The status thread's save: nothing written again while the state is unchanged.
    os.remove(os.path.join(str(tmp_path), STATE_FILENAME))
    public = state.save_for_status()
    assert public["branch"] == "main-s1"
    assert not os.path.exists(os.path.join(str(tmp_path), STATE_FILENAME))
    state.epoch = 4
    state.save_for_status()
    with open(os.path.join(str(tmp_path), STATE_FILENAME), "rb") as f:
        assert json.loads(f.read())["epoch"] == 4


def test_a_state_that_is_not_json_is_refused_before_anything_is_written(tmp_path: Any) -> None:
    state = _filled(str(tmp_path))
    state.hyperparameters["learning_rate"] = math.nan
    with pytest.raises(ValueError):
        atomic.dumps(state.to_dict(), indent=None)
    with pytest.raises(ValueError):
        state.save(durable=False)
    assert not os.path.exists(os.path.join(str(tmp_path), STATE_FILENAME))
