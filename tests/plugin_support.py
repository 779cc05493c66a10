"""Helpers of the plugin's tests: real event files, the real TensorBoard WSGI app."""

from __future__ import annotations

import argparse
import json
import os
from typing import Any

from tensorboard import context
from tensorboard.backend import application
from werkzeug.test import Client

from tb_retune.plugin.loader import RetuneLoader
from tb_retune.reader.experiments import load_multiplexer
from tb_retune.testing.synthetic import make_experiment

PREFIX = "/data/plugin/retune/"


def make_logdir(root: str) -> str:
    """A logdir with two experiments: ``digits`` (3 branches) and ``sweeps/a`` (2)."""
    make_experiment(os.path.join(root, "digits"), branches=3, nodes=9, seed=1)
    make_experiment(os.path.join(root, "sweeps", "a"), branches=2, nodes=4, seed=2)
    return root


class App:
    """The real TensorBoard WSGI app with only the Retune plugin, over a multiplexer."""

    def __init__(self, logdir: str, *, served_logdir: str | None = None, **flag_values: Any) -> None:
        self.logdir = logdir
        self.multiplexer, self.provider = load_multiplexer(logdir)
        self.reload()
        flags = argparse.Namespace(
            logdir=logdir if served_logdir is None else served_logdir,
            path_prefix="",
            samples_per_plugin={},
            window_title="",
            **flag_values,
        )
        self.wsgi = application.TensorBoardWSGIApp(flags, [RetuneLoader()], self.provider)
        self.ctx = context.RequestContext()

    def reload(self) -> None:
        self.multiplexer.AddRunsFromDirectory(self.logdir)
        self.multiplexer.Reload()

    def client(self) -> Client:
        return Client(self.wsgi)

    def get(self, route: str, **kwargs: Any) -> Any:
        return self.client().get(PREFIX + route, **kwargs)

    def post(self, route: str, body: Any, *, headers: dict[str, str] | None = None,
             content_type: str = "application/json") -> Any:
        data = body if isinstance(body, (bytes, str)) else json.dumps(body)
        return self.client().post(PREFIX + route, data=data, content_type=content_type, headers=headers or {})


def strict_json(data: bytes) -> Any:
    """Decodes JSON that a browser's JSON.parse accepts (no NaN/Infinity)."""

    def reject(name: str) -> Any:
        raise ValueError(f"not JSON: {name}")

    return json.loads(data.decode("utf-8"), parse_constant=reject)
