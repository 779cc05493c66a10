"""The plugin's ``tree`` route against TensorBoard's own scalars route, and the tab in Chromium.

One logdir of 50 experiments: the big ones (100 nodes over 10 branches, 1,000
over 100, and in full mode 10,000 over 1,000) written by
``tb_retune.testing.synthetic.make_experiment`` with the trainer's own writers, the
rest small (9 nodes over 3 branches). It is read by TensorBoard's own
multiplexer and data provider (what ``tensorboard --load_fast=false`` uses)
and served by TensorBoard's real WSGI app with the Scalars plugin and ours.
Routes are called through ``werkzeug.test.Client``; the tab is loaded in
Debian's headless Chromium from the same app served over HTTP.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import tempfile
import threading
import time
from typing import Any

from benchmarks._common import log, median, pair_ratios, profile_top, spread, timed

CHROMIUM = os.environ.get("TB_RETUNE_CHROMIUM", "/usr/bin/chromium")
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync", "--no-first-run"]
EXPERIMENTS = 50
#: nodes -> branches (ten nodes per branch, as in the headline 1,000 over 100).
SHAPES = {100: 10, 1000: 100, 10000: 1000}


def name_of(nodes: int) -> str:
    return f"big{nodes}"


class Served:
    """A logdir, TensorBoard's data provider over it, and the WSGI app with the Scalars and Retune plugins."""

    def __init__(self, sizes: list[int], root: str | None = None) -> None:
        from tb_retune.testing.synthetic import make_experiment

        self.root = root or tempfile.mkdtemp(prefix="tbr-bench-logdir-")
        self.sizes = sizes
        t_write = 0.0
        for i, nodes in enumerate(sizes):
            dt, _ = timed(lambda nodes=nodes, i=i: make_experiment(
                os.path.join(self.root, name_of(nodes)), branches=SHAPES[nodes], nodes=nodes, seed=100 + i))
            t_write += dt
        for i in range(EXPERIMENTS - len(sizes)):
            dt, _ = timed(lambda i=i: make_experiment(os.path.join(self.root, f"exp{i:02d}"), branches=3,
                                                      nodes=9, seed=i))
            t_write += dt
        self.write_s = t_write
        from tensorboard.backend import application
        from tensorboard.plugins.scalar import scalars_plugin

        from tb_retune.plugin.loader import RetuneLoader
        from tb_retune.reader.experiments import load_multiplexer

        self.multiplexer, self.provider = load_multiplexer(self.root)

        def load() -> None:
            self.multiplexer.AddRunsFromDirectory(self.root)
            self.multiplexer.Reload()

        self.load_s, _ = timed(load)
        flags = argparse.Namespace(logdir=self.root, path_prefix="", samples_per_plugin={}, window_title="")
        self.app = application.TensorBoardWSGIApp(flags, [scalars_plugin.ScalarsPlugin, RetuneLoader()],
                                                  self.provider)

    def close(self) -> None:
        shutil.rmtree(self.root, ignore_errors=True)


def _cpu_timed(fn: Any) -> tuple[float, float, Any]:
    """Milliseconds of wall time and of this process's CPU time that ``fn()`` took, and what it returned."""
    c0, t0 = time.process_time(), time.perf_counter()
    out = fn()
    return (time.perf_counter() - t0) * 1000, (time.process_time() - c0) * 1000, out


def heartbeat(served_root: str, name: str) -> Any:
    """A function that rewrites an experiment's status file as a live trainer's heartbeat does
    (atomically, a new ``heartbeat`` only), so the next tree request reads and sends it again."""
    from tb_retune.experiment import atomic

    path = os.path.join(served_root, name, "retune-status.json")
    with open(path, "rb") as f:
        status = json.loads(f.read())

    def beat() -> None:
        status["heartbeat"] = time.time()
        atomic.atomic_write_json(path, status, durable=False)

    return beat


def tree_rows(client: Any, root: str, name: str, nodes: int, *, reps: int) -> dict[str, Any]:
    """Cold, warm, gzip and live-trainer timings of the tree route of one experiment (wall and CPU ms)."""

    def tree(gzip: bool = False) -> Any:
        # A browser sends Accept-Encoding: gzip; the plugin then answers from its compressed cache.
        headers = {"Accept-Encoding": "gzip"} if gzip else {}
        r = client.get(f"/data/plugin/retune/tree?experiment={name}", headers=headers)
        assert r.status_code == 200, r.data[:300]
        return r

    def metrics(gzip: bool = True) -> Any:
        # What the tab asks for after drawing the tree: the nodes' metrics, which the tree reply leaves out.
        headers = {"Accept-Encoding": "gzip"} if gzip else {}
        r = client.get(f"/data/plugin/retune/metrics?experiment={name}", headers=headers)
        assert r.status_code == 200, r.data[:300]
        return r

    cold, cold_cpu, first = _cpu_timed(tree)
    doc = json.loads(first.data)
    assert len(doc["nodes"]) == nodes, (name, len(doc["nodes"]))
    cold_gzip, cold_gzip_cpu, packed = _cpu_timed(lambda: tree(gzip=True))  # compresses the cached JSON once
    assert packed.headers.get("Content-Encoding") == "gzip"
    # The metrics route right after, as the tab asks: it reads the metric points the tree did not.
    metrics_cold, metrics_cold_cpu, _ = _cpu_timed(metrics)
    metrics_plain = metrics(gzip=False)
    assert len(json.loads(metrics_plain.data)["metrics"]) == nodes
    metrics_warm = [_cpu_timed(metrics)[:2] for _ in range(max(3, reps // 3))]
    beat = heartbeat(root, name)
    samples: dict[str, list[tuple[float, float]]] = {"plain": [], "gzip": [], "live": []}
    for i in range(reps):
        kinds = ["plain", "gzip", "live"]
        for kind in kinds if i % 2 == 0 else kinds[::-1]:
            if kind == "live":
                beat()  # not timed: the trainer's write
            wall, cpu, _ = _cpu_timed(lambda kind=kind: tree(gzip=kind != "plain"))
            samples[kind].append((wall, cpu))

    def med(kind: str, which: int) -> float:
        return round(median([s[which] for s in samples[kind]]), 2)

    return {
        "branches": len(doc["branches"]),
        "runs": [b["run"] for b in doc["branches"]],
        "tree_cold_ms": round(cold, 2), "tree_cold_cpu_ms": round(cold_cpu, 2),
        "tree_cold_gzip_extra_ms": round(cold_gzip, 2), "tree_cold_gzip_extra_cpu_ms": round(cold_gzip_cpu, 2),
        "tree_ms": med("plain", 0), "tree_cpu_ms": med("plain", 1),
        "tree_ms_spread": spread([s[0] for s in samples["plain"]]),
        "tree_gzip_ms": med("gzip", 0), "tree_gzip_cpu_ms": med("gzip", 1),
        "tree_gzip_ms_spread": spread([s[0] for s in samples["gzip"]]),
        "tree_live_gzip_ms": med("live", 0), "tree_live_gzip_cpu_ms": med("live", 1),
        "tree_live_gzip_ms_spread": spread([s[0] for s in samples["live"]]),
        "tree_bytes": len(first.data),
        "tree_gzip_bytes": len(tree(gzip=True).data),
        "metrics_cold_ms": round(metrics_cold, 2), "metrics_cold_cpu_ms": round(metrics_cold_cpu, 2),
        "metrics_gzip_ms": round(median([m[0] for m in metrics_warm]), 2),
        "metrics_gzip_cpu_ms": round(median([m[1] for m in metrics_warm]), 2),
        "metrics_bytes": len(metrics_plain.data), "metrics_gzip_bytes": len(metrics().data),
        "t_tree": [s[0] for s in samples["plain"]],
    }


def _headline(out: dict[str, Any], entry: dict[str, Any], nodes: int, suffix: str = "") -> None:
    out[f"tree_route_ms_{nodes}_nodes{suffix}"] = entry["tree_ms"]
    out[f"tree_route_cold_ms_{nodes}_nodes{suffix}"] = entry["tree_cold_ms"]
    out[f"tree_route_cold_cpu_ms_{nodes}_nodes{suffix}"] = entry["tree_cold_cpu_ms"]
    out[f"tree_route_gzip_ms_{nodes}_nodes{suffix}"] = entry["tree_gzip_ms"]
    out[f"tree_route_live_gzip_ms_{nodes}_nodes{suffix}"] = entry["tree_live_gzip_ms"]
    out[f"metrics_route_cold_ms_{nodes}_nodes{suffix}"] = entry["metrics_cold_ms"]
    out[f"metrics_route_gzip_ms_{nodes}_nodes{suffix}"] = entry["metrics_gzip_ms"]


def routes(served: Served, *, reps: int, profile: bool = True) -> dict[str, Any]:
    """Warm medians of the tree route and of the scalars routes over the same experiment."""
    from werkzeug.test import Client

    client = Client(served.app)
    out: dict[str, Any] = {"sizes": {}}
    for nodes in served.sizes:
        name = name_of(nodes)
        entry = tree_rows(client, served.root, name, nodes, reps=reps)
        runs = entry.pop("runs")
        t_tree = entry.pop("t_tree")

        def tree(name: str = name) -> Any:
            r = client.get(f"/data/plugin/retune/tree?experiment={name}")
            assert r.status_code == 200, r.data[:300]
            return r

        def multirun(runs: list[str] = runs) -> Any:
            # What the Scalars dashboard asks for to show the experiment's branches.
            r = client.post("/data/plugin/scalars/scalars_multirun", data={"tag": "loss", "runs": runs})
            assert r.status_code == 200, r.data[:300]
            return r

        def single(run: str = runs[0]) -> Any:
            r = client.get(f"/data/plugin/scalars/scalars?run={run}&tag=loss")
            assert r.status_code == 200, r.data[:300]
            return r

        multirun()
        single()
        t_tree = []
        t_multi: list[float] = []
        t_single: list[float] = []
        for i in range(reps):
            calls = [(tree, t_tree), (multirun, t_multi), (single, t_single)]
            if i % 2:
                calls.reverse()
            for fn, into in calls:
                dt, _ = timed(fn)
                into.append(dt * 1000)
        entry.update({
            "scalars_multirun_ms": round(median(t_multi), 2),
            "scalars_multirun_bytes": len(multirun().data),
            "scalars_single_run_ms": round(median(t_single), 2),
            "tree_vs_scalars_multirun": round(median(pair_ratios(t_tree, t_multi)), 4),
            "tree_vs_scalars_single_run": round(median(pair_ratios(t_tree, t_single)), 4),
        })
        out["sizes"][nodes] = entry
        _headline(out, entry, nodes)
        log(f"  tree route {nodes} nodes: {entry['tree_ms']} ms warm ({entry['tree_gzip_ms']} gzip, "
            f"{entry['tree_live_gzip_ms']} gzip with a live status), {entry['tree_cold_ms']} ms cold "
            f"({entry['tree_cold_cpu_ms']} ms CPU); scalars over its {len(runs)} runs {entry['scalars_multirun_ms']} ms")
    head = out["sizes"].get(1000) or out["sizes"][max(out["sizes"])]
    out["scalars_route_ms_same_logdir"] = head["scalars_multirun_ms"]
    out["scalars_single_run_route_ms_same_logdir"] = head["scalars_single_run_ms"]
    out["tree_vs_scalars_route"] = head["tree_vs_scalars_multirun"]
    out["tree_vs_scalars_single_run_route"] = head["tree_vs_scalars_single_run"]
    t_exp, _ = timed(lambda: client.get("/data/plugin/retune/experiments"))
    out["experiments_route_ms"] = round(t_exp * 1000, 2)
    if profile:
        # Where a warm tree request of the largest experiment spends its time.
        big = name_of(max(served.sizes))
        out["profile_tree_warm"] = profile_top(
            lambda: client.get(f"/data/plugin/retune/tree?experiment={big}"))
    return out


def rust_routes(served: Served, *, reps: int) -> dict[str, Any]:
    """The tree route of the largest experiment over TensorBoard's Rust data server
    (``--load_fast=auto``, its default), in a WSGI app of its own over the same logdir."""
    from tensorboard import context
    from tensorboard.backend import application
    from werkzeug.test import Client

    from tb_retune.plugin.loader import RetuneLoader
    from tb_retune.reader.experiments import ExperimentStore
    from tb_retune.testing.data_server import RustDataServer, server_binary

    if server_binary() is None:
        log("  no Rust data server installed; skipping")
        return {"sizes": {}}
    nodes = max(served.sizes)
    name = name_of(nodes)
    out: dict[str, Any] = {"sizes": {}}
    with RustDataServer(served.root, reload_s=0) as server:
        # Wait until the server has loaded the experiment (a store of its own, so the app's starts cold).
        probe = ExperimentStore(server.provider, served.root)
        load_s, _ = timed(lambda: _wait_loaded(probe, context.RequestContext(), name, nodes))
        flags = argparse.Namespace(logdir=served.root, path_prefix="", samples_per_plugin={}, window_title="")
        app = application.TensorBoardWSGIApp(flags, [RetuneLoader()], server.provider)
        entry = tree_rows(Client(app), served.root, name, nodes, reps=reps)
        entry.pop("runs")
        entry.pop("t_tree")
        entry["server_load_s"] = round(load_s, 1)
    out["sizes"][nodes] = entry
    _headline(out, entry, nodes, "_rust")
    log(f"  tree route over the Rust data server, {nodes} nodes: {entry['tree_ms']} ms warm "
        f"({entry['tree_gzip_ms']} gzip, {entry['tree_live_gzip_ms']} live), {entry['tree_cold_ms']} ms cold "
        f"({entry['tree_cold_cpu_ms']} ms CPU in this process)")
    return out


def _wait_loaded(store: Any, ctx: Any, name: str, nodes: int, timeout: float = 600.0) -> None:
    deadline = time.monotonic() + timeout
    while True:
        try:
            if len(store.tree(ctx, name)["nodes"]) == nodes:
                return
        except LookupError:
            pass  # not listed yet
        if time.monotonic() > deadline:
            raise TimeoutError(f"the Rust data server did not load {name} within {timeout} s")
        time.sleep(0.5)


_RENDERED = """(n) => {
  const w = window;
  if (w.__retuneLastRenderNodes !== n || w.__retuneLastPaintAt === undefined) return null;
  const fetches = performance.getEntriesByType("resource").filter((e) => e.name.includes("/tree?"));
  return {
    render_ms: w.__retuneLastRenderMs, paint_ms: w.__retuneLastPaintMs, visible_ms: w.__retuneLastPaintAt,
    renders: w.__retuneRenderCount, nodes: w.__retuneLastRenderNodes,
    svg_nodes: document.querySelectorAll("svg.tree g.node").length,
    tree_fetch_ms: fetches.length ? fetches[fetches.length - 1].duration : null,
  };
}"""

_VISIBLE = """(n) => document.querySelectorAll("svg.tree g.node").length > 0
  && document.querySelector("svg.tree") !== null ? performance.now() : null"""

_METRICS = """(n) => { const a = window.__retuneApp;
  return a && a.state.metrics && Object.keys(a.state.metrics.metrics || {}).length === n ? performance.now() : null; }"""


def tab(served: Served, *, reps: dict[int, int]) -> dict[str, Any]:
    """The Retune tab in headless Chromium: render, paint and time to a visible tree, per size."""
    from playwright.sync_api import sync_playwright
    from werkzeug.serving import WSGIRequestHandler, make_server

    class Quiet(WSGIRequestHandler):
        def log(self, *args: Any, **kwargs: Any) -> None:
            pass

    server = make_server("127.0.0.1", 0, served.app, threaded=True, request_handler=Quiet)
    thread = threading.Thread(target=server.serve_forever, name="bench-http", daemon=True)
    thread.start()
    base = f"http://127.0.0.1:{server.server_port}"
    out: dict[str, Any] = {"sizes": {}}
    try:
        with sync_playwright() as p:
            browser = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
            out["chromium"] = browser.version
            try:
                for nodes in served.sizes:
                    name = name_of(nodes)
                    context = browser.new_context(viewport={"width": 1400, "height": 900})
                    # The tab opens the experiment it showed last (kept in localStorage).
                    context.add_init_script(
                        f"try {{ localStorage.setItem('tb-retune.experiment', {json.dumps(name)}); }} catch (e) {{}}")
                    page = context.new_page()
                    samples: list[dict[str, Any]] = []
                    timeout = 120_000 if nodes >= 10000 else 30_000
                    for i in range(reps.get(nodes, 3) + 1):  # the first load warms caches and is dropped
                        page.goto(f"{base}/data/plugin_entry.html?name=retune")
                        page.wait_for_function(_VISIBLE, arg=nodes, timeout=timeout)
                        # The first frame painted with the tree, on the page's clock (0 = the navigation's start).
                        got = page.wait_for_function(_RENDERED, arg=nodes, timeout=timeout).json_value()
                        # And then the metrics (the branch table's figures, the node card's), not drawn in the tree.
                        got["metrics_ms"] = page.wait_for_function(_METRICS, arg=nodes, timeout=timeout).json_value()
                        if i:
                            samples.append(got)
                    context.close()
                    entry = {
                        "loads": len(samples),
                        "paint_ms": round(median([s["paint_ms"] for s in samples]), 2),
                        "render_js_ms": round(median([s["render_ms"] for s in samples]), 2),
                        "navigation_to_tree_ms": round(median([s["visible_ms"] for s in samples]), 2),
                        "navigation_to_tree_ms_all": [round(s["visible_ms"], 1) for s in samples],
                        "navigation_to_metrics_ms": round(median([s["metrics_ms"] for s in samples]), 2),
                        "tree_fetch_ms": round(median([s["tree_fetch_ms"] or 0.0 for s in samples]), 2),
                        "layout_nodes": samples[-1]["nodes"],
                        "svg_node_elements": samples[-1]["svg_nodes"],
                        "paint_ms_all": [round(s["paint_ms"], 1) for s in samples],
                    }
                    out["sizes"][nodes] = entry
                    out[f"tab_render_ms_{nodes}_nodes"] = entry["paint_ms"]
                    out[f"tab_navigation_ms_{nodes}_nodes"] = entry["navigation_to_tree_ms"]
                    log(f"  tab {nodes} nodes: paint {entry['paint_ms']} ms (JS {entry['render_js_ms']} ms), "
                        f"tree visible {entry['navigation_to_tree_ms']} ms after navigation, metrics at "
                        f"{entry['navigation_to_metrics_ms']} ms")
            finally:
                browser.close()
    finally:
        server.shutdown()
        thread.join(timeout=10)
    return out
