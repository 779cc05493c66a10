"""The Retune tab's backend: a TensorBoard plugin with a small JSON API.

See ``docs/http_api.md`` for the routes. Each ``*_route`` is a thin werkzeug
handler that parses the request and calls a testable ``*_impl`` method; the
data logic lives in :mod:`tb_retune.reader.experiments`, and every write goes through
:func:`tb_retune.experiment.control_file.write_control` (validated with the trainer's
schema, merged, locked, atomic).
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Callable, Iterable, Mapping
from typing import Any, TypeVar

from tensorboard.backend import http_util
from tensorboard.plugins import base_plugin
from werkzeug import wrappers

from tb_retune.experiment import control_file
from tb_retune.experiment.control import CONTROL_FILENAME
from tb_retune.experiment.metadata import PLUGIN_NAME
from tb_retune.experiment.safe_read import UnsafeFileError
from tb_retune.plugin._http import (
    MAX_BODY_BYTES,
    MAX_BODY_DEPTH,
    STATIC_DIR,
    Encoded,
    RequestError,
    accepts_gzip,
    arg,
    check_keys,
    json_body,
    route,
    serve,
    static_file,
)
from tb_retune.plugin.hosts import HostPolicy
from tb_retune.reader.experiments import ExperimentStore
from tb_retune.reader.folders import resolve_for_write

__all__ = ["MAX_BODY_BYTES", "MAX_BODY_DEPTH", "MAX_REVISIONS", "STATIC_DIR", "RequestError", "RetunePlugin",
           "static_file"]

logger = logging.getLogger(__name__)

#: Most ``revision`` parameters of one ``status`` request.
MAX_REVISIONS = 20

_T = TypeVar("_T")
_Request = wrappers.Request
_Response = wrappers.Response


class RetunePlugin(base_plugin.TBPlugin):
    """The Retune tab: the experiment tree, status, restore and retune."""

    plugin_name = PLUGIN_NAME

    def __init__(self, context: base_plugin.TBContext) -> None:
        self._data_provider = context.data_provider
        self._logdir: str = context.logdir or ""
        self._store = ExperimentStore(self._data_provider, self._logdir)
        self._hosts = HostPolicy.from_flags(getattr(context, "flags", None))

    # -- TBPlugin ---------------------------------------------------------

    def get_plugin_apps(self) -> dict[str, Callable[..., Any]]:
        return {
            "/experiments": self.experiments_route,
            "/tree": self.tree_route,
            "/metrics": self.metrics_route,
            "/node": self.node_route,
            "/status": self.status_route,
            "/restore": self.restore_route,
            "/hyperparameters": self.hyperparameters_route,
            "/stop": self.stop_route,
            "/search": self.search_route,
            "/note": self.note_route,
            "/static/*": self.static_route,
        }

    def is_active(self) -> bool:
        """Whether any run holds ``retune`` summaries.

        TensorBoard's core already enables the tab from ``list_plugins``
        (see ``data_plugin_names``); this is the same check, for callers
        that ask the plugin directly.
        """
        if self._data_provider is None:
            return False
        from tensorboard import context

        try:
            plugins = self._data_provider.list_plugins(context.RequestContext(), experiment_id="")
        except Exception:  # a data provider that cannot answer now: not active
            return False
        return PLUGIN_NAME in (plugins or ())

    def frontend_metadata(self) -> base_plugin.FrontendMetadata:
        return base_plugin.FrontendMetadata(es_module_path="/static/index.js", tab_name="Retune")

    # -- reads ------------------------------------------------------------

    def experiments_impl(self, ctx: Any, experiment_id: str) -> dict[str, Any]:
        return {"experiments": self._store.experiments(ctx, experiment_id)}

    def tree_json_impl(self, ctx: Any, experiment_id: str, name: str, *, gzip: bool = False) -> bytes:
        """The ``tree`` route's JSON (the large part serialised once per change);
        with ``gzip``, compressed (the large part compressed once per change)."""
        return self._store.tree_json(ctx, name, experiment_id, gzip=gzip)

    def metrics_json_impl(self, ctx: Any, experiment_id: str, name: str, *, gzip: bool = False) -> bytes:
        """The ``metrics`` route's JSON: every node's latest metrics (the tree reply leaves them out)."""
        return self._store.metrics_json(ctx, name, experiment_id, gzip=gzip)

    def node_impl(self, ctx: Any, experiment_id: str, name: str, node_id: str) -> dict[str, Any]:
        return self._store.node(ctx, name, node_id, experiment_id)

    def status_impl(self, ctx: Any, experiment_id: str, name: str,
                    revisions: Iterable[str] = ()) -> dict[str, Any]:
        return self._store.status(ctx, name, experiment_id, revisions)

    # -- writes -----------------------------------------------------------

    def _folder_for_write(self, ctx: Any, experiment_id: str, name: Any) -> str:
        known: list[str] = []
        if isinstance(name, str) and self._data_provider is not None:
            try:
                known = list(self._store.index(ctx, experiment_id))
            except Exception:  # the folder check below still applies
                logger.warning("retune: could not list experiments", exc_info=True)
        return resolve_for_write(self._logdir, name, known=known)

    def restore_impl(self, ctx: Any, experiment_id: str, body: Mapping[str, Any]) -> dict[str, Any]:
        """Writes a restore request; returns ``{written, id, revision, control}``.

        Refused (409) while an earlier restore in the file is still pending.
        """
        check_keys(body, required=("experiment", "branch", "step"), optional=("hyperparameters",))
        folder = self._folder_for_write(ctx, experiment_id, body["experiment"])
        if control_file.read_status(folder) is None:
            raise RequestError(
                400,
                f"experiment {body['experiment']!r}: no checkpoints are known yet (the trainer has not "
                "written retune-status.json); start the trainer first",
            )
        restore: dict[str, Any] = {
            "id": control_file.new_restore_id(),
            "branch": body["branch"],
            "step": body["step"],
        }
        if body.get("hyperparameters"):
            restore["hyperparameters"] = body["hyperparameters"]
        update = {"restore": restore}
        control = _write(folder, update)
        return {"written": update, "id": restore["id"], "revision": control["revision"]["id"], "control": control}

    def hyperparameters_impl(
        self, ctx: Any, experiment_id: str, body: Mapping[str, Any]
    ) -> dict[str, Any]:
        """Merges hyperparameters into the control file; returns ``{written, revision, control}``."""
        check_keys(body, required=("experiment", "hyperparameters"), optional=())
        hps = body["hyperparameters"]
        if not isinstance(hps, dict) or not hps:
            raise RequestError(
                400,
                "hyperparameters: must be a non-empty object of name: value, "
                f"e.g. {{\"learning_rate\": 0.0003}}, got {json.dumps(hps)[:80]}",
            )
        folder = self._folder_for_write(ctx, experiment_id, body["experiment"])
        update = {"hyperparameters": dict(hps)}
        control = _write(folder, update)
        return {"written": update, "revision": control["revision"]["id"], "control": control}

    def stop_impl(self, ctx: Any, experiment_id: str, body: Mapping[str, Any]) -> dict[str, Any]:
        """Writes ``stop: true``: the trainer ends ``fit`` after its batch; returns ``{written, revision, control}``."""
        check_keys(body, required=("experiment",), optional=())
        folder = self._folder_for_write(ctx, experiment_id, body["experiment"])
        if control_file.read_status(folder) is None:
            raise RequestError(400, f"experiment {body['experiment']!r}: no trainer has run here yet; nothing to stop")
        update = {"stop": True}
        control = _write(folder, update)
        stamp = control.get("revision")  # the writer's revision id (interface 1), once it stamps one
        return {"written": update, "revision": stamp.get("id") if isinstance(stamp, dict) else None, "control": control}

    def search_impl(self, ctx: Any, experiment_id: str, body: Mapping[str, Any]) -> dict[str, Any]:
        """Writes a search request (``docs/search.md``); returns ``{written, id, control}``."""
        from tb_retune.experiment.search_request import write_search

        check_keys(body, required=("experiment", "search"), optional=())
        if not isinstance(body["search"], dict):
            raise RequestError(400, f"search: must be an object (docs/search.md), got {json.dumps(body['search'])[:80]}")
        folder = self._folder_for_write(ctx, experiment_id, body["experiment"])
        request, control = _write_with(lambda: write_search(folder, body["search"]), folder)
        return {"written": {"search": request}, "id": request["id"], "revision": control["revision"]["id"],
                "control": control}

    def note_impl(self, ctx: Any, experiment_id: str, body: Mapping[str, Any]) -> dict[str, Any]:
        """Sets (``""``: removes) the note of a node of the tree; returns ``{written, revision, control}``."""
        check_keys(body, required=("experiment", "node", "text"), optional=())
        folder = self._folder_for_write(ctx, experiment_id, body["experiment"])
        node = body["node"]
        if self._data_provider is not None and isinstance(node, str):
            self._store.node(ctx, body["experiment"], node, experiment_id)  # 404 for a node not in the tree
        update = {"notes": {node: body["text"]}}
        control = _write(folder, update)
        return {"written": update, "revision": control["revision"]["id"], "control": control}

    # -- routes -----------------------------------------------------------

    @route
    def experiments_route(self, request: _Request) -> _Response:
        return serve(request, lambda ctx, eid: self.experiments_impl(ctx, eid))

    @route
    def tree_route(self, request: _Request) -> _Response:
        gzip = accepts_gzip(request)
        return serve(request, lambda ctx, eid: Encoded(
            self.tree_json_impl(ctx, eid, arg(request, "experiment"), gzip=gzip), "gzip" if gzip else None,
        ))

    @route
    def metrics_route(self, request: _Request) -> _Response:
        gzip = accepts_gzip(request)
        return serve(request, lambda ctx, eid: Encoded(
            self.metrics_json_impl(ctx, eid, arg(request, "experiment"), gzip=gzip), "gzip" if gzip else None,
        ))

    @route
    def node_route(self, request: _Request) -> _Response:
        return serve(
            request,
            lambda ctx, eid: self.node_impl(ctx, eid, arg(request, "experiment"), arg(request, "node")),
        )

    @route
    def status_route(self, request: _Request) -> _Response:
        revisions = [r for r in request.args.getlist("revision") if len(r) <= 200][:MAX_REVISIONS]
        return serve(request, lambda ctx, eid: self.status_impl(ctx, eid, arg(request, "experiment"), revisions))

    @route
    def restore_route(self, request: _Request) -> _Response:
        return serve(request, lambda ctx, eid: self.restore_impl(ctx, eid, json_body(request)),
                      post=True, hosts=self._hosts)

    @route
    def stop_route(self, request: _Request) -> _Response:
        return serve(request, lambda ctx, eid: self.stop_impl(ctx, eid, json_body(request)), post=True)

    @route
    def note_route(self, request: _Request) -> _Response:
        return serve(request, lambda ctx, eid: self.note_impl(ctx, eid, json_body(request)),
                      post=True, hosts=self._hosts)

    @route
    def hyperparameters_route(self, request: _Request) -> _Response:
        return serve(
            request, lambda ctx, eid: self.hyperparameters_impl(ctx, eid, json_body(request)),
            post=True, hosts=self._hosts,
        )

    @route
    def search_route(self, request: _Request) -> _Response:
        return serve(request, lambda ctx, eid: self.search_impl(ctx, eid, json_body(request)), post=True)

    @route
    def static_route(self, request: _Request) -> _Response:
        """Serves a file of ``tb_retune/static/``; never one outside it."""
        marker = "/static/"
        path = request.path
        rel = path[path.index(marker) + len(marker):] if marker in path else ""
        found = static_file(rel)
        if found is None:
            return http_util.Respond(request, {"error": f"no static file {rel!r}"}, "application/json", code=404)
        file_path, content_type = found
        with open(file_path, "rb") as f:
            data = f.read()
        return http_util.Respond(request, data, content_type)


def _write(folder: str, update: Mapping[str, Any]) -> dict[str, Any]:
    return _write_with(lambda: control_file.write_control(folder, update), folder)


def _write_with(write: Callable[[], _T], folder: str) -> _T:
    try:
        return write()
    except UnsafeFileError as e:
        raise RequestError(409, f"{e}; nothing was written") from None
    except OSError as e:
        raise RequestError(
            409,
            f"cannot write {os.path.join(folder, CONTROL_FILENAME)}: {e.strerror or e}; "
            "make the experiment folder writable for TensorBoard, or use the tb-retune command line",
        ) from None


