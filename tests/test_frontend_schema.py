"""The tab's control schema (``frontend/src/control_schema.json``) is control.py's.

The tab checks a person's input with the trainer's rules; the JSON it
bundles is generated from ``tb_retune/experiment/control.py`` by
``frontend/tools/control_schema.py`` (``npm run build`` runs it). This test
fails when the two disagree: rebuild the tab.
"""

from __future__ import annotations

import importlib.util
import json
import math
import os
from types import ModuleType

import pytest

from tb_retune.experiment import control, values

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TOOL = os.path.join(ROOT, "frontend", "tools", "control_schema.py")
COMMITTED = os.path.join(ROOT, "frontend", "src", "control_schema.json")


def _tool() -> ModuleType:
    spec = importlib.util.spec_from_file_location("control_schema_tool", TOOL)
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_committed_schema_is_what_control_py_gives() -> None:
    with open(COMMITTED, encoding="utf-8") as f:
        committed = f.read()
    assert committed == _tool().render(), (
        "frontend/src/control_schema.json disagrees with tb_retune/experiment/control.py: "
        "run `cd frontend && npm run build` and commit it"
    )
    assert _tool().main(["--check"]) == 0


def test_schema_holds_every_rule_the_tab_applies() -> None:
    with open(COMMITTED, encoding="utf-8") as f:
        schema = json.load(f)
    assert schema["short_names"] == control.SHORT_NAMES
    assert set(schema["fixed_at_build"]) == set(control.FIXED_AT_BUILD)
    assert schema["top_level_keys"] == list(control.TOP_LEVEL_KEYS)
    # Every range the trainer checks is in the tab, bounds and all.
    for name, (lo, lo_inc, hi, hi_inc, nullable) in values.RANGES.items():
        r = schema["ranges"][name]
        assert (r["min"] if r["min"] is not None else -math.inf) == lo, name
        assert (r["max"] if r["max"] is not None else math.inf) == hi, name
        assert (r["min_inclusive"], r["max_inclusive"], r["nullable"]) == (lo_inc, hi_inc, nullable), name
    assert set(schema["ranges"]) == set(values.RANGES)


def test_a_changed_rule_makes_the_check_fail(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(values.RANGES, "momentum", (0.0, True, 2.0, True, False))
    assert _tool().main(["--check"]) == 1
