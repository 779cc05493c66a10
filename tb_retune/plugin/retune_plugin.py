"""The Retune tab's backend: a TensorBoard plugin with a small JSON API.

See ``docs/http_api.md`` for the routes. Each ``*_route`` is a thin werkzeug
handler that parses the request and calls a testable ``*_impl`` method; the
data logic lives in :mod:`tb_retune.reader.experiments`, and every write goes through
:func:`tb_retune.experiment.control_file.write_control` (validated with the trainer's
schema, merged, locked, atomic).
"""

from __future__ import annotations

import functools
import json
import logging
import os
import posixpath
from collections.abc import Callable, Iterable, Mapping
from typing import Any, TypeVar
from urllib.parse import urlsplit

from tensorboard import plugin_util
from tensorboard.backend import http_util
from tensorboard.plugins import base_plugin
from werkzeug import wrappers

from tb_retune._errors import ControlError, PendingRestoreError
from tb_retune.experiment import control_file, strict_json
from tb_retune.experiment.control import CONTROL_FILENAME
from tb_retune.experiment.metadata import PLUGIN_NAME
from tb_retune.experiment.safe_read import UnsafeFileError
from tb_retune.plugin.hosts import HostPolicy
from tb_retune.reader.experiments import ExperimentStore, dumps_json
from tb_retune.reader.folders import (
    InvalidExperimentNameError,
    LogdirNotWritableError,
    UnknownExperimentError,
    UnknownNodeError,
    resolve_for_write,
)

logger = logging.getLogger(__name__)

#: Largest request body accepted by the POST routes.
MAX_BODY_BYTES = 64 * 1024
#: Deepest nesting accepted in a request body (the restore body needs 3).
MAX_BODY_DEPTH = 8
#: Most ``revision`` parameters of one ``status`` request.
MAX_REVISIONS = 20
#: The folder of the tab's built frontend files.
STATIC_DIR = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "static")

_T = TypeVar("_T")

_CONTENT_TYPES = {
    ".js": "text/javascript",
    ".mjs": "text/javascript",
    ".css": "text/css",
    ".json": "application/json",
    ".map": "application/json",
    ".svg": "image/svg+xml",
    ".png": "image/png",
    ".ico": "image/x-icon",
    ".woff2": "font/woff2",
    ".txt": "text/plain",
}

_Request = wrappers.Request
_Response = wrappers.Response
_WsgiMethod = Callable[[Any, dict[str, Any], Any], Iterable[bytes]]


def _route(handler: Callable[[Any, _Request], _Response]) -> _WsgiMethod:
    """Turns ``handler(self, request) -> Response`` into a WSGI app method."""

    @functools.wraps(handler)
    def app(self: Any, environ: dict[str, Any], start_response: Any) -> Iterable[bytes]:
        return handler(self, wrappers.Request(environ))(environ, start_response)

    return app


class RequestError(Exception):
    """A request that cannot be served, with the HTTP code of the reply.

    The message is shown to the person, so it says what was wrong and what to do.
    """

    def __init__(self, code: int, message: str) -> None:
        super().__init__(message)
        self.code = code


def _error_for(exc: Exception) -> RequestError:
    """Maps our typed errors to HTTP codes."""
    if isinstance(exc, RequestError):
        return exc
    if isinstance(exc, (UnknownExperimentError, UnknownNodeError)):
        return RequestError(404, str(exc))
    if isinstance(exc, PendingRestoreError):
        return RequestError(409, str(exc))
    if isinstance(exc, (InvalidExperimentNameError, ControlError)):
        return RequestError(400, str(exc))
    if isinstance(exc, LogdirNotWritableError):
        return RequestError(409, str(exc))
    raise exc


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
        _check_keys(body, required=("experiment", "branch", "step"), optional=("hyperparameters",))
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
        _check_keys(body, required=("experiment", "hyperparameters"), optional=())
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
        _check_keys(body, required=("experiment",), optional=())
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

        _check_keys(body, required=("experiment", "search"), optional=())
        if not isinstance(body["search"], dict):
            raise RequestError(400, f"search: must be an object (docs/search.md), got {json.dumps(body['search'])[:80]}")
        folder = self._folder_for_write(ctx, experiment_id, body["experiment"])
        request, control = _write_with(lambda: write_search(folder, body["search"]), folder)
        return {"written": {"search": request}, "id": request["id"], "revision": control["revision"]["id"],
                "control": control}

    def note_impl(self, ctx: Any, experiment_id: str, body: Mapping[str, Any]) -> dict[str, Any]:
        """Sets (``""``: removes) the note of a node of the tree; returns ``{written, revision, control}``."""
        _check_keys(body, required=("experiment", "node", "text"), optional=())
        folder = self._folder_for_write(ctx, experiment_id, body["experiment"])
        node = body["node"]
        if self._data_provider is not None and isinstance(node, str):
            self._store.node(ctx, body["experiment"], node, experiment_id)  # 404 for a node not in the tree
        update = {"notes": {node: body["text"]}}
        control = _write(folder, update)
        return {"written": update, "revision": control["revision"]["id"], "control": control}

    # -- routes -----------------------------------------------------------

    @_route
    def experiments_route(self, request: _Request) -> _Response:
        return _serve(request, lambda ctx, eid: self.experiments_impl(ctx, eid))

    @_route
    def tree_route(self, request: _Request) -> _Response:
        gzip = _accepts_gzip(request)
        return _serve(request, lambda ctx, eid: _Encoded(
            self.tree_json_impl(ctx, eid, _arg(request, "experiment"), gzip=gzip), "gzip" if gzip else None,
        ))

    @_route
    def metrics_route(self, request: _Request) -> _Response:
        gzip = _accepts_gzip(request)
        return _serve(request, lambda ctx, eid: _Encoded(
            self.metrics_json_impl(ctx, eid, _arg(request, "experiment"), gzip=gzip), "gzip" if gzip else None,
        ))

    @_route
    def node_route(self, request: _Request) -> _Response:
        return _serve(
            request,
            lambda ctx, eid: self.node_impl(ctx, eid, _arg(request, "experiment"), _arg(request, "node")),
        )

    @_route
    def status_route(self, request: _Request) -> _Response:
        revisions = [r for r in request.args.getlist("revision") if len(r) <= 200][:MAX_REVISIONS]
        return _serve(request, lambda ctx, eid: self.status_impl(ctx, eid, _arg(request, "experiment"), revisions))

    @_route
    def restore_route(self, request: _Request) -> _Response:
        return _serve(request, lambda ctx, eid: self.restore_impl(ctx, eid, _json_body(request)),
                      post=True, hosts=self._hosts)

    @_route
    def stop_route(self, request: _Request) -> _Response:
        return _serve(request, lambda ctx, eid: self.stop_impl(ctx, eid, _json_body(request)), post=True)

    @_route
    def note_route(self, request: _Request) -> _Response:
        return _serve(request, lambda ctx, eid: self.note_impl(ctx, eid, _json_body(request)),
                      post=True, hosts=self._hosts)

    @_route
    def hyperparameters_route(self, request: _Request) -> _Response:
        return _serve(
            request, lambda ctx, eid: self.hyperparameters_impl(ctx, eid, _json_body(request)),
            post=True, hosts=self._hosts,
        )

    @_route
    def search_route(self, request: _Request) -> _Response:
        return _serve(request, lambda ctx, eid: self.search_impl(ctx, eid, _json_body(request)), post=True)

    @_route
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


def static_file(rel: str, root: str = STATIC_DIR) -> tuple[str, str] | None:
    """``(path, content type)`` of a file under ``root``, or None.

    ``rel`` is the decoded path after ``/static/``. Refused: empty or ``.``/
    ``..`` parts, backslashes, NUL, hidden files, unknown extensions, and any
    path whose real location (symlinks resolved) is outside ``root``.
    """
    if not rel or "\x00" in rel or "\\" in rel or rel.startswith("/"):
        return None
    parts = rel.split("/")
    if any(p in ("", ".", "..") or p.startswith(".") for p in parts):
        return None
    content_type = _CONTENT_TYPES.get(posixpath.splitext(rel)[1].lower())
    if content_type is None:
        return None
    real_root = os.path.realpath(root)
    path = os.path.realpath(os.path.join(real_root, *parts))
    if os.path.commonpath([real_root, path]) != real_root or not os.path.isfile(path):
        return None
    return path, content_type


def _arg(request: _Request, name: str) -> str:
    value = request.args.get(name)
    if value is None or value == "":
        raise RequestError(400, f"missing query parameter {name!r}, e.g. ?{name}=...")
    return value


def _check_keys(body: Mapping[str, Any], *, required: tuple[str, ...], optional: tuple[str, ...]) -> None:
    for key in required:
        if key not in body:
            raise RequestError(400, f"{key}: missing; the body needs {', '.join(required)}")
    allowed = required + optional
    for key in body:
        if key not in allowed:
            raise RequestError(400, f"{key}: unknown key; allowed keys are {', '.join(allowed)}")


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


def _same_origin(request: _Request) -> bool:
    """Whether a browser's ``Origin`` (when sent) is this server's ``Host``."""
    origin = request.headers.get("Origin")
    if origin is None:
        return request.headers.get("Sec-Fetch-Site", "same-origin") in ("same-origin", "none")
    host = request.headers.get("Host", "")
    try:
        netloc = urlsplit(origin).netloc
    except ValueError:
        return False
    return bool(host) and netloc.lower() == host.lower()


def _json_body(request: _Request) -> dict[str, Any]:
    """The request's JSON object, with the checks that a write needs."""
    mimetype = (request.mimetype or "").lower()
    if mimetype != "application/json":
        raise RequestError(
            415, f"Content-Type must be application/json, got {request.content_type or 'none'!r}"
        )
    length = request.content_length
    if length is not None and length > MAX_BODY_BYTES:
        raise RequestError(413, f"request body of {length} bytes is larger than {MAX_BODY_BYTES} bytes")
    data = request.stream.read(MAX_BODY_BYTES + 1)
    if len(data) > MAX_BODY_BYTES:
        raise RequestError(413, f"request body is larger than {MAX_BODY_BYTES} bytes")
    try:
        body = strict_json.loads(data.decode("utf-8"), what="request body", max_depth=MAX_BODY_DEPTH)
    except UnicodeDecodeError as e:
        raise RequestError(400, f"request body is not UTF-8 text (byte {e.start})") from None
    except ControlError as e:
        raise RequestError(400, str(e)) from None
    if not isinstance(body, dict):
        raise RequestError(400, "request body must be a JSON object like {\"experiment\": \"digits\", ...}")
    return body


class _Encoded:
    """A reply's JSON bytes, already compressed when ``encoding`` says so."""

    def __init__(self, data: bytes, encoding: str | None) -> None:
        self.data = data
        self.encoding = encoding


def _accepts_gzip(request: _Request) -> bool:
    """Whether the client takes a gzip-compressed reply (a browser always does)."""
    return bool(request.accept_encodings["gzip"])


def _serve(
    request: _Request,
    impl: Callable[[Any, str], Any],
    *,
    post: bool = False,
    hosts: HostPolicy | None = None,
) -> _Response:
    """Runs ``impl(ctx, experiment_id)`` and answers JSON, or a JSON error."""
    method = "POST" if post else "GET"
    try:
        if request.method != method and not (method == "GET" and request.method == "HEAD"):
            return http_util.Respond(
                request, {"error": f"use {method} for this route"}, "application/json",
                code=405, headers=[("Allow", method)],
            )
        if post and hosts is not None and not hosts.allows(request.headers.get("Host")):
            raise RequestError(403, hosts.refusal(request.headers.get("Host", "")))
        if post and not _same_origin(request):
            raise RequestError(
                403,
                f"cross-origin request refused: Origin {request.headers.get('Origin')!r} "
                f"is not this server ({request.headers.get('Host')!r})",
            )
        ctx = plugin_util.context(request.environ)
        experiment_id = plugin_util.experiment_id(request.environ)
        try:
            body = impl(ctx, experiment_id)
        except Exception as e:  # typed errors become 4xx; others re-raise
            raise _error_for(e) from None
        if isinstance(body, _Encoded):  # compressed by the cache: Respond passes it on as it is
            return http_util.Respond(request, body.data, "application/json", content_encoding=body.encoding,
                                     headers=[("Vary", "Accept-Encoding")])
        if not isinstance(body, bytes):
            body = dumps_json(body)
        return http_util.Respond(request, body, "application/json")
    except RequestError as e:
        return http_util.Respond(request, {"error": str(e)}, "application/json", code=e.code)
    except Exception:
        logger.exception("retune: %s %s failed", request.method, request.path)
        return http_util.Respond(
            request,
            {"error": "internal error in the Retune plugin; the TensorBoard log has the details"},
            "application/json",
            code=500,
        )

