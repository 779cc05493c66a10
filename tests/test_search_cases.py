"""The tab's checks of a search request agree with the schema's.

``frontend/test/search.test.js`` checks ``buildSearchRequest`` of
``frontend/src/search.js`` on the cases of
``frontend/test/fixtures/search_cases.json``: the form's fields give the
case's request, or an error naming the case's key. This test holds each
case's request against ``tb_retune.experiment.search.parse_search`` (issue
17's schema; skipped where that module is not installed), so the two sets of
rules cannot drift apart.
"""

from __future__ import annotations

import json
import os

import pytest

try:  # tests/ as a package
    from tests import make_frontend_fixtures as fixtures
except ImportError:  # tests/ on sys.path
    import make_frontend_fixtures as fixtures  # type: ignore[no-redef]


def _doc() -> dict:
    with open(os.path.join(fixtures.FIXTURES_DIR, "search_cases.json"), encoding="utf-8") as f:
        return json.load(f)


def test_committed_cases_are_the_generated_ones() -> None:
    assert _doc() == json.loads(json.dumps(fixtures.search_cases()))


@pytest.mark.parametrize("case", _doc()["cases"], ids=lambda c: c["name"])
def test_schema_gives_each_expected_answer(case: dict) -> None:
    search = pytest.importorskip("tb_retune.experiment.search")
    from tb_retune._errors import ControlError

    doc = _doc()
    request = dict(case["request"], id="s-case")
    if case["error"] is None:
        search.parse_search(request, doc["known"], doc["checkpoints"], doc["metrics"])
        return
    with pytest.raises(ControlError) as info:
        search.parse_search(request, doc["known"], doc["checkpoints"], doc["metrics"])
    assert str(info.value).split(":")[0] == case["error"], str(info.value)
