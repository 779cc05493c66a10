"""The whole loop as a person lives it, in real processes.

A trainer (``demo/run.py``, the digits MLP under ``RetuneCallback``), a real
``tensorboard`` on its logdir and a real headless Chromium on TensorBoard's
page, the Retune tab in its iframe. The test changes the learning rate with
the tab's form, restores an earlier checkpoint as a new branch with the tab's
button, saves a bad ``retune.json`` by hand, kills the trainer with SIGKILL
and starts it again, then stops it through the control file. Each step is
checked where a person would look: the tab, ``retune-status.json``, the
trainer's output and TensorBoard's own routes (``/data/runs``, the Scalars
plugin).

``tests/browser/e2e_screenshot.py`` drives the same processes to take
``docs/screenshot-restore.png``. ``TB_RETUNE_E2E_SLOWDOWN=2`` doubles every
wait, for a machine much slower than two loaded cores.
"""

from __future__ import annotations

import glob
import json
import os
import re
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.parse
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

try:  # tests/ as a package
    from tests.browser import support
except ImportError:  # tests/ on sys.path
    from browser import support  # type: ignore[no-redef]

pytestmark = [
    pytest.mark.slow,
    pytest.mark.browser,
    pytest.mark.skipif(
        not os.path.exists(support.CHROMIUM),
        reason=f"no Chromium at {support.CHROMIUM}: `make chromium` installs Debian's (apt-get install chromium)",
    ),
]

DEMO = Path(__file__).resolve().parent.parent / "demo" / "run.py"
EXPERIMENT = "digits"
# 1,437 training samples in batches of 32: 45 steps per epoch. 1,000 epochs
# in 20 minutes is ~27 ms per batch (~1.2 s per epoch, each ending with a
# checkpoint): slow enough to act between batches, and it never ends by
# itself within the test.
TRAINER_ARGS = ["--no-tensorboard", "--epochs", "1000", "--minutes", "20", "--update-freq", "5"]
NEW_LR = 0.02
RESTORE_LR = 0.01
SLOW = float(os.environ.get("TB_RETUNE_E2E_SLOWDOWN", "1"))  # scales every timeout on a slow machine


def _pdeathsig() -> None:  # pragma: no cover - runs in the child
    """The trainer dies with the test process, even if pytest is killed."""
    import ctypes

    ctypes.CDLL(None).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG


class Trainer:
    """One run of ``demo/run.py`` on the experiment, its output in a file."""

    def __init__(self, root: Path, name: str) -> None:
        self.logdir = root / "runs" / EXPERIMENT
        self.log_path = root / f"{name}.log"
        self.command = [sys.executable, str(DEMO), "--logdir", str(self.logdir), *TRAINER_ARGS]
        env = dict(os.environ, PYTHONUNBUFFERED="1", TF_CPP_MIN_LOG_LEVEL="2")
        with open(self.log_path, "wb") as log:
            self.process = subprocess.Popen(
                self.command, cwd=root, env=env, stdin=subprocess.DEVNULL, stdout=log,
                stderr=subprocess.STDOUT, preexec_fn=_pdeathsig if sys.platform.startswith("linux") else None)

    @property
    def pid(self) -> int:
        return self.process.pid

    @property
    def output(self) -> str:
        try:
            return self.log_path.read_text(encoding="utf-8", errors="replace")
        except OSError:
            return ""

    def tail(self, lines: int = 25) -> str:
        text = "\n".join(self.output.splitlines()[-lines:])
        return f"--- trainer pid {self.pid} (exit code {self.process.poll()}), last lines of its output:\n{text}"

    def kill(self) -> None:
        if self.process.poll() is None:
            self.process.kill()
        self.process.wait(timeout=30)


class Loop:
    """What the test started, to report on failure and to stop at the end."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.logdir = root / "runs" / EXPERIMENT
        self.trainers: list[Trainer] = []
        self.tb: support.TensorBoard | None = None
        self.page: Any = None
        self.problems: list[str] = []  # errors in the page

    @property
    def trainer(self) -> Trainer:
        return self.trainers[-1]

    def start_trainer(self) -> Trainer:
        trainer = Trainer(self.root, f"trainer-{len(self.trainers) + 1}")
        self.trainers.append(trainer)
        return trainer

    def status(self) -> dict[str, Any]:
        try:
            data = json.loads((self.logdir / "retune-status.json").read_text(encoding="utf-8"))
        except (OSError, ValueError):
            return {}
        return data if isinstance(data, dict) else {}

    def control(self) -> dict[str, Any]:
        try:
            return json.loads((self.logdir / "retune.json").read_text(encoding="utf-8"))
        except (OSError, ValueError):
            return {}

    def save_control(self, content: dict[str, Any]) -> None:
        """As an editor saves: a new file renamed onto the old one."""
        tmp = self.logdir / ".retune.json.swp"
        tmp.write_text(json.dumps(content), encoding="utf-8")
        os.replace(tmp, self.logdir / "retune.json")

    def get(self, route: str, **params: str) -> Any:
        assert self.tb is not None
        query = f"?{urllib.parse.urlencode(params)}" if params else ""
        return support.get_json(f"{self.tb.base}{route}{query}", timeout=10)

    def scalars(self, run: str, tag: str) -> list[tuple[int, float]]:
        """(step, value) of a scalar, as TensorBoard's Scalars plugin serves it."""
        try:
            points = self.get("/data/plugin/scalars/scalars", run=run, tag=tag)
        except (urllib.error.URLError, OSError, ValueError):  # 400 until TensorBoard has loaded the tag
            return []
        return [(int(step), float(value)) for _wall, step, value in points]

    def report(self) -> str:
        """What a failure message needs: the processes' last words and the status."""
        parts = [t.tail() for t in self.trainers]
        if self.tb is not None:
            parts.append(f"--- tensorboard, last of its log:\n{self.tb.log_tail(1500)}")
        status = self.status()
        brief = {k: status.get(k) for k in ("pid", "state", "branch", "node", "step", "hyperparameters",
                                            "checkpoints", "errors")}
        parts.append(f"--- retune-status.json: {json.dumps(brief)[:1500]}")
        parts.append(f"--- retune.json: {json.dumps(self.control())[:500]}")
        if self.problems:
            parts.append(f"--- page errors: {self.problems}")
        return "\n".join(parts)

    def wait(self, what: str, check: Callable[[], Any], timeout: float, *, trainer_alive: bool = True) -> Any:
        """Polls ``check`` until it returns something true; fails with the
        processes' logs on timeout or when the trainer dies meanwhile."""
        deadline = time.monotonic() + timeout * SLOW
        while True:
            value = check()
            if value:
                return value
            if trainer_alive and self.trainers and self.trainer.process.poll() is not None:
                value = check()
                if value:
                    return value
                pytest.fail(f"the trainer exited before {what}\n{self.report()}", pytrace=False)
            if time.monotonic() > deadline:
                pytest.fail(f"timed out after {timeout * SLOW:.0f} s waiting for {what}\n{self.report()}",
                            pytrace=False)
            time.sleep(0.1)

    def step(self, min_step: int = 0) -> int | None:
        """The trainer's step, when it is training past ``min_step``."""
        s = self.status()
        if s.get("state") == "training" and s.get("pid") == self.trainer.pid and s.get("step", -1) > min_step:
            return int(s["step"])
        return None

    def wait_steps(self, what: str, after: int, timeout: float = 30) -> int:
        return self.wait(what, lambda: self.step(after), timeout)

    def stop(self) -> None:
        for trainer in self.trainers:
            trainer.kill()
        if self.tb is not None:
            self.tb.stop()


@pytest.fixture
def loop(tmp_path: Path) -> Iterator[Loop]:
    lp = Loop(tmp_path)
    try:
        yield lp
    finally:
        lp.stop()


@pytest.fixture
def page(loop: Loop) -> Iterator[Any]:
    with support.chromium_page(1600, 900) as pg:
        pg.set_default_timeout(20000 * SLOW)
        support.watch_problems(pg, loop.problems)
        loop.page = pg
        yield pg


def _fit_and_find(loop: Loop, frame: Any, selector: str, what: str, timeout: float = 30) -> Any:
    """The element in the tree, once drawn (the tree draws only what is in
    view: fit the tree to the view until it shows up)."""
    def find() -> Any:
        frame.get_by_role("button", name="Fit the tree to the view").click()
        return frame.query_selector(selector)

    return loop.wait(what, find, timeout)


def _select_node(loop: Loop, frame: Any, node_id: str) -> None:
    selector = f'svg.tree g.node[data-id="{node_id}"]'
    _fit_and_find(loop, frame, selector, f"node {node_id} in the tab")
    # A locator, not the element: a refresh may redraw the node meanwhile.
    frame.locator(selector).click()
    frame.wait_for_function(
        "id => { const h = document.querySelector('.node-card h2'); return h && h.textContent === id; }",
        arg=node_id)


def _pill(frame: Any) -> str:
    return frame.text_content(".trainer-pill") or ""


def test_retune_restore_error_crash_and_resume_through_the_tab(loop: Loop, page: Any) -> None:
    t0 = time.monotonic()
    timings: dict[str, float] = {}

    def mark(name: str) -> None:
        timings[name] = round(time.monotonic() - t0, 1)

    # TensorBoard and the trainer import TensorFlow at the same time.
    loop.tb = support.TensorBoard(str(loop.root / "runs")).start()
    first = loop.start_trainer()
    step = loop.wait_steps("the trainer to train", 0, timeout=120)
    assert first.pid == loop.status()["pid"]
    # An epoch-end checkpoint besides the one at step 0.
    loop.wait("a checkpoint after step 0", lambda: [s for s in loop.status()["checkpoints"].get("main", []) if s > 0], 60)
    try:
        base = loop.tb.wait_ready((EXPERIMENT,), timeout=120 * SLOW)
    except RuntimeError as e:
        pytest.fail(f"{e}\n{loop.report()}", pytrace=False)
    mark("trainer and tensorboard up")

    # ---- 1. The tab, through TensorBoard's page (the tab's iframe), shows the tree.
    frame = support.open_tab(page, base, timeout_ms=60000 * SLOW, experiment=EXPERIMENT)
    assert frame.eval_on_selector("select.picker", "s => s.value") == EXPERIMENT
    _fit_and_find(loop, frame, 'svg.tree g.node[data-id="main-1"]', "the root node")
    label = frame.get_attribute('svg.tree g.node[data-id="main-1"]', "aria-label")
    assert "(main," in label and "current" in label, label
    loop.wait("the tab to show the trainer training", lambda: _pill(frame).startswith("Training at step"), 20)
    scalars_link = urllib.parse.unquote(frame.get_attribute("a.scalars-link", "href"))
    assert f"runFilter=^{EXPERIMENT}/" in scalars_link, scalars_link
    mark("tab shows the tree")

    # ---- 2. Change the learning rate with the tab's form.
    field = frame.locator("#hp-learning_rate")
    field.wait_for()
    assert float(field.input_value()) == pytest.approx(loop.status()["hyperparameters"]["learning_rate"])
    old_lr = loop.status()["hyperparameters"]["learning_rate"]
    field.fill(str(NEW_LR))
    frame.get_by_role("button", name="Apply").click()
    loop.wait("learning_rate in retune.json",
              lambda: loop.control().get("hyperparameters", {}).get("learning_rate") == NEW_LR, 15)
    applied = loop.wait(
        f"learning_rate {NEW_LR} in force in retune-status.json",
        lambda: [a for a in loop.status().get("applied", []) if a.get("kind") == "control"
                 and "learning_rate" in a.get("what", "")
                 and loop.status()["hyperparameters"]["learning_rate"] == pytest.approx(NEW_LR)], 30)[-1]
    change_step = int(applied["step"])
    assert applied["node"] == "main-2", applied
    assert re.search(rf"retune: step {change_step} learning_rate \S+ -> {NEW_LR}", loop.trainer.output), loop.report()
    # TensorBoard serves the new value as a scalar of the branch's run, from the step of the change.
    points = loop.wait(
        "the new learning rate in TensorBoard's scalars",
        lambda: [p for p in loop.scalars(f"{EXPERIMENT}/main", "hyperparameters/learning_rate")
                 if p[1] == pytest.approx(NEW_LR, rel=1e-6)], 30)
    assert min(s for s, _ in points) == change_step, points
    before = [v for s, v in loop.scalars(f"{EXPERIMENT}/main", "hyperparameters/learning_rate") if s < change_step]
    assert before and all(v == pytest.approx(old_lr, rel=1e-6) for v in before), before
    # The tab: the written request is applied, the tree has the child node.
    frame.wait_for_selector(".banner-ok:has-text('The trainer applied learning_rate=0.02')")
    _fit_and_find(loop, frame, 'svg.tree g.node[data-id="main-2"]', "node main-2 in the tab")
    assert "(main," in frame.get_attribute('svg.tree g.node[data-id="main-2"]', "aria-label")
    mark("learning rate changed")

    # ---- 3. Restore main-1's last checkpoint (the state just before the change) as a new branch.
    _select_node(loop, frame, "main-1")
    buttons = frame.eval_on_selector_all(".node-card button.restore", "bs => bs.map(b => b.textContent)")
    assert f"Restore step {change_step}" in buttons, buttons
    assert "Restore step 0" in buttons, buttons
    frame.fill("input.restore-hps", f"learning_rate={RESTORE_LR}")
    frame.get_by_role("button", name=f"Restore step {change_step}").click()
    restore = loop.wait("the restore in retune.json", lambda: loop.control().get("restore"), 15)
    assert restore["branch"] == "main" and restore["step"] == change_step, restore
    new_branch = loop.wait("the trainer to train on a new branch",
                           lambda: (b := loop.status().get("branch")) != "main" and b, 30)
    assert new_branch == f"main-s{change_step}", loop.report()
    status = loop.status()
    assert status["hyperparameters"]["learning_rate"] == pytest.approx(RESTORE_LR), status["hyperparameters"]
    # The tab: the new branch's node in the tree, and a banner that says so.
    node = _fit_and_find(loop, frame, f'svg.tree g.node[aria-label*="({new_branch},"]',
                         f"a node of branch {new_branch} in the tab")
    new_node = node.get_attribute("data-id")
    assert new_node == f"{new_branch}-1", new_node
    frame.wait_for_selector(f".banner-ok:has-text('new branch {new_branch}, from step {change_step}')")
    loop.wait("the Scalars link to take in the new branch",
              lambda: new_branch in urllib.parse.unquote(frame.get_attribute("a.scalars-link", "href")), 20)
    # TensorBoard: a new run, whose scalars start at the restored step.
    run = f"{EXPERIMENT}/{new_branch}"
    loop.wait(f"run {run} in /data/runs", lambda: run in loop.get("/data/runs"), 30)

    def first_steps() -> dict[str, int] | None:
        tags = loop.get("/data/plugin/scalars/tags").get(run, {})
        if "loss" not in tags or "hyperparameters/learning_rate" not in tags:
            return None
        firsts = {tag: min((s for s, _ in loop.scalars(run, tag)), default=-1) for tag in tags}
        return firsts if all(s >= 0 for s in firsts.values()) else None

    firsts = loop.wait(f"the scalars of {run}", first_steps, 30)
    assert min(firsts.values()) == change_step, firsts
    assert firsts["hyperparameters/learning_rate"] == change_step, firsts
    assert firsts["loss"] > change_step, firsts  # the first batch goes from N to N+1
    lr_points = loop.scalars(run, "hyperparameters/learning_rate")
    assert lr_points[0] == (change_step, pytest.approx(RESTORE_LR, rel=1e-6)), lr_points
    mark("restored")

    # ---- 4. A bad value saved by hand: refused, shown in the tab, training goes on.
    step = loop.wait_steps("training on the new branch", change_step)
    in_force = dict(loop.status()["hyperparameters"])
    loop.save_control(dict(loop.control(), hyperparameters={"learning_rate": -1}))
    error = loop.wait("the error in retune-status.json",
                      lambda: [e for e in loop.status().get("errors", []) if "learning_rate" in e["message"]], 20)[-1]
    assert "-1" in error["message"], error
    errors = frame.wait_for_selector(f".log-card ul.log.errors:has-text({json.dumps(error['message'])})")
    assert "must be >= 0" in errors.text_content(), errors.text_content()
    loop.wait_steps("training to go on after the bad revision", (loop.step() or step) + 10)
    status = loop.status()
    assert status["branch"] == new_branch and status["hyperparameters"] == in_force, status
    assert _pill(frame).startswith("Training at step"), _pill(frame)
    mark("bad revision refused")

    # ---- 5. kill -9, then the same command again: it resumes.
    killed_at = loop.status()
    first.process.send_signal(signal.SIGKILL)
    assert first.process.wait(timeout=30) == -signal.SIGKILL
    # checkpoints/<branch>/step-<step>--<node>--<kind>.ckpt (temporary files start with a dot).
    on_disk = sorted(int(m.group(1)) for p in glob.glob(str(loop.logdir / "checkpoints" / new_branch / "step-*.ckpt"))
                     if (m := re.match(r"step-(\d+)(--.*)?\.ckpt$", os.path.basename(p))))
    assert on_disk and max(killed_at["checkpoints"][new_branch]) <= max(on_disk), (on_disk, killed_at["checkpoints"])
    last_checkpoint = max(on_disk)
    mark("killed")
    second = loop.start_trainer()
    resumed = loop.wait("the restarted trainer to resume",
                        lambda: re.search(r"resumed branch (\S+) at step (\d+)", second.output), 120)
    assert resumed.group(1) == new_branch, resumed.group(0)
    resumed_step = int(resumed.group(2))
    assert resumed_step == last_checkpoint, (resumed.group(0), on_disk)
    assert resumed_step >= change_step and resumed_step > killed_at["step"] - 60, (resumed_step, killed_at["step"])
    step = loop.wait_steps("the restarted trainer to train", resumed_step, timeout=60)
    status = loop.status()
    assert status["pid"] == second.pid != first.pid
    assert status["branch"] == new_branch and status["step"] >= resumed_step
    assert status["hyperparameters"]["learning_rate"] == pytest.approx(RESTORE_LR)
    # The tab: training again, on the branch, past the resumed step.
    def pill_training() -> bool:
        m = re.match(r"Training at step (\d+), branch (\S+)", _pill(frame))
        return bool(m and int(m.group(1)) > resumed_step and m.group(2) == new_branch)

    loop.wait("the tab to show the resumed trainer", pill_training, 30)
    assert re.search(r"Epoch \d+/1000", second.output) and "Epoch 1/1000" not in second.output, loop.report()
    mark("resumed")

    # ---- 6. Stop through the control file (with the bad value fixed, or the revision would be refused).
    loop.save_control(dict(loop.control(), hyperparameters={"learning_rate": NEW_LR}, stop=True))
    loop.wait("the trainer to stop", lambda: second.process.poll() is not None, 60, trainer_alive=False)
    assert second.process.returncode == 0, loop.report()
    final = loop.status()
    assert final["state"] == "stopped" and final["branch"] == new_branch, loop.report()
    assert final["step"] in final["checkpoints"][new_branch]
    assert "Training stopped at step" in second.output, loop.report()
    assert "Traceback" not in first.output + second.output, loop.report()
    loop.wait("the tab to show the trainer stopped", lambda: _pill(frame).startswith("Stopped at step"), 20,
              trainer_alive=False)
    assert not loop.problems, loop.problems
    mark("stopped")
    print(f"\nend-to-end timings (s since start): {timings}")

