"""The frontend's test fixtures are what the Python side makes today.

The Retune tab's unit tests (``frontend/test/``) read JSON fixtures written by
``tests/make_frontend_fixtures.py`` from a real synthetic experiment. If the
tree's format changes, this test fails until the fixtures are regenerated, so
the tab and the plugin never drift apart silently.
"""

from __future__ import annotations

import filecmp
import os

try:  # tests/ as a package
    from tests import make_frontend_fixtures as fixtures
except ImportError:  # tests/ on sys.path (rootdir-relative imports)
    import make_frontend_fixtures as fixtures  # type: ignore[no-redef]


def test_committed_fixtures_are_current(tmp_path):
    written = fixtures.make_fixtures(str(tmp_path))
    committed = sorted(
        name for name in os.listdir(fixtures.FIXTURES_DIR) if name.endswith(".json")
    )
    assert committed == written, (
        "frontend/test/fixtures/ does not hold the files that tests/make_frontend_fixtures.py "
        "writes; run `.venv/bin/python tests/make_frontend_fixtures.py` and commit the result"
    )
    stale = [
        name
        for name in written
        if not filecmp.cmp(tmp_path / name, os.path.join(fixtures.FIXTURES_DIR, name), shallow=False)
    ]
    assert not stale, (
        f"stale frontend fixtures: {', '.join(stale)}; run "
        "`.venv/bin/python tests/make_frontend_fixtures.py` and commit frontend/test/fixtures/"
    )
