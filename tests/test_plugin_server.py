"""The plugin inside a real ``tensorboard`` process, found through its entry point.

Run twice: with TensorBoard's default data loading (the Rust data server,
``--load_fast=auto``) and with the Python multiplexer (``--load_fast=false``).
"""

from __future__ import annotations

import importlib.util
import json
import os
import re
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from typing import Any

import pytest

from tests.plugin_support import make_logdir

pytestmark = pytest.mark.slow


class Server:
    def __init__(self, logdir: str, load_fast: str, log_path: str) -> None:
        self.log_path = log_path
        self._log = open(log_path, "wb")
        env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3")
        self.process = subprocess.Popen(
            [sys.executable, "-m", "tensorboard.main", "--logdir", logdir, "--host", "127.0.0.1",
             "--port", "0", f"--load_fast={load_fast}", "--reload_interval", "1"],
            stdin=subprocess.DEVNULL, stdout=self._log, stderr=subprocess.STDOUT,
            start_new_session=True, env=env,
        )
        self.url = self._wait_for_url(120)

    def log(self) -> str:
        with open(self.log_path, encoding="utf-8", errors="replace") as f:
            return f.read()

    def _wait_for_url(self, timeout: float) -> str:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            found = re.search(r"TensorBoard \S+ at (http://127\.0\.0\.1:\d+)/", self.log())
            if found:
                return found.group(1)
            if self.process.poll() is not None:
                break
            time.sleep(0.1)
        self.close()
        raise AssertionError("tensorboard did not start:\n" + self.log()[-3000:])

    def request(self, path: str, body: Any = None, headers: dict[str, str] | None = None) -> tuple[int, Any, str]:
        data = json.dumps(body).encode() if body is not None else None
        req = urllib.request.Request(self.url + path, data=data, headers=headers or {})
        if data is not None:
            req.add_header("Content-Type", "application/json")
        try:
            with urllib.request.urlopen(req, timeout=30) as r:
                raw, code, ctype = r.read(), r.status, r.headers.get("Content-Type", "")
        except urllib.error.HTTPError as e:
            raw, code, ctype = e.read(), e.code, e.headers.get("Content-Type", "")
        payload = json.loads(raw) if ctype.startswith("application/json") else raw
        return code, payload, ctype

    def close(self) -> None:
        if self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGTERM)
            try:
                self.process.wait(20)
            except subprocess.TimeoutExpired:
                os.killpg(self.process.pid, signal.SIGKILL)
                self.process.wait(20)
        with_children = subprocess.run(["pgrep", "-g", str(self.process.pid)], capture_output=True, text=True)
        if with_children.stdout.strip():  # the data server, if it outlived its parent
            os.killpg(self.process.pid, signal.SIGKILL)
        self._log.close()


@pytest.fixture(scope="module")
def logdir(tmp_path_factory: pytest.TempPathFactory) -> str:
    return make_logdir(str(tmp_path_factory.mktemp("served")))


@pytest.fixture(params=["auto", "false"], ids=["rust-data-server", "python-multiplexer"])
def server(request: pytest.FixtureRequest, logdir: str, tmp_path: Any) -> Iterator[Server]:
    srv = Server(logdir, request.param, str(tmp_path / "tensorboard.log"))
    try:
        yield srv
    finally:
        srv.close()


def wait_for_experiments(server: Server, timeout: float = 60) -> list[dict[str, Any]]:
    deadline = time.monotonic() + timeout
    exps: list[dict[str, Any]] = []
    while time.monotonic() < deadline:
        code, body, _ = server.request("/data/plugin/retune/experiments")
        assert code == 200, body
        exps = body["experiments"]
        if len(exps) == 2 and all(len(e["branches"]) >= 2 for e in exps):
            return exps
        time.sleep(0.2)
    raise AssertionError(f"experiments never appeared: {exps}\n{server.log()[-3000:]}")


def test_real_tensorboard_serves_the_tab(server: Server, logdir: str) -> None:
    if server.process.args[-3] == "--load_fast=auto" and importlib.util.find_spec("tensorboard_data_server"):
        assert "fast data loading" in server.log(), "the Rust data server was not used"
    exps = wait_for_experiments(server)
    assert [e["name"] for e in exps] == ["digits", "sweeps/a"]

    code, listing, _ = server.request("/data/plugins_listing")
    assert code == 200 and listing["retune"]["enabled"] is True
    assert listing["retune"]["loading_mechanism"]["module_path"] == "/data/plugin/retune/static/index.js"

    code, tree, _ = server.request("/data/plugin/retune/tree?experiment=digits")
    assert code == 200 and len(tree["nodes"]) == 9 and tree["writable"] is True
    assert all("metrics" not in n for n in tree["nodes"])  # the metrics route has them
    code, metrics, _ = server.request("/data/plugin/retune/metrics?experiment=digits")
    assert code == 200 and metrics["metrics"]["main-1"]["loss"]["step"] == 100
    assert metrics["tree_key"] == tree["tree_key"]
    code, node, _ = server.request("/data/plugin/retune/node?experiment=digits&node=main-1")
    assert code == 200 and node["config"]["optimizer"]["class_name"] == "SGD"
    assert node["metrics"] == metrics["metrics"]["main-1"]

    code, js, ctype = server.request("/data/plugin/retune/static/index.js")
    assert code == 200 and ctype.startswith("text/javascript") and b"render" in js

    control = os.path.join(logdir, "digits", "retune.json")
    body = {"experiment": "digits", "hyperparameters": {"momentum": 0.5}}
    code, reply, _ = server.request("/data/plugin/retune/hyperparameters", body, {"Origin": "http://evil.example"})
    assert code == 403 and "cross-origin" in reply["error"]
    assert not os.path.exists(control)
    # DNS rebinding: a page whose name resolves to this server sends matching Origin and Host.
    port = server.url.rsplit(":", 1)[1]
    evil = f"rebind.evil.example:{port}"
    code, reply, _ = server.request("/data/plugin/retune/hyperparameters", body,
                                    {"Host": evil, "Origin": f"http://{evil}"})
    assert code == 403 and "does not name this TensorBoard" in reply["error"], reply
    assert not os.path.exists(control)
    code, reply, _ = server.request("/data/plugin/retune/hyperparameters", body, {"Origin": server.url})
    try:
        assert code == 200, reply
        assert reply["control"]["hyperparameters"]["momentum"] == 0.5
        with open(control) as f:
            assert json.load(f) == {"hyperparameters": {"momentum": 0.5},
                                    "revision": {"id": reply["revision"], "keys": ["momentum"]}}
    finally:
        if os.path.exists(control):
            os.remove(control)  # the logdir is shared with the other data loader's run
