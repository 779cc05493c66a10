"""Notes in the Retune tab, in a real headless Chromium against a real ``tensorboard``:
the tree marks a noted node, the node card shows and edits the note, and a
save writes ``retune.json``'s ``notes`` (a too-long note is refused in the page)."""

from __future__ import annotations

import json
import os
import time
from collections.abc import Iterator
from typing import Any

import pytest

try:  # tests/ as a package
    from tests.browser import support
except ImportError:  # tests/ on sys.path
    from browser import support  # type: ignore[no-redef]

pytestmark = [
    pytest.mark.browser,
    pytest.mark.skipif(
        not os.path.exists(support.CHROMIUM),
        reason=f"no Chromium at {support.CHROMIUM}: `make chromium` installs Debian's (apt-get install chromium)",
    ),
]

# HTML in a note is shown as text.
NOTE = "diverged <b>here</b>: lr too high"


def _notes(folder: str) -> dict[str, Any]:
    try:
        with open(os.path.join(folder, "retune.json"), encoding="utf-8") as f:
            return json.load(f).get("notes", {})
    except FileNotFoundError:
        return {}


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, str]]:
    logdir = str(tmp_path_factory.mktemp("browser-notes") / "logs")
    tb = support.TensorBoard(logdir).start()
    try:
        from tb_retune.testing.synthetic import make_experiment

        make_experiment(os.path.join(logdir, "noted"), branches=2, nodes=4, seed=1, notes={"main-2": NOTE})
        yield tb.wait_ready(("noted",)), os.path.join(logdir, "noted")
    finally:
        tb.stop()


def test_the_tab_shows_marks_and_writes_notes(served: tuple[str, str]) -> None:
    from playwright.sync_api import sync_playwright

    base, folder = served
    with sync_playwright() as p:
        browser = support.launch_chromium(p)
        try:
            page = browser.new_page(viewport={"width": 1400, "height": 860})
            problems: list[str] = []
            support.watch_problems(page, problems)
            frame = support.open_tab(page, base, direct=True, experiment="noted")
            marked = frame.eval_on_selector_all(
                "svg.tree g.node", "gs => gs.filter(g => g.querySelector('.note-mark')).map(g => g.dataset.id)")
            assert marked == ["main-2"]
            assert "has a note" in frame.get_attribute('svg.tree g.node[data-id="main-2"]', "aria-label")

            frame.click('svg.tree g.node[data-id="main-2"]')
            frame.wait_for_function("() => document.querySelector('.node-card h2').textContent === 'main-2'")
            assert frame.input_value(".note-text") == NOTE
            assert frame.eval_on_selector(".node-card", "c => c.querySelectorAll('b').length") == 0

            frame.click('svg.tree g.node[data-id="main-1"]')
            frame.wait_for_function("() => document.querySelector('.node-card h2').textContent === 'main-1'")
            assert frame.input_value(".note-text") == ""
            frame.fill(".note-text", "baseline")
            assert frame.text_content(".note-count") == "8 / 500"
            frame.get_by_role("button", name="Save note").click()
            frame.wait_for_selector(".note-message.msg-ok")
            deadline = time.monotonic() + 10
            while _notes(folder) != {"main-1": "baseline"} and time.monotonic() < deadline:
                time.sleep(0.05)
            assert _notes(folder) == {"main-1": "baseline"}
            # The written note stays in the field while the tree (not yet recorded) refreshes.
            page.wait_for_timeout(3500)
            assert frame.input_value(".note-text") == "baseline"

            frame.fill(".note-text", "x" * 501)
            frame.get_by_role("button", name="Save note").click()
            frame.wait_for_selector(".note-message.msg-error:has-text('more than the limit of 500')")
            assert _notes(folder) == {"main-1": "baseline"}
            assert not problems, problems
        finally:
            browser.close()
