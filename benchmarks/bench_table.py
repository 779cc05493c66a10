"""The Retune tab's branch table in headless Chromium: 1,000 branches drawn within 100 ms.

A logdir with one experiment of 1,000 branches (two nodes each), written with
the trainer's own writers, served by TensorBoard's WSGI app with the Retune
plugin; the real tab opens it, switches to the branch table, and each sort
(a click on a header) draws all 1,000 rows again. Reported: the table's
JavaScript (rows, DOM) and until the next frame is painted, medians.

    .venv/bin/python benchmarks/bench_table.py
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import tempfile
import threading
from statistics import median
from typing import Any

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from benchmarks.bench_plugin import CHROMIUM, CHROMIUM_ARGS  # noqa: E402

BRANCHES = 1000
NAME = "branches1000"

#: One sort: click a header, wait for the table drawn again, then for a painted frame.
_SORT = """async (col) => {
  const before = window.__retuneTableDraws || 0;
  const t0 = performance.now();
  document.querySelector(`.branch-table th[data-col="${col}"]`).click();
  const js = window.__retuneLastTableMs;
  void document.querySelector('.branch-table').getBoundingClientRect().height; // style and layout, now
  const layout = performance.now() - t0;
  await new Promise((r) => requestAnimationFrame(() => setTimeout(r, 0)));
  return { js_ms: js, layout_ms: layout, paint_ms: performance.now() - t0, rows: window.__retuneTableRows,
           drawn: (window.__retuneTableDraws || 0) > before };
}"""


def _serve(root: str) -> Any:
    from tensorboard.backend import application

    from tb_retune.plugin.loader import RetuneLoader
    from tb_retune.reader.experiments import load_multiplexer

    multiplexer, provider = load_multiplexer(root)
    multiplexer.AddRunsFromDirectory(root)
    multiplexer.Reload()
    flags = argparse.Namespace(logdir=root, path_prefix="", samples_per_plugin={}, window_title="")
    return application.TensorBoardWSGIApp(flags, [RetuneLoader()], provider)


def table(*, reps: int = 10, log: Any = print) -> dict[str, Any]:
    """Draws the 1,000-branch table `reps` times (one sort each); returns the medians."""
    from playwright.sync_api import sync_playwright
    from werkzeug.serving import WSGIRequestHandler, make_server

    from tb_retune.testing.synthetic import make_experiment

    class Quiet(WSGIRequestHandler):
        def log(self, *args: Any, **kwargs: Any) -> None:
            pass

    root = tempfile.mkdtemp(prefix="tbr-bench-table-")
    make_experiment(os.path.join(root, NAME), branches=BRANCHES, nodes=2 * BRANCHES, steps_per_node=20, seed=7)
    server = make_server("127.0.0.1", 0, _serve(root), threaded=True, request_handler=Quiet)
    thread = threading.Thread(target=server.serve_forever, name="bench-http", daemon=True)
    thread.start()
    out: dict[str, Any] = {}
    try:
        with sync_playwright() as p:
            browser = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
            try:
                context = browser.new_context(viewport={"width": 1400, "height": 900})
                context.add_init_script(
                    f"try {{ localStorage.setItem('tb-retune.experiment', {json.dumps(NAME)}); }} catch (e) {{}}")
                page = context.new_page()
                page.goto(f"http://127.0.0.1:{server.server_port}/data/plugin_entry.html?name=retune")
                page.wait_for_selector("svg.tree g.node", timeout=120_000)
                # The rows' metrics come from the metrics route, after the tree is drawn.
                page.wait_for_function("() => Boolean(window.__retuneApp && window.__retuneApp.state.metrics)",
                                       timeout=120_000)
                page.click("button.view-button[data-mode=table]")
                page.wait_for_function("n => window.__retuneTableRows === n", arg=BRANCHES, timeout=60_000)
                first = page.evaluate("window.__retuneLastTableMs")
                samples = []
                columns = ["loss:best", "start", "branch", "val_loss:latest", "state"]
                for i in range(reps + 1):  # the first sort warms the JIT and is dropped
                    got = page.evaluate(_SORT, columns[i % len(columns)])
                    assert got["rows"] == BRANCHES, got
                    if i:
                        samples.append(got)
                context.close()
            finally:
                browser.close()
    finally:
        server.shutdown()
        thread.join(timeout=10)
        shutil.rmtree(root, ignore_errors=True)
    out["table_render_ms_1000_branches"] = round(median(s["paint_ms"] for s in samples), 2)
    out["table_js_ms_1000_branches"] = round(median(s["js_ms"] for s in samples), 2)
    out["table_first_js_ms_1000_branches"] = round(first, 2)
    out["table_layout_ms_1000_branches"] = round(median(s["layout_ms"] for s in samples), 2)
    out["table_paint_ms_all"] = [round(s["paint_ms"], 1) for s in samples]
    log(f"  branch table, {BRANCHES} branches: render + paint {out['table_render_ms_1000_branches']} ms "
        f"(JS {out['table_js_ms_1000_branches']} ms; first draw JS {out['table_first_js_ms_1000_branches']} ms)")
    return out


if __name__ == "__main__":
    result = table()
    print(json.dumps(result, indent=2))
