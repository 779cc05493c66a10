"""Takes the README's screenshot of the Retune tab: ``docs/screenshot-tab.png``.

Writes a synthetic experiment (the trainer's own writers), starts a real
TensorBoard on it, opens the Retune tab in headless Chromium and saves the
page. Run from the repository root:

    .venv/bin/python tests/browser/screenshot.py [--out docs/screenshot-tab.png]
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))
sys.path.insert(0, HERE)
sys.path.insert(0, ROOT)

import support  # noqa: E402


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", default=os.path.join(ROOT, "docs", "screenshot-tab.png"))
    parser.add_argument("--width", type=int, default=1600)
    parser.add_argument("--height", type=int, default=900)
    parser.add_argument("--seed", type=int, default=3)
    parser.add_argument("--node", default=None, help="node to select (default: the current one)")
    args = parser.parse_args(argv)

    from playwright.sync_api import sync_playwright

    from tb_retune._synthetic import make_experiment

    with tempfile.TemporaryDirectory(prefix="retune-shot-") as tmp:
        logdir = os.path.join(tmp, "logs")
        tb = support.TensorBoard(logdir).start()
        try:
            make_experiment(os.path.join(logdir, "mnist"), branches=4, nodes=11, steps_per_node=400, seed=args.seed)
            base = tb.wait_ready(("mnist",))
            with sync_playwright() as p:
                browser = support.launch_chromium(p)
                try:
                    page = browser.new_page(viewport={"width": args.width, "height": args.height})
                    frame = support.open_tab(page, base, experiment="mnist")
                    frame.get_by_role("button", name="Fit the tree to the view").click()
                    if args.node:
                        frame.click(f'svg.tree g.node[data-id="{args.node}"]')
                    frame.wait_for_selector(".node-card svg.chart path.series")
                    time.sleep(1.0)  # fonts, the last frame
                    os.makedirs(os.path.dirname(os.path.abspath(args.out)), exist_ok=True)
                    page.screenshot(path=args.out)
                finally:
                    browser.close()
        finally:
            tb.stop()
    print(args.out)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
