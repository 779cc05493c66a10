"""Takes ``docs/screenshot-restore.png``: the Retune tab on the real demo after a restore.

Runs what ``tests/test_e2e.py`` runs (``demo/run.py`` as a trainer process, a
real ``tensorboard``, headless Chromium) and acts through the tab: raises the
learning rate with the form, restores the state just before that change as a
new branch (with another learning rate), changes the momentum on the new
branch, then selects the restored node and saves the page. Run from the
repository root:

    .venv/bin/python tests/browser/e2e_screenshot.py [--out docs/screenshot-restore.png]
"""

from __future__ import annotations

import os
import sys
import tempfile
from pathlib import Path

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))
sys.path.insert(0, ROOT)

from tests import test_e2e as e2e  # noqa: E402
from tests.browser import support  # noqa: E402


def main(argv: list[str] | None = None) -> int:
    parser = support.screenshot_arguments(__doc__.split("\n\n")[0], os.path.join(ROOT, "docs", "screenshot-restore.png"))
    args = parser.parse_args(argv)

    with tempfile.TemporaryDirectory(prefix="retune-e2e-shot-") as tmp:
        loop = e2e.Loop(Path(tmp))
        try:
            loop.tb = support.TensorBoard(str(loop.root / "runs")).start()
            loop.start_trainer()
            loop.wait_steps("the trainer to train", 0, timeout=120)
            base = loop.tb.wait_ready((e2e.EXPERIMENT,), timeout=120)
            with support.chromium_page(args.width, args.height) as page:
                page.set_default_timeout(30000)
                loop.page = page
                frame = support.open_tab(page, base, timeout_ms=60000, experiment=e2e.EXPERIMENT)
                epoch = 45  # steps

                def set_hp(name: str, value: str) -> None:
                    field = frame.locator(f"#hp-{name}")
                    field.fill(value)
                    frame.get_by_role("button", name="Apply").click()
                    loop.wait(f"{name} {value} in force",
                              lambda: str(loop.status()["hyperparameters"][name]) == value, 30)

                loop.wait_steps("three epochs", 3 * epoch)
                set_hp("learning_rate", "0.02")
                change = [a for a in loop.status()["applied"] if a["kind"] == "control"][-1]["step"]
                loop.wait_steps("six epochs at the new rate", change + 6 * epoch)
                e2e._select_node(loop, frame, "main-1")
                frame.fill("input.restore-hps", "learning_rate=0.01")
                frame.get_by_role("button", name=f"Restore step {change}").click()
                branch = f"main-s{change}"
                loop.wait("the new branch", lambda: loop.status().get("branch") == branch, 30)
                loop.wait_steps("four epochs on the new branch", change + 4 * epoch)
                set_hp("momentum", "0.9")
                moved = loop.status()["step"]
                loop.wait_steps("three epochs more", moved + 3 * epoch)
                e2e._select_node(loop, frame, f"{branch}-1")
                frame.get_by_role("button", name="Fit the tree to the view").click()
                frame.wait_for_selector(".node-card svg.chart path.series")
                # Keep the restore's banner only; the node card from its top.
                others = frame.locator(".banner:not(:has-text('restore')) button.close")
                while others.count():  # each click redraws the banners
                    others.first.click()
                frame.evaluate("document.querySelector('.side').scrollTop = 0")
                page.mouse.move(args.width // 3, args.height - 40)
                support.save_screenshot(page, args.out)
            loop.save_control(dict(loop.control(), stop=True))
            loop.trainer.process.wait(timeout=60)
        except BaseException:
            print(loop.report(), file=sys.stderr)
            raise
        finally:
            loop.stop()
    print(args.out)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
