"""The web app's HTTP side: Python's own ``http.server``, one HTML page, a small JSON API.

No web framework and nothing fetched from the internet (see docs/app.md for why): the page is
``index.html`` beside this file with plain JavaScript; masks come back as PNG data URLs.

API (JSON in and out; an error is ``{"error": "one line"}`` with status 400):

- ``GET /api/info``: the engines (fp32 PyTorch, then each artifact) and the bundled images;
- ``GET /api/image/<id>``: an image file as stored;
- ``POST /api/upload?name=<file name>``: the raw file as the body -> the image's id and size (at most
  MAX_UPLOAD_BYTES of file and session.MAX_UPLOAD_PIXELS of image, read from its header);
- ``POST /api/segment``: ``{"image": id, "points": [[x, y, label], ...], "box": [x0, y0, x1, y1] | null}``;
- ``POST /api/everything``: ``{"image": id}``.
"""

from __future__ import annotations

import json
import mimetypes
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from importlib.resources import files
from typing import Any
from urllib.parse import parse_qs, urlparse

from edge_sam.errors import EdgeSamError

from .session import AppSession

MAX_UPLOAD_BYTES = 40 * 1024 * 1024
PAGE = "index.html"


def page_bytes() -> bytes:
    return (files("edge_sam.apps.web") / PAGE).read_bytes()


class AppHandler(BaseHTTPRequestHandler):
    session: AppSession  # set on the subclass make_server builds
    server_version = "edge-sam-app"

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - the stdlib's name
        """Quiet: one line per request would bury the startup line."""

    # -- responses ----------------------------------------------------------------------------
    def _send(self, status: int, body: bytes, content_type: str) -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        self.send_header("Cache-Control", "no-store")
        self.end_headers()
        self.wfile.write(body)

    def _json(self, data: Any, status: int = HTTPStatus.OK) -> None:
        self._send(status, json.dumps(data).encode(), "application/json")

    def _error(self, message: str, status: int = HTTPStatus.BAD_REQUEST) -> None:
        self._json({"error": message}, status)

    def _body(self) -> bytes:
        length = int(self.headers.get("Content-Length") or 0)
        if length > MAX_UPLOAD_BYTES:
            raise EdgeSamError(f"upload of {length / 1e6:.0f} MB is over the {MAX_UPLOAD_BYTES / 1e6:.0f} MB limit")
        return self.rfile.read(length)

    def _json_body(self) -> dict[str, Any]:
        try:
            data = json.loads(self._body() or b"{}")
        except json.JSONDecodeError as exc:
            raise EdgeSamError(f"request body is not JSON: {exc}") from None
        if not isinstance(data, dict):
            raise EdgeSamError("request body must be a JSON object")
        return data

    # -- routes -------------------------------------------------------------------------------
    def do_GET(self) -> None:  # noqa: N802 - the stdlib's name
        path = urlparse(self.path).path
        try:
            if path in ("/", "/index.html"):
                self._send(HTTPStatus.OK, page_bytes(), "text/html; charset=utf-8")
            elif path == "/api/info":
                self._json(self.session.info())
            elif path.startswith("/api/image/"):
                stored = self.session.image(path.rsplit("/", 1)[-1])
                self._send(HTTPStatus.OK, stored.data, mimetypes.guess_type(stored.name)[0] or "application/octet-stream")
            else:
                self._error(f"no such page: {path}", HTTPStatus.NOT_FOUND)
        except EdgeSamError as exc:
            self._error(str(exc))

    def do_POST(self) -> None:  # noqa: N802 - the stdlib's name
        url = urlparse(self.path)
        try:
            if url.path == "/api/upload":
                name = parse_qs(url.query).get("name", ["upload"])[0]
                self._json(self.session.upload(name, self._body()))
            elif url.path == "/api/segment":
                body = self._json_body()
                self._json(self.session.segment(str(body.get("image")), body.get("points") or [], body.get("box")))
            elif url.path == "/api/everything":
                self._json(self.session.everything(str(self._json_body().get("image"))))
            else:
                self._error(f"no such endpoint: {url.path}", HTTPStatus.NOT_FOUND)
        except EdgeSamError as exc:
            self._error(str(exc))
        except (TypeError, ValueError, IndexError) as exc:  # a malformed prompt list
            self._error(f"malformed request: {exc}")


def make_server(session: AppSession, host: str = "127.0.0.1", port: int = 0) -> ThreadingHTTPServer:
    """A server bound to ``host:port`` (port 0: a free one; read it from ``server_address``)."""
    handler = type("BoundAppHandler", (AppHandler,), {"session": session})
    return ThreadingHTTPServer((host, port), handler)
