"""The plugin's HTTP plumbing: a route's request in, its JSON (or error) out.

:func:`serve` runs a route's ``*_impl`` and answers JSON, turning the typed
errors into 4xx (:func:`error_for`), with the checks that a write needs (method,
host, same origin, a bounded strict-JSON body: :func:`json_body`);
:class:`Encoded` is a reply the cache already compressed; :func:`static_file`
finds a file of the built tab and never one outside it.
"""

from __future__ import annotations

import functools
import logging
import os
import posixpath
from collections.abc import Callable, Iterable, Mapping
from typing import Any
from urllib.parse import urlsplit

from tensorboard import plugin_util
from tensorboard.backend import http_util
from werkzeug import wrappers

from tb_retune._errors import ControlError, PendingRestoreError
from tb_retune.experiment import strict_json
from tb_retune.plugin.hosts import HostPolicy
from tb_retune.reader.experiments import dumps_json
from tb_retune.reader.folders import (
    InvalidExperimentNameError,
    LogdirNotWritableError,
    UnknownExperimentError,
    UnknownNodeError,
)

#: The plugin's logger (a route that fails logs here, and answers 500).
logger = logging.getLogger("tb_retune.plugin.retune_plugin")

__all__ = [
    "MAX_BODY_BYTES", "MAX_BODY_DEPTH", "STATIC_DIR", "Encoded", "RequestError", "accepts_gzip", "arg",
    "check_keys", "error_for", "json_body", "route", "same_origin", "serve", "static_file",
]

#: Largest request body accepted by the POST routes.
MAX_BODY_BYTES = 64 * 1024
#: Deepest nesting accepted in a request body (the restore body needs 3).
MAX_BODY_DEPTH = 8
#: The folder of the tab's built frontend files.
STATIC_DIR = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "static")


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


def route(handler: Callable[[Any, _Request], _Response]) -> _WsgiMethod:
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


def error_for(exc: Exception) -> RequestError:
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



def arg(request: _Request, name: str) -> str:
    value = request.args.get(name)
    if value is None or value == "":
        raise RequestError(400, f"missing query parameter {name!r}, e.g. ?{name}=...")
    return value


def check_keys(body: Mapping[str, Any], *, required: tuple[str, ...], optional: tuple[str, ...]) -> None:
    for key in required:
        if key not in body:
            raise RequestError(400, f"{key}: missing; the body needs {', '.join(required)}")
    allowed = required + optional
    for key in body:
        if key not in allowed:
            raise RequestError(400, f"{key}: unknown key; allowed keys are {', '.join(allowed)}")



def same_origin(request: _Request) -> bool:
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


def json_body(request: _Request) -> dict[str, Any]:
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


class Encoded:
    """A reply's JSON bytes, already compressed when ``encoding`` says so."""

    def __init__(self, data: bytes, encoding: str | None) -> None:
        self.data = data
        self.encoding = encoding


def accepts_gzip(request: _Request) -> bool:
    """Whether the client takes a gzip-compressed reply (a browser always does)."""
    return bool(request.accept_encodings["gzip"])


def serve(
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
        if post and not same_origin(request):
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
            raise error_for(e) from None
        if isinstance(body, Encoded):  # compressed by the cache: Respond passes it on as it is
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
