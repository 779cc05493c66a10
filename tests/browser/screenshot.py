"""Takes the README's screenshot of the Retune tab: ``docs/screenshot-tab.png``.

Writes a synthetic experiment (the trainer's own writers), starts a real
TensorBoard on it, opens the Retune tab in headless Chromium and saves the
page. Run from the repository root:

    .venv/bin/python tests/browser/screenshot.py [--out docs/screenshot-tab.png]
"""

from __future__ import annotations

import os
import sys
import tempfile

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))
sys.path.insert(0, HERE)
sys.path.insert(0, ROOT)

import support  # noqa: E402


def main(argv: list[str] | None = None) -> int:
    parser = support.screenshot_arguments(__doc__.split("\n\n")[0], os.path.join(ROOT, "docs", "screenshot-tab.png"))
    parser.add_argument("--seed", type=int, default=3)
    parser.add_argument("--node", default=None, help="node to select (default: the current one)")
    args = parser.parse_args(argv)

    from tb_retune.testing.synthetic import make_experiment

    with tempfile.TemporaryDirectory(prefix="retune-shot-") as tmp:
        logdir = os.path.join(tmp, "logs")
        tb = support.TensorBoard(logdir).start()
        try:
            make_experiment(os.path.join(logdir, "mnist"), branches=4, nodes=11, steps_per_node=400, seed=args.seed)
            base = tb.wait_ready(("mnist",))
            with support.chromium_page(args.width, args.height) as page:
                frame = support.open_tab(page, base, experiment="mnist")
                frame.get_by_role("button", name="Fit the tree to the view").click()
                if args.node:
                    frame.click(f'svg.tree g.node[data-id="{args.node}"]')
                frame.wait_for_selector(".node-card svg.chart path.series")
                support.save_screenshot(page, args.out)
        finally:
            tb.stop()
    print(args.out)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
