"""Helpers of the browser tests: a real ``tensorboard`` process and Chromium.

Used by ``tests/test_browser_tab.py``, ``tests/test_e2e.py`` and the screenshot scripts
(``tests/browser/screenshot.py``, ``tests/browser/e2e_screenshot.py``).
The browser is Debian's Chromium (``/usr/bin/chromium``), never one that a
tool downloads.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from typing import Any

CHROMIUM = os.environ.get("TB_RETUNE_CHROMIUM", "/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def get_json(url: str, timeout: float = 5.0) -> Any:
    with urllib.request.urlopen(url, timeout=timeout) as r:
        return json.loads(r.read().decode("utf-8"))


def tensorboard_command() -> list[str]:
    """The venv's ``tensorboard`` (next to this Python), else ``python -m tensorboard.main``."""
    exe = os.path.join(os.path.dirname(sys.executable), "tensorboard")
    if os.path.exists(exe):
        return [exe]
    return [sys.executable, "-m", "tensorboard.main"]


class TensorBoard:
    """A ``tensorboard --logdir`` process on a free port.

    ``start()`` returns at once (TensorBoard takes seconds to import
    TensorFlow), so the caller can write the logdir meanwhile; TensorBoard
    reloads it every second. ``wait_ready()`` waits until the Retune plugin
    lists the expected experiments. ``stop()`` ends the process.
    """

    def __init__(self, logdir: str) -> None:
        self.logdir = logdir
        self.port = free_port()
        self.base = f"http://127.0.0.1:{self.port}"
        self._proc: subprocess.Popen[bytes] | None = None
        self._log: Any = None

    def start(self) -> TensorBoard:
        os.makedirs(self.logdir, exist_ok=True)
        self._log = tempfile.TemporaryFile()
        env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3", PYTHONUNBUFFERED="1")
        self._proc = subprocess.Popen(
            tensorboard_command()
            + ["--logdir", self.logdir, "--host", "127.0.0.1", "--port", str(self.port), "--reload_interval", "1"],
            stdout=self._log,
            stderr=subprocess.STDOUT,
            env=env,
        )
        return self

    def experiments(self) -> list[str]:
        return [e["name"] for e in get_json(f"{self.base}/data/plugin/retune/experiments")["experiments"]]

    def wait_ready(self, expect: tuple[str, ...] = (), timeout: float = 90.0) -> str:
        assert self._proc is not None, "start() first"
        deadline = time.monotonic() + timeout
        names: list[str] = []
        while True:
            if self._proc.poll() is not None:
                raise RuntimeError(f"tensorboard exited with {self._proc.returncode}: {self.log_tail()}")
            try:
                names = self.experiments()
                if all(n in names for n in expect):
                    return self.base
            except (urllib.error.URLError, ConnectionError, OSError, ValueError, KeyError):
                pass
            if time.monotonic() > deadline:
                raise RuntimeError(f"tensorboard did not list {expect} in {timeout}s (got {names}): {self.log_tail()}")
            time.sleep(0.2)

    def log_tail(self, n: int = 3000) -> str:
        if self._log is None:
            return ""
        self._log.flush()
        self._log.seek(0)
        return self._log.read()[-n:].decode("utf-8", "replace")

    def stop(self) -> None:
        proc, self._proc = self._proc, None
        if proc is not None and proc.poll() is None:
            proc.terminate()
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(timeout=10)
        if self._log is not None:
            self._log.close()
            self._log = None


@contextlib.contextmanager
def tensorboard(logdir: str, *, expect: tuple[str, ...] = (), timeout: float = 90.0) -> Iterator[str]:
    """Runs TensorBoard on ``logdir`` (already written); yields its base URL."""
    tb = TensorBoard(logdir).start()
    try:
        yield tb.wait_ready(expect, timeout)
    finally:
        tb.stop()


def launch_chromium(playwright: Any) -> Any:
    return playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)


def watch_problems(page: Any, problems: list[str]) -> None:
    """Records the page's uncaught errors and dialogs (dismissed) in ``problems``."""
    page.on("pageerror", lambda e: problems.append(f"page error: {e}"))

    def on_dialog(d: Any) -> None:
        problems.append(f"dialog: {d.message}")
        d.dismiss()

    page.on("dialog", on_dialog)


def screenshot_arguments(description: str, out: str) -> argparse.ArgumentParser:
    """The screenshot scripts' common options: ``--out`` (default ``out``), ``--width``, ``--height``."""
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--out", default=out)
    parser.add_argument("--width", type=int, default=1600)
    parser.add_argument("--height", type=int, default=900)
    return parser


@contextlib.contextmanager
def chromium_page(width: int, height: int) -> Iterator[Any]:
    """A page of a headless Chromium of ``width`` x ``height``; the browser closes after."""
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        browser = launch_chromium(p)
        try:
            yield browser.new_page(viewport={"width": width, "height": height})
        finally:
            browser.close()


def save_screenshot(page: Any, out: str) -> None:
    """Saves the page as ``out`` (its folder made), a second after the last change (fonts, the last frame)."""
    time.sleep(1.0)
    os.makedirs(os.path.dirname(os.path.abspath(out)), exist_ok=True)
    page.screenshot(path=out)


def open_tab(page: Any, base: str, timeout_ms: float = 20000, *, direct: bool = False,
             experiment: str | None = None) -> Any:
    """Opens the Retune tab; returns the tab's frame once it has a tree.

    By default through TensorBoard's page (``/#retune``), which puts the tab
    in an iframe. ``direct=True`` opens that iframe's page itself
    (``/data/plugin_entry.html?name=retune``, the same document TensorBoard
    serves for the tab) without TensorBoard's large app around it: faster,
    for tests of the tab's own behaviour. ``experiment`` is the one the tab
    shows first (as if picked last time: the tab remembers it).
    """
    if experiment is not None:
        page.add_init_script(f"try {{ localStorage.setItem('tb-retune.experiment', {json.dumps(experiment)}); }} catch (e) {{}}")
    if direct:
        page.goto(f"{base}/data/plugin_entry.html?name=retune")
        page.wait_for_selector("svg.tree g.node", timeout=timeout_ms)
        return page.main_frame
    page.goto(f"{base}/#retune")
    handle = page.wait_for_selector("iframe", state="attached", timeout=timeout_ms)
    deadline = time.monotonic() + timeout_ms / 1000
    frame = handle.content_frame()
    while frame is None or "plugin_entry" not in frame.url:
        if time.monotonic() > deadline:
            raise AssertionError("the Retune tab's frame did not load")
        time.sleep(0.05)
        frame = handle.content_frame()
    frame.wait_for_selector("svg.tree g.node", timeout=timeout_ms)
    return frame
