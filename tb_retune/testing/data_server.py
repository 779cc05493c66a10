"""TensorBoard's Rust data server as an in-process data provider, for tests and benchmarks.

``tensorboard --load_fast=auto`` (the default where the ``tensorboard_data_server``
package is installed) reads the logdir in that server, a separate process, and
the plugins ask it over gRPC through ``GrpcDataProvider``. This starts the same
binary the same way (``tensorboard.data.server_ingester``), so the plugin's
reads can be tested and timed against both data providers in one process.

Example:

```python
with RustDataServer("runs", reload_s=1) as server:
    store = ExperimentStore(server.provider, "runs")
```
"""

from __future__ import annotations

import os
import subprocess
import tempfile
import time
from typing import Any


def server_binary() -> str | None:
    """The data server's executable, or None where it is not installed."""
    try:
        from tensorboard.data import server_ingester

        return str(server_ingester.get_server_binary().path)
    except Exception:  # NoDataServerError, or no binary for this platform
        return None


class RustDataServer:
    """A running Rust data server over ``logdir`` and a ``GrpcDataProvider`` to it.

    Args:
        logdir: The folder to load.
        reload_s: Seconds between its reloads of the logdir (``0``: load once).
        timeout_s: How long to wait for it to start.

    Raises:
        RuntimeError: no data server binary here, or it did not start.
    """

    def __init__(self, logdir: str, *, reload_s: int = 1, timeout_s: float = 60.0) -> None:
        binary = server_binary()
        if binary is None:
            raise RuntimeError("TensorBoard's Rust data server is not installed (pip install tensorboard-data-server)")
        self._tmp = tempfile.TemporaryDirectory(prefix="tbr-data-server-")
        port_file = os.path.join(self._tmp.name, "port")
        self._log = open(os.path.join(self._tmp.name, "server.log"), "wb")  # noqa: SIM115 (closed in close())
        self.process = subprocess.Popen(
            [binary, f"--logdir={logdir}", f"--reload={reload_s if reload_s > 0 else 'once'}", "--port=0",
             f"--port-file={port_file}", "--die-after-stdin",
             f"--error-file={os.path.join(self._tmp.name, 'error')}"],
            stdin=subprocess.PIPE, stdout=self._log, stderr=subprocess.STDOUT,
        )
        try:
            port = self._wait_for_port(port_file, timeout_s)
            import grpc
            from tensorboard.data import grpc_provider

            address = f"localhost:{port}"
            self._channel = grpc.insecure_channel(
                address, options=[("grpc.max_receive_message_length", 256 * 1024 * 1024)])
            self.provider: Any = grpc_provider.GrpcDataProvider(address, grpc_provider.make_stub(self._channel))
        except BaseException:
            self.close()
            raise

    def _wait_for_port(self, port_file: str, timeout_s: float) -> int:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"the data server exited with {self.process.returncode}: {self.log()[-2000:]}")
            try:
                with open(port_file) as f:
                    text = f.read()
                if text.endswith("\n"):
                    return int(text)
            except FileNotFoundError:
                pass
            time.sleep(0.05)
        raise RuntimeError(f"the data server did not start within {timeout_s} s: {self.log()[-2000:]}")

    def log(self) -> str:
        """What the server wrote to stdout and stderr."""
        try:
            with open(os.path.join(self._tmp.name, "server.log"), encoding="utf-8", errors="replace") as f:
                return f.read()
        except OSError:
            return ""

    def close(self) -> None:
        """Stops the server (closing its stdin ends it) and waits for it."""
        channel = getattr(self, "_channel", None)
        if channel is not None:
            channel.close()
        if self.process.stdin is not None:
            self.process.stdin.close()
        try:
            self.process.wait(20)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait(20)
        self._log.close()
        self._tmp.cleanup()

    def __enter__(self) -> RustDataServer:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
