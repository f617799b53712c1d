"""The play page's HTTP server: the standard library's http.server, a static page and a JSON API.

    GET  /                 the page (static/play.html + play.js; no build step)
    GET  /api/info         checkpoint, S, frame size, key map, agent or not, start episodes
    GET  /api/state        the current state (see below)
    POST /api/reset        {"episode"?: name, "start"?: latent step} -> state, from real latents
    POST /api/step         {"keys"?: [held keys], "action"?: [D ints], "agent"?: true} -> state

A state holds the decoded frame (PNG data URL), the action applied and its name, the agent's
suggested next actions, predicted reward and continue probability (agent checkpoints), and the
latency of the decision in milliseconds. Bad requests get 400 with {"error": message}.
The server binds 127.0.0.1 by default: reach it from another machine with ``ssh -L PORT:localhost:PORT``.
"""

from __future__ import annotations

import errno
import json
import logging
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

from dreamer.errors import RUN_FOLDER, UserError
from dreamer.viewer.session import PlayError, PlaySession

log = logging.getLogger(__name__)
STATIC = Path(__file__).parent / "static"
FILES = {"/": ("play.html", "text/html; charset=utf-8"), "/index.html": ("play.html", "text/html; charset=utf-8"),
         "/play.js": ("play.js", "text/javascript; charset=utf-8")}
MAX_BODY = 1 << 16


class PortInUseError(UserError, OSError):
    """The port asked for is taken; the message names it."""

    exit_code = RUN_FOLDER


class PlayServer(ThreadingHTTPServer):
    daemon_threads = True
    session: PlaySession | None = None  # None while the models load: the API answers 503


class PlayHandler(BaseHTTPRequestHandler):
    server: PlayServer

    @property
    def session(self) -> PlaySession:
        if self.server.session is None:
            raise PlayError("the models are still loading")
        return self.server.session

    def log_message(self, fmt: str, *args) -> None:
        log.debug("%s %s", self.address_string(), fmt % args)

    def _send(self, code: int, body: bytes, ctype: str) -> None:
        self.send_response(code)
        self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(len(body)))
        self.send_header("Cache-Control", "no-store")
        self.end_headers()
        self.wfile.write(body)

    def _json(self, code: int, obj) -> None:
        self._send(code, json.dumps(obj).encode(), "application/json")

    def do_GET(self) -> None:
        path = self.path.split("?", 1)[0]
        if path in FILES:
            name, ctype = FILES[path]
            self._send(200, (STATIC / name).read_bytes(), ctype)
        elif path in ("/api/info", "/api/state") and self.server.session is None:
            self._json(503, {"error": "the models are still loading"})
        elif path == "/api/info":
            self._json(200, self.session.info())
        elif path == "/api/state":
            self._json(200, self.session.last)
        else:
            self._json(404, {"error": f"no such page {path!r}"})

    def do_POST(self) -> None:
        path = self.path.split("?", 1)[0]
        try:
            length = int(self.headers.get("Content-Length") or 0)
            if length > MAX_BODY:
                raise PlayError(f"request body of {length} bytes is too large")
            raw = self.rfile.read(length) if length else b"{}"
            try:
                body = json.loads(raw or b"{}")
            except json.JSONDecodeError as e:
                raise PlayError(f"request body is not JSON: {e}") from e
            if not isinstance(body, dict):
                raise PlayError("request body must be a JSON object")
            if path == "/api/step":
                keys = body.get("keys")
                if keys is not None and not (isinstance(keys, list) and all(isinstance(k, str) for k in keys)):
                    raise PlayError(f"'keys' must be a list of key names, got {keys!r}")
                state = self.session.step(keys=keys, action=body.get("action"), agent=bool(body.get("agent")))
            elif path == "/api/reset":
                start = body.get("start")
                if start is not None and not isinstance(start, int):
                    raise PlayError(f"'start' must be an integer latent step, got {start!r}")
                state = self.session.reset(episode=body.get("episode") or None, start=start)
            else:
                self._json(404, {"error": f"no such endpoint {path!r}"})
                return
        except PlayError as e:
            self._json(400, {"error": str(e)})
            return
        except Exception as e:  # a bug: tell the page and keep serving
            log.exception("request %s failed", path)
            self._json(500, {"error": f"{type(e).__name__}: {e}"})
            return
        self._json(200, state)


def make_server(session: PlaySession | None, host: str = "127.0.0.1", port: int = 8000) -> PlayServer:
    """A server bound to (host, port) (port 0: a free one); call ``serve_forever`` to run it. The session
    may be set later (``server.session = ...``): binding first reports a taken port before models load."""
    try:
        server = PlayServer((host, port), PlayHandler)
    except OSError as e:
        if e.errno == errno.EADDRINUSE:
            raise PortInUseError(errno.EADDRINUSE, f"port {port} on {host} is already in use; pick another with "
                                 "--port (or --port 0 for a free one)") from e
        raise
    server.session = session
    return server


def url_of(server: PlayServer) -> str:
    host, port = server.server_address[:2]
    return f"http://{'localhost' if host in ('127.0.0.1', '0.0.0.0', '') else host}:{port}/"
