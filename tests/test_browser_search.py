"""The Retune tab's search card in a real headless Chromium, against a real
``tensorboard`` (issue 17).

The logdir holds a synthetic experiment with a running search
(``make_experiment(search=6)``: the trainer's own writers, ``searches[id]`` in
the status as the trainer writes it). The tab shows its progress and its
trials ranked, groups the trials in the tree, and its "Search from here" form
writes a request that is checked by reading ``retune.json`` itself.
"""

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


def _has_search_route() -> bool:
    from tb_retune.plugin.retune_plugin import RetunePlugin

    return hasattr(RetunePlugin, "search_route")


def _control(folder: str) -> dict[str, Any]:
    try:
        with open(os.path.join(folder, "retune.json"), encoding="utf-8") as f:
            return json.load(f)
    except FileNotFoundError:
        return {}


def _wait(predicate: Any, timeout: float = 60.0, what: str = "") -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.1)
    raise AssertionError(f"timed out after {timeout}s waiting for {what}")


@pytest.fixture(scope="module")
def logdir(tmp_path_factory: pytest.TempPathFactory) -> str:
    return str(tmp_path_factory.mktemp("browser-search") / "logs")


@pytest.fixture(scope="module")
def tensorboard(logdir: str) -> Iterator[str]:
    tb = support.TensorBoard(logdir).start()
    try:
        from tb_retune.testing.synthetic import make_experiment

        make_experiment(os.path.join(logdir, "search"), branches=2, nodes=4, steps_per_node=100, seed=11, search=6)
        yield tb.wait_ready(("search",), timeout=120)
    finally:
        tb.stop()


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        b = support.launch_chromium(p)
        try:
            yield b
        finally:
            b.close()


@pytest.fixture
def page(browser: Any) -> Iterator[Any]:
    context = browser.new_context(viewport={"width": 1400, "height": 900})
    pg = context.new_page()
    problems: list[str] = []
    support.watch_problems(pg, problems)
    try:
        yield pg
    finally:
        context.close()
    assert not problems, problems


def _status(logdir: str) -> dict[str, Any]:
    with open(os.path.join(logdir, "search", "retune-status.json"), encoding="utf-8") as f:
        return json.load(f)


def test_running_search_shows_progress_ranked_trials_and_a_group(tensorboard: str, logdir: str, page: Any) -> None:
    entry = _status(logdir)["searches"]["s-1"]
    best = entry["best"]
    frame = support.open_tab(page, tensorboard, direct=True, experiment="search")
    frame.wait_for_selector('.search-entry[data-search="s-1"] tr.trial-row', timeout=60000)
    progress = frame.text_content(".search-entry .search-progress")
    assert progress.startswith("done 4 / 8 · running 1 · pruned 1 · best val_loss "), progress
    assert progress.endswith(f"(trial {best['number']})")
    # Ranked: the complete trials by value (the best first), then running, then pruned.
    rows = frame.eval_on_selector_all(
        ".search-entry tr.trial-row",
        "rs => rs.map(r => [Number(r.dataset.trial), r.classList.contains('best'), r.children[3].textContent])")
    complete = sorted((t for t in entry["trials"] if t["state"] == "complete"), key=lambda t: t["value"])
    assert [r[0] for r in rows[:4]] == [t["number"] for t in complete]
    assert rows[0][1] and not any(r[1] for r in rows[1:])
    assert [r[2].split(" ")[0] for r in rows[4:]] == ["running", "pruned"]
    # The running trial is the current node: its search's group is open, the best trial is marked.
    frame.wait_for_selector(f'svg.tree g.node.search-best[data-id="{best["branch"]}-1"]')
    # The trial's link selects its node.
    frame.click(f'.search-entry tr.trial-row[data-trial="{best["number"]}"] .trial-link')
    frame.wait_for_function("id => document.querySelector('.node-card h2').textContent === id", arg=f"{best['branch']}-1")
    # Collapse: the trials are one node, the selection moves to the source.
    frame.get_by_role("button", name="Collapse runs of changes into groups again").click()
    frame.wait_for_selector('svg.tree g.node.search-group[data-id="group:search:s-1"]')
    assert frame.locator(f'svg.tree g.node[data-id="{best["branch"]}-1"]').count() == 0
    frame.wait_for_function("() => document.querySelector('.node-card h2').textContent === 'main-1'")
    group_text = frame.text_content('svg.tree g.node[data-id="group:search:s-1"]')
    assert "search s-1" in group_text and f"trial {best['number']}" in group_text
    # A click opens it again and selects the best trial.
    frame.click('svg.tree g.node[data-id="group:search:s-1"]')
    frame.wait_for_function("id => document.querySelector('.node-card h2').textContent === id", arg=f"{best['branch']}-1")
    # The branch table marks the trial rows and the best trial.
    frame.click('button.view-button[data-mode="table"]')
    frame.wait_for_selector("tr.branch-row.trial-row")
    assert frame.locator("tr.branch-row.trial-row").count() == 6
    assert best["branch"] in frame.text_content("tr.branch-row:has(.trial-best)")


@pytest.mark.skipif(not _has_search_route(), reason="this plugin has no POST search route (issue 17's backend)")
def test_search_form_posts_a_valid_request_and_shows_an_error(tensorboard: str, logdir: str, page: Any) -> None:
    folder = os.path.join(logdir, "search")
    frame = support.open_tab(page, tensorboard, direct=True, experiment="search")
    frame.wait_for_selector('svg.tree g.node[data-id="main-1"]')
    frame.get_by_role("button", name="Fit the tree to the view").click()
    frame.click('svg.tree g.node[data-id="main-1"]')
    frame.wait_for_function("() => document.querySelector('.node-card h2').textContent === 'main-1'")
    frame.click("button.search-open")
    form = frame.locator("form.search-form")
    form.wait_for()
    # A bad request: 0 trials. The error names the key; nothing is written.
    form.locator('input[name="trials"]').fill("0")
    form.locator("button.search-submit").click()
    frame.wait_for_selector(".search-message.msg-error")
    assert "search.trials" in frame.text_content(".search-message")
    assert "search" not in _control(folder)
    # A valid one: 4 trials, learning_rate on a log scale (the default around its value) and nesterov's choices.
    form.locator('input[name="trials"]').fill("4")
    form.locator('input[name="steps_per_trial"]').fill("50")
    form.locator('input[name="vary-nesterov"]').check()
    form.locator('select[name="pruner"]').select_option("median")
    form.locator("button.search-submit").click()
    written = _wait(lambda: _control(folder).get("search"), what="the search in retune.json")
    assert written["from"] == {"branch": "main", "step": 100}
    assert written["space"] == {"learning_rate": {"low": 0.0001, "high": 0.01, "log": True},
                                "nesterov": {"choices": [True, False]}}
    assert (written["trials"], written["steps_per_trial"]) == (4, 50)
    assert written["objective"] == {"metric": "val_loss", "mode": "min"}
    assert (written["sampler"], written["pruner"], written["then"]) == ("tpe", "median", "best")
    assert written["id"].startswith("s-")
    frame.wait_for_selector(".search-message.msg-ok")
    assert written["id"] in frame.text_content(".search-message")
    # A request that only the server can refuse: the status says fit logs no val_loss (yet). Its error shows; nothing is written.
    from tb_retune.experiment import atomic as _atomic

    status = _status(logdir)
    status["metrics"] = ["accuracy", "loss"]
    _atomic.atomic_write_json(os.path.join(folder, "retune-status.json"), status, durable=False)
    frame.click("button.search-open")
    frame.locator("form.search-form button.search-submit").click()
    frame.wait_for_selector(".search-message.msg-error", timeout=30000)
    assert "search.objective.metric" in frame.text_content(".search-message")
    assert _control(folder)["search"] == written
