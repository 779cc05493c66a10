"""Takes the README's screenshots of comparing branches, into ``docs/``.

One synthetic experiment of 50 nodes over 6 branches (the trainer's own
writers, HParams sessions included), a real TensorBoard, headless Chromium:

- ``screenshot-tree.png``: the 50-node tree, runs of changes collapsed into groups;
- ``screenshot-tree-dark.png``: the same in TensorBoard's dark mode;
- ``screenshot-steps.png``: the step-axis layout;
- ``screenshot-branches.png``: the branch table sorted by the best val_loss;
- ``screenshot-hparams.png``: TensorBoard's own HParams dashboard listing every branch.

    .venv/bin/python tests/browser/screenshots_compare.py [--out-dir docs]
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))
sys.path.insert(0, HERE)
sys.path.insert(0, ROOT)

import support  # noqa: E402


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out-dir", default=os.path.join(ROOT, "docs"))
    parser.add_argument("--width", type=int, default=1600)
    parser.add_argument("--height", type=int, default=900)
    args = parser.parse_args(argv)
    out = lambda name: os.path.join(args.out_dir, name)  # noqa: E731

    from tb_retune.testing.synthetic import make_experiment

    with tempfile.TemporaryDirectory(prefix="retune-shots-") as tmp:
        logdir = os.path.join(tmp, "logs")
        tb = support.TensorBoard(logdir).start()
        try:
            make_experiment(os.path.join(logdir, "mnist"), branches=6, nodes=50, steps_per_node=60, seed=11,
                            alive=False, hparams=True)
            base = tb.wait_ready(("mnist",))
            with support.chromium_page(args.width, args.height) as page:
                frame = support.open_tab(page, base, experiment="mnist")
                frame.get_by_role("button", name="Fit the tree to the view").click()
                frame.wait_for_selector(".node-card svg.chart path.series")
                support.save_screenshot(page, out("screenshot-tree.png"))
                page.evaluate("document.body.classList.add('dark-mode')")  # what TensorBoard's toggle does
                frame.wait_for_function("document.documentElement.dataset.theme === 'dark'")
                support.save_screenshot(page, out("screenshot-tree-dark.png"))
                page.evaluate("document.body.classList.remove('dark-mode')")
                frame.get_by_role("button", name="Steps", exact=True).click()
                frame.wait_for_selector("svg.tree.steps g.node")
                frame.get_by_role("button", name="Fit the tree to the view").click()
                support.save_screenshot(page, out("screenshot-steps.png"))
                frame.get_by_role("button", name="Branches", exact=True).click()
                frame.click('.branch-table th[data-col="val_loss:best"]')
                support.save_screenshot(page, out("screenshot-branches.png"))
                page.goto(f"{base}/#hparams")
                page.wait_for_selector("text=mnist/main", timeout=60000)
                support.save_screenshot(page, out("screenshot-hparams.png"))
        finally:
            tb.stop()
    for name in ("tree", "tree-dark", "steps", "branches", "hparams"):
        print(out(f"screenshot-{name}.png"))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
