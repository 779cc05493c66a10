"""The control file's schema: every bad input gets one clear error."""

from __future__ import annotations

import json

import pytest

from tb_retune._errors import ControlError
from tb_retune.experiment.control import describe_change, merge_control, parse_control
from tb_retune.reader.tree import short_number

KNOWN = {"learning_rate": 0.01, "momentum": 0.9, "nesterov": False, "weight_decay": None,
         "clipnorm": None, "clipvalue": None, "global_clipnorm": None, "ema_momentum": 0.99}
CKPTS = {"main": [0, 100, 200]}


def parse(obj: object, **kw: object) -> object:
    data = obj if isinstance(obj, bytes) else json.dumps(obj).encode()
    return parse_control(data, kw.get("known", KNOWN), kw.get("checkpoints", CKPTS))  # type: ignore[arg-type]


def test_valid_revision() -> None:
    rev = parse({"hyperparameters": {"learning_rate": 3e-4, "momentum": 0.5, "nesterov": True},
                 "restore": {"id": "r-1", "branch": "main", "step": 100, "hyperparameters": {"learning_rate": 1e-4}},
                 "schedule": [{"at_step": 500, "hyperparameters": {"learning_rate": 1e-5}},
                              {"at_step": 300, "hyperparameters": {"momentum": 0.0}}],
                 "stop": False})
    assert rev.hyperparameters == {"learning_rate": 3e-4, "momentum": 0.5, "nesterov": True}
    assert rev.restore is not None and rev.restore.step == 100
    assert [e.at_step for e in rev.schedule] == [300, 500]


@pytest.mark.parametrize(
    "data, needle",
    [
        (b"{not json", "invalid JSON at line 1"),
        (b'{"hyperparameters": {"learning_rate": 0.1', "invalid JSON"),  # half-written
        (b"", "the file is empty"),
        (b"   \n", "the file is empty"),
        (b"\xff\xfe\x00garbage\x81", "not UTF-8"),
        (b"[1, 2]", "must be a JSON object"),
        (b'"text"', "must be a JSON object"),
        (b'{"hyperparameters": {"learning_rate": NaN}}', "NaN is not valid JSON"),
        (b'{"hyperparameters": {"learning_rate": Infinity}}', "Infinity is not valid JSON"),
        (b'{"hyperparamters": {}}', "hyperparamters: unknown key; allowed keys are hyperparameters, restore, schedule, stop"),
        (b'{"hyperparameters": {"learning_rat": 0.1}}', "hyperparameters.learning_rat: unknown hyperparameter \"learning_rat\"; this optimizer has:"),
        (b'{"hyperparameters": {"learning_rate": "0.1"}}', 'hyperparameters.learning_rate: must be a number, got "0.1"'),
        (b'{"hyperparameters": {"learning_rate": -1}}', "hyperparameters.learning_rate: must be > 0, got -1"),
        (b'{"hyperparameters": {"learning_rate": 0}}', "must be > 0, got 0"),
        (b'{"hyperparameters": {"learning_rate": 1e999}}', "must be a finite number"),
        (b'{"hyperparameters": {"momentum": 1.5}}', "hyperparameters.momentum: must be >= 0 and <= 1, got 1.5"),
        (b'{"hyperparameters": {"nesterov": 1}}', "hyperparameters.nesterov: must be true or false, got 1"),
        (b'{"hyperparameters": {"learning_rate": true}}', "must be a number, got true"),
        (b'{"hyperparameters": {"weight_decay": -0.1}}', "must be >= 0 (or null to turn it off)"),
        (b'{"hyperparameters": {"clipnorm": 1.0, "clipvalue": 0.5}}', "only one of clipnorm, clipvalue and global_clipnorm"),
        (b'{"hyperparameters": {"use_ema": true}}', "use_ema is fixed when the optimizer is built"),
        (b'{"hyperparameters": [1]}', "hyperparameters: must be an object"),
        (b'{"restore": {"branch": "main", "step": 100}}', "restore.id: missing"),
        (b'{"restore": {"id": "a", "branch": "main", "step": 150}}', "no checkpoint at step 150; restorable steps: 0, 100, 200"),
        (b'{"restore": {"id": "a", "branch": "nope", "step": 100}}', 'restore.branch: no branch "nope"'),
        (b'{"restore": {"id": "a", "branch": "main", "step": -5}}', "restore.step: must be a step number"),
        (b'{"restore": {"id": "a", "branch": "main", "step": 1.5}}', "restore.step: must be a step number"),
        (b'{"schedule": {"at_step": 1}}', "schedule: must be a list"),
        (b'{"schedule": [{"hyperparameters": {}}]}', "schedule[0].at_step: missing"),
        (b'{"schedule": [{"at_step": 5, "hyperparameters": {"momentum": -1}}]}', "schedule[0].hyperparameters.momentum: must be >= 0"),
        (b'{"stop": "yes"}', 'stop: must be true or false, got "yes"'),
    ],
)
def test_bad_revisions_name_key_value_and_rule(data: bytes, needle: str) -> None:
    with pytest.raises(ControlError) as err:
        parse(data)
    assert needle in str(err.value)


def test_huge_file_is_refused_unread() -> None:
    data = json.dumps({"hyperparameters": {"learning_rate": 0.1}, "x": "a" * 300_000}).encode()
    with pytest.raises(ControlError, match="larger than the limit"):
        parse(data)


def test_values_only_when_optimizer_unknown() -> None:
    rev = parse_control(b'{"hyperparameters": {"anything": 0.5}}', None, None)
    assert rev.hyperparameters == {"anything": 0.5}
    with pytest.raises(ControlError):
        parse_control(b'{"hyperparameters": {"learning_rate": -1}}', None, None)


def test_merge_and_describe() -> None:
    merged = merge_control({"hyperparameters": {"learning_rate": 0.1, "momentum": 0.9}, "stop": False},
                           {"hyperparameters": {"learning_rate": 0.01}, "restore": {"id": "x"}})
    assert merged == {"hyperparameters": {"learning_rate": 0.01, "momentum": 0.9}, "stop": False, "restore": {"id": "x"}}
    assert describe_change({"learning_rate": 0.001}, {"learning_rate": 0.0003}) == "learning_rate 0.001 -> 0.0003"


@pytest.mark.parametrize("value, text", [(0.001, "1e-3"), (0.0003, "3e-4"), (0.9, "0.9"), (0.0, "0"), (3, "3"), (2.5e-5, "2.5e-5")])
def test_short_numbers(value: float, text: str) -> None:
    assert short_number(value) == text


def test_node_records_round_trip_and_newer_versions_are_refused() -> None:
    from tb_retune.experiment import metadata

    record = {"version": 1, "id": "main-2", "branch": "main", "step": 1200, "parent": "main-1"}
    summary = metadata.node_pb(record)
    assert summary.value[0].tag == "retune/node/main-2"
    assert metadata.decode_node(summary.value[0].tensor) == record
    with pytest.raises(ValueError, match="newer than this tb-retune"):
        metadata.decode_node_bytes(json.dumps(dict(record, version=99)))
    with pytest.raises(ValueError, match="without an id"):
        metadata.decode_node_bytes(b'{"id": "x"}')
