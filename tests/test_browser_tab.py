"""The Retune tab in a real headless Chromium, against a real ``tensorboard``.

One TensorBoard process serves a logdir of synthetic experiments written with
the trainer's own writers; each test opens TensorBoard's page, goes to the
Retune tab (an iframe that TensorBoard fills with our ES module) and acts as
a person would. Writes are checked by reading ``retune.json`` itself.
"""

from __future__ import annotations

import json
import os
import re
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

# A branch name that is HTML: shown as text, it creates no element and runs nothing.
EVIL = "x<img src=x onerror=alert(1)>"


def _control(folder: str) -> dict[str, Any]:
    try:
        with open(os.path.join(folder, "retune.json"), encoding="utf-8") as f:
            return json.load(f)
    except FileNotFoundError:
        return {}


def _wait(predicate: Any, timeout: float = 10.0, what: str = "") -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.05)
    raise AssertionError(f"timed out after {timeout}s waiting for {what}")


@pytest.fixture(scope="module")
def logdir(tmp_path_factory: pytest.TempPathFactory) -> str:
    return str(tmp_path_factory.mktemp("browser") / "logs")


@pytest.fixture(scope="module")
def tensorboard(logdir: str) -> Iterator[str]:
    """A real TensorBoard over a logdir of synthetic experiments.

    TensorBoard starts first and the experiments are written while it
    imports TensorFlow (it reloads the logdir every second).
    """
    tb = support.TensorBoard(logdir).start()
    try:
        from tb_retune.testing.synthetic import make_experiment

        make_experiment(os.path.join(logdir, "digits"), branches=3, nodes=9, steps_per_node=100, seed=1)
        make_experiment(os.path.join(logdir, "restoring"), branches=2, nodes=4, steps_per_node=100, seed=2)
        make_experiment(os.path.join(logdir, "names"), branches=2, nodes=3, steps_per_node=100, seed=3,
                        branch_names=["main", EVIL])
        make_experiment(os.path.join(logdir, "big"), branches=50, nodes=1000, steps_per_node=20, seed=4)
        yield tb.wait_ready(("digits", "restoring", "names", "big"))
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


def _pick(frame: Any, experiment: str) -> None:
    frame.select_option("select.picker", experiment)
    frame.wait_for_function(
        "name => { const s = document.querySelector('.node-card .meta'); "
        "return document.querySelector('select.picker').value === name && s; }",
        arg=experiment,
    )
    # The tree of that experiment is drawn (the first node of every experiment is main-1).
    frame.wait_for_selector('svg.tree g.node[data-id="main-1"]')


def _select_node(frame: Any, node_id: str) -> None:
    frame.get_by_role("button", name="Fit the tree to the view").click()
    frame.click(f'svg.tree g.node[data-id="{node_id}"]')
    frame.wait_for_function(
        "id => document.querySelector('.node-card h2') && document.querySelector('.node-card h2').textContent === id",
        arg=node_id,
    )


def _heartbeat(folder: str) -> None:
    """Makes the experiment's (absent) trainer look alive again."""
    from tb_retune.experiment import atomic as _atomic

    path = os.path.join(folder, "retune-status.json")
    with open(path, encoding="utf-8") as f:
        status = json.load(f)
    status.update(heartbeat=time.time(), state="training")
    _atomic.atomic_write_json(path, status, durable=False)


def test_tab_loads_with_the_tree_of_an_experiment(tensorboard: str, logdir: str, page: Any) -> None:
    _heartbeat(os.path.join(logdir, "digits"))
    frame = support.open_tab(page, tensorboard, experiment="digits")
    assert frame.eval_on_selector("select.picker", "s => s.value") == "digits"
    tree = support.get_json(f"{tensorboard}/data/plugin/retune/tree?experiment=digits")
    ids = sorted(frame.eval_on_selector_all("svg.tree g.node", "gs => gs.map(g => g.getAttribute('data-id'))"))
    assert ids == sorted(n["id"] for n in tree["nodes"])
    # Every branch is there, coloured, with its name in the legend.
    legend = frame.eval_on_selector_all(".legend .legend-name", "xs => xs.map(x => x.textContent)")
    assert legend == [b["name"] for b in tree["branches"]]
    assert len(set(frame.eval_on_selector_all("svg.tree .card", "xs => xs.map(x => x.getAttribute('stroke'))"))) == 3
    # Labels come from the server; the current node is marked and selected first.
    texts = frame.eval_on_selector_all("svg.tree g.node text.label", "xs => xs.map(x => x.textContent)")
    assert any(t.startswith("restored main@") for t in texts)
    assert "start @ 0" in texts
    current = [n["id"] for n in tree["nodes"] if n["current"]]
    assert frame.eval_on_selector_all("svg.tree g.node.current", "gs => gs.map(g => g.getAttribute('data-id'))") == current
    assert frame.text_content(".node-card h2") == current[0]
    assert "Training at step" in frame.text_content(".trainer-pill")
    # The link to the Scalars dashboard opens the top window, filtered to the experiment's runs.
    link = frame.locator("a.scalars-link")
    assert link.get_attribute("target") == "_top"
    href = link.get_attribute("href")
    assert href == f"{tensorboard}/?runFilter=%5Edigits%2F%28main%7Cmain-s1%7Cmain-s2%29%24#timeseries"
    # A click shows a node's details: diff, metrics, chart, configuration.
    _select_node(frame, "main-2")
    card = frame.text_content(".node-card")
    assert "learning_rate" in card and "Changed from parent" in card and "Latest metrics" in card
    assert frame.get_attribute(".node-card a.branch-link", "href").endswith("?runFilter=%5Edigits%2Fmain%24#timeseries")
    frame.wait_for_selector(".node-card svg.chart path.series")
    _select_node(frame, "main-1")
    frame.click(".node-card details summary")
    frame.wait_for_selector(".node-card pre.config")
    assert '"class_name": "SGD"' in frame.text_content(".node-card pre.config")
    # Rendering is measured for the benchmark.
    assert frame.evaluate("window.__retuneLastRenderMs") > 0

    # The wheel zooms about the pointer, a drag pans (and selects nothing).
    def transform() -> str:
        return frame.get_attribute("svg.tree g.viewport", "transform")

    box = frame.locator("svg.tree").bounding_box()
    page.mouse.move(box["x"] + box["width"] / 2, box["y"] + 40)
    before = transform()
    page.mouse.wheel(0, -300)
    frame.wait_for_function("t => document.querySelector('svg.tree g.viewport').getAttribute('transform') !== t", arg=before)
    zoomed = transform()
    assert float(re.search(r"scale\(([\d.]+)\)", zoomed).group(1)) > float(re.search(r"scale\(([\d.]+)\)", before).group(1))
    page.mouse.down()
    page.mouse.move(box["x"] + box["width"] / 2 + 120, box["y"] + 90, steps=5)
    page.mouse.up()
    frame.wait_for_function("t => document.querySelector('svg.tree g.viewport').getAttribute('transform') !== t", arg=zoomed)
    assert frame.text_content(".node-card h2") == "main-1"

    # The Scalars link opens TensorBoard's time series dashboard with the run filter set.
    frame.click("a.scalars-link")
    page.wait_for_url(re.compile(r".*#timeseries$"))
    box = page.get_by_role("textbox", name="Filter runs (regex)")
    box.wait_for()
    assert box.input_value() == "^digits/(main|main-s1|main-s2)$"


def test_restore_button_writes_the_request_and_shows_the_new_branch(
    tensorboard: str, logdir: str, page: Any
) -> None:
    folder = os.path.join(logdir, "restoring")
    _heartbeat(folder)
    frame = support.open_tab(page, tensorboard, direct=True, experiment="restoring")
    _select_node(frame, "main-1")
    frame.fill("input.restore-hps", "learning_rate=2e-4")
    frame.get_by_role("button", name="Restore step 100").click()
    restore = _wait(lambda: _control(folder).get("restore"), what="a restore in retune.json")
    assert restore["branch"] == "main" and restore["step"] == 100
    assert restore["hyperparameters"] == {"learning_rate": 0.0002}
    assert restore["id"]
    frame.wait_for_selector(f"text=request {restore['id']}")
    frame.wait_for_selector(".banner-info")
    assert f"Written: restore main @ 100, then learning_rate=0.0002 ({restore['id']})" in frame.text_content(".banners")

    # The trainer picks it up: a new branch whose first node carries the request id.
    view = frame.get_attribute("svg.tree g.viewport", "transform")
    _carry_out_restore(folder, restore)
    # Carried out, then (once the tree has the branch) named with a link to it.
    frame.wait_for_selector(".banner-ok:has-text('new branch main-r1')", timeout=30000)
    # The refreshes kept the zoom and the selection.
    assert frame.get_attribute("svg.tree g.viewport", "transform") == view
    assert frame.text_content(".node-card h2") == "main-1"
    frame.wait_for_selector('svg.tree g.node[data-id="main-r1-1"]')
    frame.click(".banner-ok button.link-button")
    frame.wait_for_function("document.querySelector('.node-card h2').textContent === 'main-r1-1'")


def _carry_out_restore(folder: str, restore: dict[str, Any]) -> None:
    """What the trainer does after a restore, with its own writers."""
    from tb_retune.experiment import atomic as _atomic
    from tb_retune.trainer.summaries import BranchWriter

    with open(os.path.join(folder, "retune-status.json"), encoding="utf-8") as f:
        status = json.load(f)
    hps = dict(status["hyperparameters"], **restore.get("hyperparameters", {}))
    writer = BranchWriter(os.path.join(folder, "main-r1"), start_step=restore["step"])
    record = {
        "version": 1, "id": "main-r1-1", "branch": "main-r1", "parent": "main-1",
        "step": restore["step"], "seq": 99, "time": time.time(), "reason": "restore",
        "restore": {"branch": restore["branch"], "step": restore["step"], "node": "main-1"},
        "request_id": restore["id"], "hyperparameters": hps,
        "change": {"learning_rate": [status["hyperparameters"]["learning_rate"], hps["learning_rate"]]},
        "config": None,
    }
    writer.node(record)
    writer.scalars(restore["step"] + 10, {"loss": 0.5})
    writer.close()
    with open(os.path.join(folder, "retune.json"), encoding="utf-8") as f:
        revision = json.load(f)["revision"]["id"]
    # As the trainer records a revision it took (interface 1) and a restore it carried out.
    status.update(branch="main-r1", node="main-r1-1", step=restore["step"] + 10, hyperparameters=hps,
                  heartbeat=time.time(), restores_done=[*status.get("restores_done", []), restore["id"]],
                  control={"revision": revision, "sha256": None, "result": "applied", "error": None,
                           "time": time.time()})
    _atomic.atomic_write_json(os.path.join(folder, "retune-status.json"), status, durable=False)


def test_form_writes_hyperparameters_and_shows_errors(tensorboard: str, logdir: str, page: Any) -> None:
    folder = os.path.join(logdir, "digits")
    frame = support.open_tab(page, tensorboard, direct=True, experiment="digits")
    field = frame.locator("#hp-learning_rate")
    field.wait_for()
    in_force = support.get_json(f"{tensorboard}/data/plugin/retune/tree?experiment=digits")["status"]["hyperparameters"]
    assert float(field.input_value()) == pytest.approx(in_force["learning_rate"])
    assert frame.locator("#hp-nesterov").get_attribute("type") == "checkbox"

    field.fill("0.0005")
    frame.get_by_role("button", name="Apply").click()
    _wait(lambda: _control(folder).get("hyperparameters", {}).get("learning_rate") == 0.0005,
          what="learning_rate 0.0005 in retune.json")
    assert _control(folder)["hyperparameters"] == {"learning_rate": 0.0005}, "only the changed value is written"
    frame.wait_for_selector(".form-message.msg-ok")
    assert "learning_rate=0.0005" in frame.text_content(".banners")

    # Checked in the browser: nothing is sent.
    field.fill("-1")
    frame.get_by_role("button", name="Apply").click()
    frame.wait_for_selector(".form-error:has-text('learning_rate: must be >= 0, got -1')")

    # Checked by the server (the trainer's own schema): its error is shown, nothing written.
    field.fill("0.0005")
    frame.fill("#hp-momentum", "1.5")
    frame.get_by_role("button", name="Apply").click()
    error = frame.wait_for_selector(".form-error:has-text('momentum')")
    assert "1.5" in error.text_content()
    assert "momentum" not in _control(folder).get("hyperparameters", {})


def test_html_in_names_is_shown_as_text(tensorboard: str, page: Any) -> None:
    frame = support.open_tab(page, tensorboard, direct=True, experiment="digits")
    _pick(frame, "names")
    labels = frame.eval_on_selector_all("svg.tree g.node text.sub", "xs => xs.map(x => x.textContent)")
    assert any(t.startswith(EVIL) for t in labels), labels
    evil_node = frame.eval_on_selector_all(
        "svg.tree g.node", "(gs, evil) => gs.map(g => g.getAttribute('data-id')).find(id => id.startsWith(evil))", EVIL
    )
    _select_node(frame, evil_node)
    assert f"branch {EVIL}" in frame.text_content(".node-card .meta")
    assert EVIL in frame.text_content(".legend")
    # No element was made from the name anywhere, and nothing ran (a dialog fails the test).
    assert frame.evaluate("document.querySelectorAll('img').length") == 0
    frame.click(".node-card details summary") if frame.query_selector(".node-card details") else None
    time.sleep(0.3)
    assert frame.evaluate("document.querySelectorAll('img').length") == 0


def test_a_1000_node_tree_renders_fast(tensorboard: str, page: Any) -> None:
    frame = support.open_tab(page, tensorboard, direct=True, experiment="digits")
    count_before = frame.evaluate("window.__retuneRenderCount")
    frame.select_option("select.picker", "big")
    frame.wait_for_function(
        "n => window.__retuneRenderCount > n && window.__retuneLastRenderNodes === 1000", arg=count_before, timeout=30000
    )
    ms = frame.evaluate("window.__retuneLastRenderMs")
    # Runs of changes are collapsed into groups: fewer cards than nodes.
    cards = frame.evaluate("window.__retuneLastRenderCards")
    assert 50 <= cards < 1000
    # Only the cards in and near the view are in the page...
    mounted = frame.evaluate("document.querySelectorAll('svg.tree g.node').length")
    assert 0 < mounted < cards
    assert frame.evaluate("window.__retuneMountedNodes") == mounted
    # ..."Fit" keeps the text legible rather than shrinking it...
    frame.get_by_role("button", name="Fit the tree to the view").click()
    frame.wait_for_timeout(100)
    assert frame.evaluate("document.querySelector('svg.tree').classList.contains('lod-low')") is False
    # ...and zoomed out far enough, every card is drawn.
    for _ in range(12):
        frame.get_by_role("button", name="Zoom out").click()
    frame.wait_for_function("n => document.querySelectorAll('svg.tree g.node').length === n", arg=cards)
    all_ms = frame.evaluate("window.__retuneLastUpdateMs")
    print(f"\n1,000-node tree: first view {ms:.1f} ms ({mounted} cards drawn), all {cards} cards drawn in {all_ms:.1f} ms")
    assert ms < 300, f"showing a 1,000-node tree took {ms:.0f} ms"
    assert all_ms < 300, f"drawing {cards} cards took {all_ms:.0f} ms"
