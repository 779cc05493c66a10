"""Comparing branches in the Retune tab, in a real headless Chromium against a real ``tensorboard``.

The branch table (sortable, the best branch marked, a row opens its node), a
tree that stays readable (full labels on hover and in the card, runs of
changes collapsed into groups, Fit that keeps text legible, the step-axis
layout), the Stop button, the banners that follow a request by its
revision, the tree's warnings, and dark mode.
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterator
from typing import Any
from urllib.parse import quote

import pytest

try:  # tests/ as a package
    from tests.browser import support
except ImportError:  # tests/ on sys.path
    from browser import support  # type: ignore[no-redef]

pytestmark = [
    pytest.mark.browser,
    pytest.mark.skipif(not os.path.exists(support.CHROMIUM), reason=f"no Chromium at {support.CHROMIUM}"),
]


@pytest.fixture(scope="module")
def logdir(tmp_path_factory: pytest.TempPathFactory) -> str:
    return str(tmp_path_factory.mktemp("compare") / "logs")


@pytest.fixture(scope="module")
def tensorboard(logdir: str) -> Iterator[str]:
    tb = support.TensorBoard(logdir).start()
    try:
        from tb_retune.testing.synthetic import make_experiment

        make_experiment(os.path.join(logdir, "digits"), branches=4, nodes=14, steps_per_node=100, seed=1)
        make_experiment(os.path.join(logdir, "long"), branches=3, nodes=50, steps_per_node=40, seed=5)
        yield tb.wait_ready(("digits", "long"))
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
    context = browser.new_context(viewport={"width": 1400, "height": 860})
    pg = context.new_page()
    problems: list[str] = []
    support.watch_problems(pg, problems)
    try:
        yield pg
    finally:
        context.close()
    assert not problems, problems


def _tree(tensorboard: str, experiment: str) -> dict[str, Any]:
    return support.get_json(f"{tensorboard}/data/plugin/retune/tree?experiment={experiment}")


def _table_rows(frame: Any) -> list[str]:
    return frame.eval_on_selector_all(".branch-table tbody tr", "trs => trs.map(t => t.getAttribute('data-branch'))")


def test_branch_table_sorts_marks_the_best_and_opens_a_branch(tensorboard: str, page: Any) -> None:
    tree = _tree(tensorboard, "digits")
    # The tree reply leaves the nodes' metrics to the metrics route, as the tab reads them.
    metrics = support.get_json(f"{tensorboard}/data/plugin/retune/metrics?experiment=digits")["metrics"]
    nodes = {n["id"]: dict(n, metrics=metrics[n["id"]]) for n in tree["nodes"]}
    frame = support.open_tab(page, tensorboard, direct=True, experiment="digits")
    frame.get_by_role("button", name="Branches", exact=True).click()
    frame.wait_for_selector(".branch-table tbody tr")
    assert sorted(_table_rows(frame)) == sorted(b["name"] for b in tree["branches"])

    # The best branch by val_loss (the default metric): the smallest val_loss any of its nodes reached.
    def best_of(b: dict[str, Any], tag: str) -> float:
        return min(nodes[i]["metrics"][tag]["value"] for i in b["nodes"] if tag in nodes[i]["metrics"])

    best = min(tree["branches"], key=lambda b: best_of(b, "val_loss"))["name"]
    assert frame.get_attribute(".branch-table tr.best", "data-branch") == best
    assert "best" in frame.text_content(".branch-table tr.best .best-badge")

    # Sorting by the best val_loss puts that branch first; a second click reverses.
    header = frame.locator('.branch-table th[data-col="val_loss:best"]')
    header.click()
    assert _table_rows(frame)[0] == best
    assert header.get_attribute("aria-sort") == "ascending"
    frame.locator('.branch-table th[data-col="val_loss:best"]').click()
    assert _table_rows(frame)[-1] == best
    # By start step, the numbers are in order.
    frame.locator('.branch-table th[data-col="start"]').click()
    starts = frame.eval_on_selector_all(".branch-table tbody tr td:nth-child(2)", "tds => tds.map(t => Number(t.textContent))")
    assert starts == sorted(starts)

    # Choosing another metric moves the mark.
    frame.select_option("select.best-metric", "val_accuracy")
    best_acc = max(tree["branches"], key=lambda b: max(nodes[i]["metrics"]["val_accuracy"]["value"] for i in b["nodes"]))
    assert frame.get_attribute(".branch-table tr.best", "data-branch") == best_acc["name"]

    # The "changed" cell holds the differences from the parent node, in full on hover.
    other = next(b for b in tree["branches"] if b["parent_node"])
    row = frame.locator(f'.branch-table tr[data-branch="{other["name"]}"]')
    assert row.locator("td").nth(2).text_content() == other["parent_node"]

    # A row opens the branch's latest node in the card, with its Scalars link.
    row.locator("td").nth(1).click()
    frame.wait_for_function(
        "id => document.querySelector('.node-card h2').textContent === id", arg=other["nodes"][-1]
    )
    assert frame.get_attribute(".node-card a.branch-link", "href").endswith(
        "?runFilter=" + quote(f"^digits/{other['name']}$", safe="") + "#timeseries"
    )
    assert row.locator("a.row-scalars").get_attribute("target") == "_top"
    assert frame.evaluate("window.__retuneTableRows") == len(tree["branches"])


def _xy(frame: Any, node_id: str) -> tuple[float, float]:
    t = frame.get_attribute(f'svg.tree g.node[data-id="{node_id}"]', "transform")
    x, y = t[len("translate("):-1].split(",")
    return float(x), float(y)


def test_a_long_tree_stays_readable_groups_tooltips_fit(tensorboard: str, page: Any) -> None:
    tree = _tree(tensorboard, "long")
    nodes = {n["id"]: n for n in tree["nodes"]}
    frame = support.open_tab(page, tensorboard, direct=True, experiment="long")
    frame.wait_for_selector("svg.tree g.node.group")
    cards = frame.evaluate("window.__retuneLastRenderCards")
    assert cards < len(tree["nodes"]), "runs of changes are collapsed"
    # Fit keeps the text legible: every label is drawn, none at a scale below 0.6.
    frame.get_by_role("button", name="Fit the tree to the view").click()
    frame.wait_for_timeout(100)
    scale = float(frame.get_attribute("svg.tree g.viewport", "transform").split("scale(")[1].rstrip(")"))
    assert scale >= 0.6
    assert frame.evaluate("document.querySelector('svg.tree').classList.contains('lod-low')") is False

    group = frame.locator("svg.tree g.node.group").first
    label = group.locator("text.label").text_content()
    gid = group.get_attribute("data-id")
    first = gid[len("group:"):]
    # What changed overall, then how many changes at which steps.
    assert "→" in label
    assert re.fullmatch(r"in \d+ changes @ \d+–\d+", group.locator("text.sub").text_content())
    # The full label on hover, as the SVG's own tooltip.
    group.hover()
    title = group.locator("title").text_content()
    full = title.split("\n")[0]
    assert full.startswith(label.rstrip("…")) and re.search(r" in \d+ changes @ \d+–\d+$", full)
    assert "Click to expand" in title

    # A click opens the group: its nodes are drawn, the first one selected.
    group.click()
    frame.wait_for_selector(f'svg.tree g.node[data-id="{first}"]')
    assert frame.query_selector(f'svg.tree g.node[data-id="{gid}"]') is None
    frame.wait_for_function("id => document.querySelector('.node-card h2').textContent === id", arg=first)
    # The node card holds the node's whole label.
    assert frame.text_content(".node-card .node-label") == nodes[first]["label"]
    frame.hover(f'svg.tree g.node[data-id="{first}"]')
    assert frame.text_content(f'svg.tree g.node[data-id="{first}"] title').startswith(nodes[first]["label"])
    # "Collapse" closes it again.
    frame.get_by_role("button", name="Collapse runs of changes into groups again").click()
    frame.wait_for_selector(f'svg.tree g.node[data-id="{gid}"]')


def test_step_layout_puts_nodes_where_their_steps_are(tensorboard: str, page: Any) -> None:
    tree = _tree(tensorboard, "long")
    frame = support.open_tab(page, tensorboard, direct=True, experiment="long")
    frame.get_by_role("button", name="Steps", exact=True).click()
    frame.wait_for_selector("svg.tree.steps g.node")
    frame.wait_for_selector("svg.tree text.lane-name")
    frame.get_by_role("button", name="Zoom out").click()
    frame.get_by_role("button", name="Zoom out").click()
    frame.wait_for_timeout(200)
    # x is proportional to the step; one lane (y) per branch.
    restored = [n for n in tree["nodes"] if n["restore"]]
    drawn = set(frame.eval_on_selector_all("svg.tree g.node", "gs => gs.map(g => g.getAttribute('data-id'))"))
    shown = [n for n in tree["nodes"] if n["id"] in drawn and n["start_step"] > 0]
    assert len(shown) >= 2
    ratios = {round(_xy(frame, n["id"])[0] / n["start_step"], 6) for n in shown}
    assert len(ratios) == 1, ratios
    px_per_step = ratios.pop()
    lanes = {}
    for n in shown:
        lanes.setdefault(n["branch"], set()).add(_xy(frame, n["id"])[1])
    assert all(len(ys) == 1 for ys in lanes.values())
    assert len({next(iter(ys)) for ys in lanes.values()}) == len(lanes)
    # A restore at step S is drawn at S, in a lane of its own below its parent's.
    nodes = {n["id"]: n for n in tree["nodes"]}
    for n in restored:
        if n["id"] in drawn and n["parent"] in drawn:
            x, y = _xy(frame, n["id"])
            assert x == pytest.approx(n["start_step"] * px_per_step, rel=1e-3)
            assert y > _xy(frame, nodes[n["parent"]]["id"])[1]
    ticks = frame.eval_on_selector_all("svg.tree text.step-tick", "ts => ts.map(t => Number(t.textContent))")
    assert ticks and ticks == sorted(ticks)
    # Back to the tree.
    frame.get_by_role("button", name="Tree", exact=True).click()
    frame.wait_for_function("!document.querySelector('svg.tree').classList.contains('steps')")


def _status(folder: str, **changes: Any) -> None:
    """Rewrites the (absent) trainer's status: alive now, plus ``changes``."""
    import json
    import time

    from tb_retune.experiment import atomic as _atomic

    path = os.path.join(folder, "retune-status.json")
    with open(path, encoding="utf-8") as f:
        status = json.load(f)
    status.update(heartbeat=time.time(), state="training")
    status.update(changes)
    _atomic.atomic_write_json(path, status, durable=False)


def test_stop_button_writes_stop_and_follows_it(tensorboard: str, logdir: str, page: Any) -> None:
    import json

    folder = os.path.join(logdir, "digits")
    _status(folder)
    frame = support.open_tab(page, tensorboard, direct=True, experiment="digits")
    button = frame.locator("button.stop-button")
    button.wait_for(state="visible")
    # One click arms it, a second writes.
    button.click()
    assert button.text_content() == "Click again to stop"
    assert not os.path.exists(os.path.join(folder, "retune.json"))
    button.click()
    frame.wait_for_selector(".banner:has-text('Written: stop')")
    with open(os.path.join(folder, "retune.json"), encoding="utf-8") as f:
        control = json.load(f)
    assert control["stop"] is True and "stop" in control["revision"]["keys"]
    # The trainer takes the revision (its `control` record, as the trainer writes it), then stops:
    # the banner says so and the button goes.
    taken = {"revision": control["revision"]["id"], "sha256": None, "result": "applied", "error": None,
             "time": 0.0}
    _status(folder, control=taken)
    _status(folder, state="stopped", control=taken)
    frame.wait_for_selector(".banner:has-text('The trainer took the stop')", timeout=30000)
    button.wait_for(state="hidden")


def test_requests_are_followed_by_revision_and_tree_warnings_shown(tensorboard: str, logdir: str, page: Any) -> None:
    """The tab's side of interfaces 1 and 2, against the answers the backend gives (fixtures of its replies)."""
    import json
    import time

    folder = os.path.join(logdir, "digits")
    _status(folder)
    with open(os.path.join(folder, "retune-status.json"), encoding="utf-8") as f:
        status = json.load(f)
    revision = "w-0123456789ab"
    phase = {"state": "pending"}
    asked: list[str] = []

    def on_post(route: Any) -> None:
        real = route.fetch()
        body = real.json()
        body["revision"] = revision
        route.fulfill(response=real, json=body)

    def on_status(route: Any) -> None:
        asked.append(route.request.url)
        reply = dict(status, heartbeat=time.time(), state="training",
                     trainer={"alive": True, "state": "training", "age_s": 0.1})
        if phase["state"] == "rejected":
            reply["control"] = {"revision": revision, "sha256": "ab" * 32, "result": "rejected",
                                "error": "hyperparameters.momentum: must be <= 0.99 here", "time": time.time()}
        elif phase["state"] == "gone":
            reply["state"] = "finished"
            reply["trainer"] = {"alive": False, "state": "finished", "age_s": 1.0}
        route.fulfill(json=reply)

    def on_tree(route: Any) -> None:
        real = route.fetch()
        body = real.json()
        body["warnings"] = ["retune/node/main-9: not JSON; skipped", "branch main-s7: no event file"]
        route.fulfill(response=real, json=body)

    page.route("**/data/plugin/retune/hyperparameters", on_post)
    page.route("**/data/plugin/retune/status?*", on_status)
    page.route("**/data/plugin/retune/tree?*", on_tree)
    frame = support.open_tab(page, tensorboard, direct=True, experiment="digits")
    # Interface 2: the tree's warnings.
    frame.wait_for_selector(".banner-warn:has-text('retune/node/main-9: not JSON; skipped')")
    assert "branch main-s7: no event file" in frame.text_content(".banners")

    # Interface 1: written, then followed by its revision.
    frame.fill("#hp-momentum", "0.95")
    frame.click(".hp-form button.primary")
    frame.wait_for_selector(".banner-info:has-text('Written: momentum=0.95; waiting for the trainer')")
    _wait_until(frame, lambda: any(f"revision={revision}" in u for u in asked))
    phase["state"] = "gone"
    frame.wait_for_selector(".banner-warn:has-text('the trainer is not running')", timeout=30000)
    phase["state"] = "rejected"
    frame.wait_for_selector(
        ".banner-error:has-text('The trainer rejected momentum=0.95: hyperparameters.momentum: must be <= 0.99 here')",
        timeout=30000)
    page.unroute_all(behavior="ignoreErrors")


def _wait_until(frame: Any, predicate: Any, timeout: float = 60.0) -> None:
    """Waits in Playwright's own loop, so the page's routed requests are answered meanwhile."""
    import time

    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, "timed out"
        frame.wait_for_timeout(100)


def _theme(frame: Any) -> tuple[str, str]:
    return (frame.evaluate("document.documentElement.dataset.theme"),
            frame.evaluate("getComputedStyle(document.body).backgroundColor"))


def test_dark_mode_follows_the_browser_and_tensorboards_toggle(tensorboard: str, browser: Any) -> None:
    # Outside TensorBoard's page: the browser's prefers-color-scheme.
    context = browser.new_context(viewport={"width": 1200, "height": 800}, color_scheme="dark")
    try:
        page = context.new_page()
        frame = support.open_tab(page, tensorboard, direct=True, experiment="digits")
        assert _theme(frame) == ("dark", "rgb(32, 33, 36)")
        card = frame.eval_on_selector("svg.tree g.node .card", "c => getComputedStyle(c).fill")
        assert card == "rgb(45, 46, 49)"
    finally:
        context.close()
    # Inside TensorBoard: its own dark toggle (TensorBoard 2.21 toggles body.dark-mode on its page).
    context = browser.new_context(viewport={"width": 1200, "height": 800}, color_scheme="light")
    try:
        page = context.new_page()
        frame = support.open_tab(page, tensorboard, experiment="digits")
        assert _theme(frame)[0] == "light"
        page.evaluate("document.body.classList.add('dark-mode')")
        frame.wait_for_function("document.documentElement.dataset.theme === 'dark'")
        assert _theme(frame)[1] == "rgb(32, 33, 36)"
        page.evaluate("document.body.classList.remove('dark-mode')")
        frame.wait_for_function("document.documentElement.dataset.theme === 'light'")
        assert _theme(frame)[1] == "rgb(255, 255, 255)"
    finally:
        context.close()
