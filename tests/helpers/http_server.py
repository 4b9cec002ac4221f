"""A tiny threaded HTTP server on 127.0.0.1 for offline download tests.

Python's ``http.server`` ignores ``Range`` headers, so resumed downloads cannot be tested with
it; this one serves in-memory routes with single-range support, can fail the first requests of
a route (to exercise retries) and logs every request it receives.
"""

from __future__ import annotations

import re
import threading
import time
from dataclasses import dataclass
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import TracebackType


@dataclass
class Route:
    """What the server answers for one path."""

    body: bytes
    content_type: str
    fail_first: int = 0  # answer 503 to this many requests before serving the body
    bytes_per_s: int = 0  # > 0: send the body slowly (a download to interrupt mid-file)


@dataclass(frozen=True)
class Request:
    """One request the server received."""

    method: str
    path: str
    range: str | None


class _QuietServer(ThreadingHTTPServer):
    daemon_threads = True

    def handle_error(self, request: object, client_address: object) -> None:
        """Clients (yt-dlp probing a file) may hang up mid-answer; that is not an error."""


class MediaServer:
    """Serve ``routes`` on a random free port of 127.0.0.1 in a background thread."""

    def __init__(self) -> None:
        self.routes: dict[str, Route] = {}
        self.requests: list[Request] = []
        self._lock = threading.Lock()
        self._httpd = _QuietServer(("127.0.0.1", 0), self._handler_class())
        self._thread: threading.Thread | None = None

    def add(self, path: str, body: bytes | str, content_type: str, fail_first: int = 0,
            bytes_per_s: int = 0) -> str:
        """Serve ``body`` at ``path``; return its full URL."""
        data = body.encode("utf-8") if isinstance(body, str) else body
        self.routes[path] = Route(data, content_type, fail_first, bytes_per_s)
        return self.url(path)

    def url(self, path: str) -> str:
        """Full URL of ``path`` on this server."""
        host, port = self._httpd.server_address[:2]
        return f"http://{host}:{port}{path}"

    def start(self) -> MediaServer:
        """Start serving in a daemon thread."""
        self._thread = threading.Thread(target=self._httpd.serve_forever, args=(0.05,), daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        """Stop serving and close the socket."""
        if self._thread is not None:
            self._httpd.shutdown()
            self._thread.join()
            self._thread = None
        self._httpd.server_close()

    def __enter__(self) -> MediaServer:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    def _handler_class(self) -> type[BaseHTTPRequestHandler]:
        server = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def do_GET(self) -> None:
                self._answer(send_body=True)

            def do_HEAD(self) -> None:
                self._answer(send_body=False)

            def log_message(self, format: str, *args: object) -> None:
                """Keep test output quiet; requests are logged in ``server.requests``."""

            def _answer(self, send_body: bool) -> None:
                path = self.path.split("?", 1)[0]
                range_header = self.headers.get("Range")
                with server._lock:
                    server.requests.append(Request(self.command, path, range_header))
                    route = server.routes.get(path)
                    failing = route is not None and route.fail_first > 0
                    if failing:
                        route.fail_first -= 1
                if route is None:
                    self._send(HTTPStatus.NOT_FOUND, b"not found", "text/plain", send_body)
                elif failing:
                    self._send(HTTPStatus.SERVICE_UNAVAILABLE, b"busy", "text/plain", send_body)
                else:
                    self._send_route(route, range_header, send_body)

            def _send_route(self, route: Route, range_header: str | None, send_body: bool) -> None:
                size = len(route.body)
                match = re.fullmatch(r"bytes=(\d*)-(\d*)", range_header or "")
                if match is None or not (match[1] or match[2]):
                    self._send(HTTPStatus.OK, route.body, route.content_type, send_body,
                               rate=route.bytes_per_s)
                    return
                if match[1]:
                    start = int(match[1])
                    end = min(int(match[2]), size - 1) if match[2] else size - 1
                else:  # suffix range: the last N bytes
                    start, end = max(size - int(match[2]), 0), size - 1
                if start >= size or start > end:
                    self.send_response(HTTPStatus.REQUESTED_RANGE_NOT_SATISFIABLE)
                    self.send_header("Content-Range", f"bytes */{size}")
                    self.send_header("Content-Length", "0")
                    self.end_headers()
                    return
                headers = {"Content-Range": f"bytes {start}-{end}/{size}"}
                body = route.body[start : end + 1]
                self._send(HTTPStatus.PARTIAL_CONTENT, body, route.content_type, send_body, headers,
                           route.bytes_per_s)

            def _send(
                self,
                status: HTTPStatus,
                body: bytes,
                content_type: str,
                send_body: bool,
                headers: dict[str, str] | None = None,
                rate: int = 0,
            ) -> None:
                self.send_response(status)
                self.send_header("Content-Type", content_type)
                self.send_header("Content-Length", str(len(body)))
                self.send_header("Accept-Ranges", "bytes")
                for key, value in (headers or {}).items():
                    self.send_header(key, value)
                self.end_headers()
                if not send_body:
                    return
                step = max(rate // 10, 1) if rate else len(body) or 1
                for start in range(0, len(body), step):
                    self.wfile.write(body[start : start + step])
                    if rate:
                        self.wfile.flush()
                        time.sleep(0.1)

        return Handler
