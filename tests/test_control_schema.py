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
        (b'{"hyperparameters": {"learning_rate": NaN}}', "hyperparameters.learning_rate: NaN is not valid JSON"),
        (b'{"hyperparameters": {"learning_rate": Infinity}}', "Infinity is not valid JSON"),
        (b'{"hyperparamters": {}}', "hyperparamters: unknown key; allowed keys are hyperparameters, restore, schedule, stop, notes, revision"),
        (b'{"hyperparameters": {"learning_rat": 0.1}}', "hyperparameters.learning_rat: unknown hyperparameter \"learning_rat\"; this optimizer has:"),
        (b'{"hyperparameters": {"learning_rate": "0.1"}}', 'hyperparameters.learning_rate: must be a number, got "0.1"'),
        (b'{"hyperparameters": {"learning_rate": -1}}', "hyperparameters.learning_rate: must be >= 0, got -1"),
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


# -- issue 13 bug 11, issue 14 items 3, 5, 7, 8: what json.loads alone lets through ----------


def test_learning_rate_zero_freezes_training_and_is_allowed() -> None:
    rev = parse({"hyperparameters": {"learning_rate": 0}})
    assert rev.hyperparameters == {"learning_rate": 0}
    rev = parse({"hyperparameters": {"learning_rate": 0.0}, "schedule": [{"at_step": 5, "hyperparameters": {"learning_rate": 0}}]})
    assert rev.schedule[0].hyperparameters == {"learning_rate": 0}


@pytest.mark.parametrize(
    "data, needle",
    [
        (b'{"hyperparameters": {"learning_rate": -1, "learning_rate": 0.0421}}',
         "hyperparameters.learning_rate: given twice in retune.json (-1 and 0.0421); keep one"),
        (b'{"hyperparameters": {"learning_rate": 0.1}, "hyperparameters": {"momentum": 0.5}}',
         'hyperparameters: given twice in retune.json ({"learning_rate": 0.1} and {"momentum": 0.5})'),
        (b'{"restore": {"id": "a", "id": "b", "branch": "main", "step": 100}}', "restore.id: given twice"),
        (b'{"schedule": [{"at_step": 5, "hyperparameters": {"momentum": 0.1, "momentum": 0.2}}]}',
         "schedule[0].hyperparameters.momentum: given twice"),
        (b'{"stop": false, "stop": true}', "stop: given twice"),
    ],
)
def test_duplicate_keys_are_refused_at_every_level(data: bytes, needle: str) -> None:
    with pytest.raises(ControlError) as err:
        parse(data)
    assert needle in str(err.value)


@pytest.mark.parametrize("digits", [400, 5000])
def test_huge_integers_are_refused_naming_the_key(digits: int) -> None:
    data = b'{"hyperparameters": {"learning_rate": ' + b"9" * digits + b"}}"
    with pytest.raises(ControlError) as err:
        parse(data)
    assert str(err.value).startswith(
        f"hyperparameters.learning_rate: an integer of {digits} digits is out of range (at most 20 digits)"
    ), err.value
    data = b'{"restore": {"id": "a", "branch": "main", "step": ' + b"1" * digits + b"}}"
    with pytest.raises(ControlError, match=r"^restore\.step: an integer of"):
        parse(data)


@pytest.mark.parametrize("opener", [b"[", b'{"a":'])
def test_deep_nesting_is_refused_before_parsing_naming_the_depth(opener: bytes) -> None:
    data = b'{"hyperparameters": ' + opener * 50_000
    with pytest.raises(ControlError) as err:
        parse(data)  # never a RecursionError
    assert "retune.json: nested deeper than 32 levels of arrays and objects (found at least 33)" in str(err.value)
    # Brackets inside strings are not nesting.
    rev = parse({"restore": {"id": "[" * 150, "branch": "main", "step": 100}})
    assert rev.restore is not None and rev.restore.id == "[" * 150


def test_every_message_is_bounded_and_keeps_the_key() -> None:
    huge = "k" * 200_000
    with pytest.raises(ControlError) as err:
        parse({huge: 1})
    message = str(err.value)
    assert len(message) <= 500 and message.startswith("k" * 77 + "...: unknown key"), message[:200]
    with pytest.raises(ControlError) as err:
        parse({"hyperparameters": {huge: 0.1}})
    assert len(str(err.value)) <= 500 and str(err.value).startswith("hyperparameters." + "k" * 77 + "...")
    from tb_retune._errors import bound_message

    cut = bound_message("hyperparameters.x: " + "v" * 10_000)
    assert len(cut) <= 500 and cut.startswith("hyperparameters.x: vvv") and "more characters" in cut


@pytest.mark.parametrize(
    "hps, needle",
    [
        ({"learning_rate": 1e39}, "hyperparameters.learning_rate: 1e+39 is too large for the optimizer's float32"),
        ({"learning_rate": 1e-46}, "hyperparameters.learning_rate: 1e-46 is too small for the optimizer's float32"),
        ({"weight_decay": 1e39}, "hyperparameters.weight_decay: 1e+39 is too large"),
        ({"ema_momentum": 1e-40}, "hyperparameters.ema_momentum: 1e-40 is too small for the optimizer's float32"),
        ({"momentum": 1e-39}, "hyperparameters.momentum: 1e-39 is too small"),
    ],
)
def test_values_that_float32_cannot_hold_are_refused(hps: dict[str, float], needle: str) -> None:
    with pytest.raises(ControlError) as err:
        parse({"hyperparameters": hps})
    assert needle in str(err.value)
    with pytest.raises(ControlError, match=r"^schedule\[0\]\.hyperparameters\."):
        parse({"schedule": [{"at_step": 1, "hyperparameters": hps}]})
    with pytest.raises(ControlError, match=r"^restore\.hyperparameters\."):
        parse({"restore": {"id": "r", "branch": "main", "step": 0, "hyperparameters": hps}})


def test_values_that_float32_holds_pass() -> None:
    hps = {"clipnorm": 10**19, "learning_rate": 1.2e-38, "momentum": 0.0, "weight_decay": 3e38}
    assert parse({"hyperparameters": hps}).hyperparameters == hps


def test_the_writers_revision_stamp_is_accepted_and_checked() -> None:
    rev = parse({"hyperparameters": {"learning_rate": 0.1}, "revision": {"id": "w-0123456789ab", "keys": ["learning_rate"]}})
    assert rev.revision_id == "w-0123456789ab" and rev.revision_keys == ("learning_rate",)
    assert parse({"hyperparameters": {"learning_rate": 0.1}}).revision_id is None  # a hand edit omits it
    for bad, needle in [
        ({"revision": "w-1"}, "revision: must be an object {id, keys}"),
        ({"revision": {"id": ""}}, "revision.id: must be a non-empty string"),
        ({"revision": {"id": "w-1", "keys": "learning_rate"}}, "revision.keys: must be a list"),
        ({"revision": {"id": "w-1", "keys": ["momentum"]}}, "revision.keys: names momentum, which hyperparameters does not set"),
        ({"revision": {"id": "w-1", "when": 1}}, "revision.when: unknown key"),
    ]:
        with pytest.raises(ControlError) as err:
            parse(bad)
        assert needle in str(err.value)
