"""tb-retune's benchmarks, each side by side with what a person would use instead.

Usage:
    python benchmarks/run.py                          # everything, then the table
    python benchmarks/run.py --quick --json bench.json  # the short version (under 3 minutes on 2 cores)
    python benchmarks/run.py --only fit,latency       # some sections

Everything runs in this one process, against real things: real ``fit`` on a
small MLP, real files and watchdog events, the real plugin in TensorBoard's
WSGI app over a real data provider, the real tab in headless Chromium. Results
are ratios (ours / theirs, < 1 means tb-retune is faster) of runs interleaved
with each other, so they hold on a noisy shared machine where absolute times
drift. See benchmarks/README.md for how to read the table.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
import time
from typing import Any

# Runnable as a script from anywhere: the repository root on the path.
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

SECTIONS = ("fit", "latency", "checkpoint", "plugin", "tab", "table", "backends", "storage", "workers")
#: Sections that run as part of another (``plugin_rust`` with ``plugin``).
_SUBSECTIONS = ("plugin_rust",)

#: key -> (comparison, bound). ``<=``/``<``: the value must not exceed the bound.
TARGETS: dict[str, tuple[str, float]] = {
    "overhead_vs_tensorboard_callback": ("<=", 1.0),
    "overhead_vs_bare_fit": ("<=", 1.03),
    "retune_fixed_ms_per_fit": ("<=", 15.0),
    "control_latency_ms_p99": ("<=", 20.0),
    "checkpoint_vs_save_weights": ("<=", 1.2),
    "checkpoint_training_thread_vs_save_weights": ("<=", 0.3),
    "checkpoint_vs_save_weights_fsynced": ("<=", 1.0),
    "background_write_memory_vs_state": ("<=", 2.0),
    "restore_vs_load_weights": ("<=", 1.2),
    "tab_render_ms_1000_nodes": ("<", 300.0),
    "table_render_ms_1000_branches": ("<", 100.0),
    "tree_route_ms_10000_nodes": ("<=", 100.0),
    "tree_route_gzip_ms_10000_nodes": ("<=", 120.0),
    "tree_route_cold_ms_10000_nodes": ("<=", 1500.0),
    "tab_render_ms_10000_nodes": ("<=", 150.0),
    "tab_navigation_ms_10000_nodes": ("<=", 500.0),
}

#: target key -> the profiles (by name prefix) that explain it when it is missed.
PROFILE_OF = {
    "overhead_vs_tensorboard_callback": "fit.",
    "overhead_vs_bare_fit": "fit.",
    "retune_fixed_ms_per_fit": "fit.",
    "control_latency_ms_p99": "latency.",
    "checkpoint_vs_save_weights": "checkpoint.profile_save",
    "checkpoint_vs_save_weights_fsynced": "checkpoint.profile_save",
    "restore_vs_load_weights": "checkpoint.profile_load",
    "tab_render_ms_1000_nodes": "plugin.",
    "table_render_ms_1000_branches": "table.",
    "tree_route_ms_10000_nodes": "plugin.",
    "tree_route_gzip_ms_10000_nodes": "plugin.",
    "tree_route_cold_ms_10000_nodes": "plugin.",
    "tab_render_ms_10000_nodes": "tab.",
    "tab_navigation_ms_10000_nodes": "tab.",
}

#: The rows of the table: (key, what it is, unit).
ROWS: list[tuple[str, str, str]] = [
    ("overhead_vs_tensorboard_callback", "fit + RetuneCallback (ckpt each epoch) / fit + TensorBoard callback, "
     "CPU time (direct)", "x"),
    ("overhead_vs_tensorboard_cpu_pairs", "  the same, median of interleaved pairs, process CPU time", "x"),
    ("overhead_vs_tensorboard_wall_pairs", "  the same, median of interleaved pairs, wall time", "x"),
    ("overhead_vs_bare_fit", "fit + RetuneCallback (no epoch ckpt) / bare fit, CPU time (direct)", "x"),
    ("overhead_vs_bare_fit_cpu_pairs", "  the same, median of interleaved pairs, process CPU time", "x"),
    ("overhead_vs_bare_fit_wall_pairs", "  the same, median of interleaved pairs, wall time", "x"),
    ("overhead_vs_bare_fit_from_hooks", "  1 + time inside RetuneCallback's hooks / bare fit", "x"),
    ("retune_fixed_ms_per_fit", "  of which on_train_begin + on_train_end", "ms"),
    ("retune_ms_per_epoch", "  of which per epoch (scalars, status)", "ms"),
    ("retune_ms_per_epoch_with_checkpoint", "  per epoch with the default epoch checkpoint", "ms"),
    ("retune_us_per_batch", "  of which per batch (on_train_batch_begin), microseconds", "us"),
    ("overhead_with_checkpoints_vs_bare", "fit + RetuneCallback (ckpt each epoch) / bare fit", "x"),
    ("overhead_vs_tensorboard_nograph", "fit + RetuneCallback / fit + TensorBoard(write_graph=False)", "x"),
    ("control_latency_ms_p50", "save of retune.json -> new lr in the optimizer, p50", "ms"),
    ("control_latency_ms_p99", "save of retune.json -> new lr in the optimizer, p99", "ms"),
    *[(f"backend_{key}_{b}", f"{what}, KERAS_BACKEND={b}", unit) for b in ("tensorflow", "jax", "torch")
      for key, what, unit in (("overhead_vs_bare_fit", "fit + RetuneCallback (no epoch ckpt) / bare fit", "x"),
                              ("control_latency_ms_p99", "save of retune.json -> new lr in force, p99", "ms"),
                              ("rejit_ms", "a change that rebuilds the compiled step: extra ms", "ms"),
                              ("rejit_vs_step", "  the same, as a multiple of one step", "x"))],
    ("checkpoint_vs_save_weights", "CheckpointStore.save / model.save_weights (worst size)", "x"),
    ("checkpoint_vs_save_weights_small", "  small MLP (7 k params)", "x"),
    ("checkpoint_vs_save_weights_medium", "  1 M params", "x"),
    ("checkpoint_vs_save_weights_large", "  17 M params", "x"),
    ("checkpoint_vs_save_weights_fsynced", "CheckpointStore.save / (save_weights + fsync) (worst size)", "x"),
    ("checkpoint_training_thread_vs_save_weights", "what fit pays (copy; written by a background thread) / save_weights (worst size)", "x"),
    ("checkpoint_vs_save_weights_fsynced_cpu_large", "  durable write at 17 M params, in process CPU time", "x"),
    ("checkpoint_training_thread_vs_save_weights_cpu_large", "  what fit pays at 17 M params, in process CPU time", "x"),
    ("checkpoint_vs_save_weights_fsynced_xl", "  durable write at 101 M params", "x"),
    ("checkpoint_training_thread_vs_save_weights_xl", "  what fit pays at 101 M params", "x"),
    ("background_write_memory_vs_state", "peak memory during a background write / model state (101 M params)", "x"),
    ("restore_vs_load_weights", "CheckpointStore.load / model.load_weights (worst size)", "x"),
    ("restore_vs_load_weights_small", "  small MLP (7 k params)", "x"),
    ("restore_vs_load_weights_medium", "  1 M params", "x"),
    ("restore_vs_load_weights_large", "  17 M params", "x"),
    ("tree_route_ms_100_nodes", "tree route, warm, 100 nodes / 10 branches", "ms"),
    ("tree_route_ms_1000_nodes", "tree route, warm, 1,000 nodes / 100 branches", "ms"),
    ("tree_route_ms_10000_nodes", "tree route, warm, 10,000 nodes / 1,000 branches", "ms"),
    ("tree_route_gzip_ms_10000_nodes", "  as a browser asks for it (gzip), warm", "ms"),
    ("tree_route_live_gzip_ms_10000_nodes", "  gzip, the status file rewritten before each request (a live trainer)", "ms"),
    ("tree_route_cold_ms_10000_nodes", "  cold (the first request)", "ms"),
    ("tree_route_cold_cpu_ms_10000_nodes", "  cold, CPU time of this process", "ms"),
    ("metrics_route_cold_ms_10000_nodes", "metrics route (what the tree leaves out), 10,000 nodes, cold: right after the tree", "ms"),
    ("metrics_route_gzip_ms_10000_nodes", "  warm, gzip", "ms"),
    ("tree_route_ms_10000_nodes_rust", "tree route over the Rust data server, warm, 10,000 nodes", "ms"),
    ("tree_route_gzip_ms_10000_nodes_rust", "  gzip, warm", "ms"),
    ("tree_route_live_gzip_ms_10000_nodes_rust", "  gzip, a live trainer", "ms"),
    ("tree_route_cold_ms_10000_nodes_rust", "  cold (the server loaded)", "ms"),
    ("tree_route_cold_cpu_ms_10000_nodes_rust", "  cold, CPU time of this process (not the server's)", "ms"),
    ("scalars_route_ms_same_logdir", "TensorBoard scalars_multirun, loss of the same 100 runs", "ms"),
    ("tree_vs_scalars_route", "tree route / scalars_multirun (1,000 nodes)", "x"),
    ("scalars_single_run_route_ms_same_logdir", "TensorBoard scalars route, one run, loss", "ms"),
    ("tree_vs_scalars_single_run_route", "tree route / scalars route of one run (1,000 nodes)", "x"),
    ("tab_render_ms_100_nodes", "tab: render + paint, 100 nodes", "ms"),
    ("tab_render_ms_1000_nodes", "tab: render + paint, 1,000 nodes", "ms"),
    ("tab_render_ms_10000_nodes", "tab: render + paint, 10,000 nodes", "ms"),
    ("tab_navigation_ms_10000_nodes", "tab: navigation to the tree painted, 10,000 nodes", "ms"),
    ("table_render_ms_1000_branches", "tab: branch table of 1,000 branches, sort + paint", "ms"),
    ("storage_postgres_vs_journal", "study storage per trial (ask + 5 reports + tell): PostgreSQL / journal file", "x"),
    ("storage_ms_per_trial_journal", "  journal file (fsync per write), per trial", "ms"),
    ("storage_ms_per_trial_postgres", "  PostgreSQL on 127.0.0.1 (fsync on), per trial", "ms"),
    ("workers_speedup_2_processes", "a 12-trial search, speed-up t1 / t2: the trainer + 1 tb-retune worker", "x"),
    ("workers_speedup_3_processes", "  t1 / t3: the trainer + 2 workers", "x"),
    ("workers_search_s_1_process", "  the search on the trainer alone, seconds", "s"),
    ("workers_trial_overhead_ms", "  a trial beyond its steps' sleeps, the trainer alone", "ms"),
]


def _check(key: str, value: Any) -> str:
    target = TARGETS.get(key)
    if target is None or not isinstance(value, (int, float)) or math.isnan(value):
        return ""
    op, bound = target
    ok = value <= bound if op == "<=" else value < bound
    return "yes" if ok else "NO"


def _fmt(value: Any, unit: str) -> str:
    if not isinstance(value, (int, float)):
        return "-"
    if unit == "x":
        return f"{value:.3f}"
    return f"{value:.1f}" if value < 1000 else f"{value:,.0f}"


def table(result: dict[str, Any]) -> str:
    lines = [
        "| metric | what | value | target | met |",
        "|---|---|---:|---|---|",
    ]
    for key, what, unit in ROWS:
        if key not in result:
            continue
        target = TARGETS.get(key)
        t = f"{target[0]} {target[1]:g}" if target else ""
        lines.append(f"| `{key}` | {what} | {_fmt(result[key], unit)} {unit if unit in ('ms', 'us') else ''}".rstrip()
                     + f" | {t} | {_check(key, result[key])} |")
    return "\n".join(lines)


def growth_table(result: dict[str, Any]) -> str:
    routes = result.get("details", {}).get("plugin", {}).get("sizes", {})
    tab = result.get("details", {}).get("tab", {}).get("sizes", {})
    if not routes and not tab:
        return ""
    lines = [
        "| nodes | branches | tree route warm ms | cold ms (CPU) | JSON KiB | with gzip ms (KiB) | gzip, live status ms | metrics route cold ms (CPU) / warm gzip ms (KiB) | scalars_multirun ms | tab paint ms | tab JS ms | tree visible after navigation ms | metrics in after ms |",
        "|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for nodes in sorted({int(n) for n in list(routes) + list(tab)}):
        r = routes.get(nodes) or routes.get(str(nodes)) or {}
        t = tab.get(nodes) or tab.get(str(nodes)) or {}
        lines.append(
            f"| {nodes:,} | {r.get('branches', '-')} | {r.get('tree_ms', '-')} | {r.get('tree_cold_ms', '-')} "
            f"({r.get('tree_cold_cpu_ms', '-')}) | "
            f"{round(r['tree_bytes'] / 1024) if 'tree_bytes' in r else '-'} | "
            f"{r.get('tree_gzip_ms', '-')} ({round(r['tree_gzip_bytes'] / 1024) if 'tree_gzip_bytes' in r else '-'}) | "
            f"{r.get('tree_live_gzip_ms', '-')} | "
            f"{r.get('metrics_cold_ms', '-')} ({r.get('metrics_cold_cpu_ms', '-')}) / {r.get('metrics_gzip_ms', '-')} "
            f"({round(r['metrics_gzip_bytes'] / 1024) if 'metrics_gzip_bytes' in r else '-'}) | "
            f"{r.get('scalars_multirun_ms', '-')} | "
            f"{t.get('paint_ms', '-')} | {t.get('render_js_ms', '-')} | {t.get('navigation_to_tree_ms', '-')} | "
            f"{t.get('navigation_to_metrics_ms', '-')} |"
        )
    return "\n".join(lines)


def checkpoint_table(result: dict[str, Any]) -> str:
    sizes = result.get("details", {}).get("checkpoint", {}).get("sizes", {})
    if not sizes:
        return ""
    lines = [
        "| size | params | file MiB | save ms (ours: fit pays + writer / save_weights / +fsync) "
        "| load ms (ours / load_weights) | fit pays x (spread) | durable x (spread) | load x (spread) |",
        "|---|---:|---:|---|---|---|---|---|",
    ]
    for name, e in sizes.items():
        s, lo = e["save_ms"], e["load_ms"]
        lines.append(
            f"| {name} | {e['params']:,} | {e['file_mb']['ours']} | {s['ours']} ({s.get('ours_training_thread')} + "
            f"{s.get('ours_writer_thread')}) / {s['save_weights']} / {s['save_weights+fsync']} | "
            f"{lo['ours']} / {lo['load_weights']} | "
            f"{e['checkpoint_training_thread_vs_save_weights']:.3f} ({e.get('training_thread_ratio_spread', '-')}) | "
            f"{e['checkpoint_vs_save_weights_fsynced']:.3f} ({e.get('fsynced_ratio_spread', '-')}) | "
            f"{e['restore_vs_load_weights']:.3f} ({e.get('load_ratio_spread', '-')}) |"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="the short version (under 3 minutes on 2 cores)")
    parser.add_argument("--json", metavar="FILE", help="write the results as JSON to FILE")
    parser.add_argument("--only", default=",".join(SECTIONS),
                        help=f"comma-separated sections to run, of {', '.join(SECTIONS)}")
    parser.add_argument("--no-profile", action="store_true", help="skip the cProfile breakdowns")
    parser.add_argument("--tree-sizes", metavar="N,N", help="node counts of the big trees (default: 100,1000; "
                        "full mode adds 10000), e.g. --only plugin --tree-sizes 10000")
    parser.add_argument("--busy-core", action="store_true",
                        help="keep one core busy with a spinning child process during the run (the busy machine "
                             "that the stability targets are stated for)")
    args = parser.parse_args(argv)
    if args.busy_core:
        from benchmarks._common import busy_core

        with busy_core():
            return _main(parser, args)
    return _main(parser, args)


def _main(parser: argparse.ArgumentParser, args: argparse.Namespace) -> int:
    only = [s.strip() for s in args.only.split(",") if s.strip()]
    unknown = [s for s in only if s not in SECTIONS]
    if unknown:
        parser.error(f"unknown section(s) {', '.join(unknown)}; choose from {', '.join(SECTIONS)}")

    from benchmarks._common import log, machine, quiet

    quiet()
    started = time.perf_counter()
    quick = args.quick
    profile = not args.no_profile
    result: dict[str, Any] = {"mode": "quick" if quick else "full", "details": {}, "profiles": {}}
    info = machine()
    info["busy_core"] = bool(args.busy_core)

    def section(name: str, fn: Any) -> None:
        if name not in only and name not in _SUBSECTIONS:
            return
        log(f"[{time.perf_counter() - started:6.1f}s] {name} ...")
        t0 = time.perf_counter()
        out = fn()
        details = out.pop("details", None)
        for key in [k for k in out if k.startswith("profile")]:
            result["profiles"][f"{name}.{key}"] = out.pop(key)
        for key, value in out.items():
            if key == "sizes":
                continue
            result[key] = value
        result["details"][name] = {**(details or {}), **({"sizes": out["sizes"]} if "sizes" in out else {}),
                                   "seconds": round(time.perf_counter() - t0, 1)}

    if "fit" in only or "latency" in only:
        from benchmarks import bench_fit

        def fit() -> dict[str, Any]:
            out = bench_fit.overhead(pairs=5 if quick else 15, nograph=not quick, profile=profile,
                                     direct_runs=5 if quick else 9)
            d = out["details"]
            out["overhead_with_checkpoints_vs_bare"] = d["overhead_with_checkpoints_vs_bare"]
            if "overhead_vs_tensorboard_nograph" in d:
                out["overhead_vs_tensorboard_nograph"] = d["overhead_vs_tensorboard_nograph"]
            hooks = d["retune_hook_ms_per_fit"]
            nockpt, ckpt = hooks["retune_nockpt"], hooks["retune"]
            # Our own hooks, timed directly: far less noisy than the difference of two fits.
            out["overhead_vs_bare_fit_from_hooks"] = round(1 + nockpt["total"] / 1000 / d["wall_s_median"]["bare"], 4)
            out["retune_fixed_ms_per_fit"] = round(nockpt["on_train_begin"] + nockpt["on_train_end"], 1)
            out["retune_ms_per_epoch"] = round(nockpt["on_epoch_end"] / d["fit"]["epochs"], 2)
            out["retune_ms_per_epoch_with_checkpoint"] = round(ckpt["on_epoch_end"] / d["fit"]["epochs"], 2)
            out["retune_us_per_batch"] = round(nockpt["on_train_batch_begin"] * 1000 / d["fit"]["steps"], 2)
            if "profile_retune_nockpt_fit" in d:
                out["profile_retune_nockpt_fit"] = d.pop("profile_retune_nockpt_fit")
            return out

        section("fit", fit)

        def latency() -> dict[str, Any]:
            out = bench_fit.control_latency(saves=50 if quick else 200)
            if profile and out["control_latency_ms_p99"] > TARGETS["control_latency_ms_p99"][1]:
                from benchmarks._common import Profile

                # The training thread's side: RetuneCallback's batch hook, where changes are applied.
                prof = Profile()
                bench_fit.control_latency(saves=20, profiler=prof)
                out["profile_apply"] = prof.top()
            return out

        section("latency", latency)

    if "checkpoint" in only:
        from benchmarks import bench_checkpoint

        def checkpoint() -> dict[str, Any]:
            reps = {"small": 7, "medium": 5, "large": 7, "xl": 3} if quick else {"small": 15, "medium": 9, "large": 15, "xl": 5}
            out = bench_checkpoint.compare(reps=reps, profile=profile)
            for name, e in out["sizes"].items():
                for key in [k for k in e if k.startswith("profile")]:
                    out[f"{key}_{name}"] = e.pop(key)
            return out

        section("checkpoint", checkpoint)

    if "plugin" in only or "tab" in only:
        from benchmarks import bench_plugin

        sizes = [100, 1000] if quick else [100, 1000, 10000]
        if args.tree_sizes:
            sizes = [int(n) for n in args.tree_sizes.split(",")]
        log(f"[{time.perf_counter() - started:6.1f}s] writing a logdir of {bench_plugin.EXPERIMENTS} experiments "
            f"({', '.join(f'{n:,}' for n in sizes)} nodes and small ones) ...")
        served = bench_plugin.Served(sizes)
        result["details"]["logdir"] = {"experiments": bench_plugin.EXPERIMENTS, "write_s": round(served.write_s, 1),
                                       "multiplexer_load_s": round(served.load_s, 1)}
        try:
            section("plugin", lambda: bench_plugin.routes(served, reps=10 if quick else 30, profile=profile))
            if "plugin" in only:
                section("plugin_rust", lambda: bench_plugin.rust_routes(served, reps=10 if quick else 20))
            if "tab" in only:
                if not os.path.exists(bench_plugin.CHROMIUM):
                    log(f"no Chromium at {bench_plugin.CHROMIUM} (`make chromium`); skipping the tab")
                else:
                    reps = {100: 3, 1000: 5} if quick else {100: 10, 1000: 10, 10000: 5}
                    section("tab", lambda: bench_plugin.tab(served, reps=reps))
        finally:
            served.close()

    if "table" in only:
        from benchmarks import bench_plugin, bench_table

        if not os.path.exists(bench_plugin.CHROMIUM):
            log(f"no Chromium at {bench_plugin.CHROMIUM} (`make chromium`); skipping the branch table")
        else:
            section("table", lambda: bench_table.table(reps=5 if quick else 15, log=log))
    if "backends" in only:
        from benchmarks import bench_backends

        # One child process per Keras backend (Keras picks it at import), one after the other.
        section("backends", lambda: bench_backends.compare(quick))

    if "storage" in only:
        from benchmarks import bench_storage

        section("storage", lambda: bench_storage.compare(rounds=5 if quick else 11, trials=20 if quick else 50,
                                                         profile=profile))

    if "workers" in only:
        from benchmarks import bench_workers

        # A trainer process and tb-retune worker processes (each imports TensorFlow before its search).
        section("workers", lambda: bench_workers.compare(rounds=2 if quick else 3, log=log))

    result["seconds"] = round(time.perf_counter() - started, 1)
    info["loadavg_at_end"] = [round(x, 2) for x in os.getloadavg()]
    result["machine"] = info
    result["targets"] = {k: {"target": f"{op} {bound:g}", "value": result.get(k), "met": _check(k, result.get(k)) == "yes"}
                         for k, (op, bound) in TARGETS.items() if k in result}

    print()
    print(f"tb-retune benchmarks ({result['mode']}, {result['seconds']} s) on {info['nproc']} x {info['cpu']}, "
          f"Python {info['python']}, TensorFlow {info.get('tensorflow')}, load {info.get('loadavg_at_start')}"
          + (", one core kept busy (--busy-core)" if args.busy_core else ""))
    print()
    print(table(result))
    from benchmarks.bench_backends import table as backends_table

    per_backend = {k: v for k, v in result["details"].get("backends", {}).items() if k != "seconds"}
    for extra in (checkpoint_table(result), growth_table(result),
                  backends_table({"details": per_backend}) if per_backend else ""):
        if extra:
            print()
            print(extra)
    missed = [k for k, t in result["targets"].items() if not t["met"]]
    shown = [name for name in result["profiles"] if any(name.startswith(PROFILE_OF[k]) for k in missed)]
    if shown:
        print()
        print("Targets not met: " + ", ".join(missed) + ". Where the time goes (cProfile, own time in ms of")
        print("our code and what it calls, the largest first; the JSON has the call chains too):")
        for name in shown:
            print(f"  {name}:")
            for row in result["profiles"][name]["own"][:8]:
                print(f"    {row['own_ms']:>9.1f}  {row['calls']:>6}x  {row['function']}")
    if args.json:
        with open(args.json, "w", encoding="utf-8") as f:
            json.dump(result, f, indent=1, sort_keys=False)
            f.write("\n")
        print(f"\nwrote {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
