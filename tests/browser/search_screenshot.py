"""Takes the screenshot of the Retune tab's search card: ``docs/screenshot-search.png``.

Writes a synthetic experiment with a running search (the trainer's own
writers; ``make_experiment(search=...)``), starts a real TensorBoard on it,
opens the Retune tab in headless Chromium with the "Search from here" form
open on the search's source node, and saves the page. Run from the
repository root:

    .venv/bin/python tests/browser/search_screenshot.py [--out docs/screenshot-search.png]
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
    parser = support.screenshot_arguments(__doc__.split("\n\n")[0], os.path.join(ROOT, "docs", "screenshot-search.png"))
    parser.set_defaults(height=1100)
    args = parser.parse_args(argv)

    from tb_retune.testing.synthetic import make_experiment

    with tempfile.TemporaryDirectory(prefix="retune-shot-") as tmp:
        logdir = os.path.join(tmp, "logs")
        tb = support.TensorBoard(logdir).start()
        try:
            make_experiment(os.path.join(logdir, "mnist"), branches=2, nodes=4, steps_per_node=200, seed=11, search=6)
            base = tb.wait_ready(("mnist",))
            with support.chromium_page(args.width, args.height) as page:
                frame = support.open_tab(page, base, experiment="mnist")
                frame.wait_for_selector(".search-entry tr.trial-row")
                frame.get_by_role("button", name="Fit the tree to the view").click()
                frame.click('svg.tree g.node[data-id="main-1"]')
                frame.wait_for_function("() => document.querySelector('.node-card h2').textContent === 'main-1'")
                frame.click("button.search-open")
                frame.locator('form.search-form input[name="vary-nesterov"]').check()
                frame.evaluate("() => document.querySelector('.search-card').scrollIntoView()")
                support.save_screenshot(page, args.out)
        finally:
            tb.stop()
    print(args.out)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
