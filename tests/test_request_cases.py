"""The tab's copy of the request rule agrees with the Python one.

``frontend/test/requests.test.js`` checks ``frontend/src/requests.js`` on the
cases of ``frontend/test/fixtures/request_cases.json``; this test checks
that every case's ``expected`` is what ``tb_retune.experiment.requests.request_state``
answers, so the two rules cannot drift apart.
"""

from __future__ import annotations

import json
import os

import pytest

try:  # tests/ as a package
    from tests import make_frontend_fixtures as fixtures
except ImportError:  # tests/ on sys.path
    import make_frontend_fixtures as fixtures  # type: ignore[no-redef]


def _cases() -> list[dict]:
    with open(os.path.join(fixtures.FIXTURES_DIR, "request_cases.json"), encoding="utf-8") as f:
        return json.load(f)["cases"]


def test_committed_cases_are_the_generated_ones() -> None:
    assert _cases() == json.loads(json.dumps(fixtures.request_cases()))


@pytest.mark.parametrize("case", _cases(), ids=lambda c: c["name"])
def test_python_rule_gives_each_expected_state(case: dict) -> None:
    requests = pytest.importorskip("tb_retune.experiment.requests")
    got = requests.request_state(case["status"], case["revision"], case["now"], later=case["later"])
    assert got == case["expected"]
