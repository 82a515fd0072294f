"""A local HTTP server for the download tests: no test reaches the internet.

It serves the files of a folder the test writes (a GISCO-layout photo tree, a static STAC catalogue,
tiny COGs, a covariate raster), answers byte-range requests (GDAL reads COGs with them), logs every
request, and can fail on purpose: ``server.fail(path, 503, 503)`` makes the next two requests for
``path`` answer 503 before the file is served. A JSON ``POST`` to a path registered with
``server.on_post(path, handler)`` calls ``handler(body_dict) -> (status, dict)`` (a STAC ``/search``).

Use it through the ``http_server`` fixture of ``tests/conftest.py``::

    def test_download(http_server):
        (http_server.root / "a.txt").write_text("hello")
        url = http_server.url("a.txt")
"""

from __future__ import annotations

import json
import re
import threading
from collections import defaultdict, deque
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import unquote, urlsplit


class LocalServer:
    """A threaded HTTP server on 127.0.0.1 serving ``root``; ``stop()`` shuts it down."""

    def __init__(self, root: Path):
        self.root = Path(root)
        self.requests: list[tuple[str, str, str | None]] = []   # (method, path, Range header)
        self._failures: dict[str, deque] = defaultdict(deque)
        self._posts: dict[str, object] = {}
        self._lock = threading.Lock()
        self._httpd = ThreadingHTTPServer(("127.0.0.1", 0), _handler(self))
        self._thread = threading.Thread(target=lambda: self._httpd.serve_forever(poll_interval=0.05), daemon=True)
        self._thread.start()

    @property
    def base(self) -> str:
        host, port = self._httpd.server_address[:2]
        return f"http://{host}:{port}"

    def url(self, path: str = "") -> str:
        """The URL of ``path`` (relative to ``root``)."""
        return f"{self.base}/{path.lstrip('/')}"

    def fail(self, path: str, *statuses: int) -> None:
        """Answer the next requests for ``path`` with ``statuses``, one each, then serve it again."""
        with self._lock:
            self._failures["/" + path.lstrip("/")].extend(statuses)

    def on_post(self, path: str, handler) -> None:
        """Answer a ``POST`` to ``path`` with ``handler(json_body) -> (status, json_dict)``."""
        self._posts["/" + path.lstrip("/")] = handler

    def hits(self, path: str, method: str = "GET") -> int:
        """How many ``method`` requests asked for ``path`` so far."""
        target = "/" + path.lstrip("/")
        return sum(1 for m, p, _ in self.requests if m == method and p == target)

    def stop(self) -> None:
        self._httpd.shutdown()
        self._httpd.server_close()


def _handler(server: LocalServer):
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, *args):            # quiet: the tests read server.requests instead
            pass

        def _path(self) -> str:
            return unquote(urlsplit(self.path).path)

        def _planned_failure(self, path: str) -> bool:
            with server._lock:
                queue = server._failures.get(path)
                status = queue.popleft() if queue else None
            if status is None:
                return False
            self._send(status, b"planned failure", "text/plain",
                       {"Retry-After": "0"} if status in (429, 503) else {})
            return True

        def _send(self, status: int, body: bytes, kind: str, headers: dict | None = None, head=False):
            self.send_response(status)
            self.send_header("Content-Type", kind)
            self.send_header("Content-Length", str(len(body)))
            for key, value in (headers or {}).items():
                self.send_header(key, value)
            self.end_headers()
            if not head:
                self.wfile.write(body)

        def _serve(self, head: bool = False):
            path = self._path()
            server.requests.append((self.command, path, self.headers.get("Range")))
            if self._planned_failure(path):
                return
            file = (server.root / path.lstrip("/")).resolve()
            if server.root.resolve() not in file.parents or not file.is_file():
                self._send(404, b"not found", "text/plain", head=head)
                return
            data = file.read_bytes()
            kind = "application/json" if file.suffix == ".json" else "application/octet-stream"
            match = re.fullmatch(r"bytes=(\d*)-(\d*)", self.headers.get("Range", "").strip())
            if match and data:
                start_text, end_text = match.groups()
                if start_text:
                    start, end = int(start_text), int(end_text) if end_text else len(data) - 1
                else:                                      # "bytes=-N": the last N bytes
                    start, end = max(0, len(data) - int(end_text)), len(data) - 1
                end = min(end, len(data) - 1)
                if start > end:
                    self._send(416, b"", kind, {"Content-Range": f"bytes */{len(data)}"}, head=head)
                    return
                self._send(206, data[start:end + 1], kind,
                           {"Content-Range": f"bytes {start}-{end}/{len(data)}", "Accept-Ranges": "bytes"},
                           head=head)
                return
            self._send(200, data, kind, {"Accept-Ranges": "bytes"}, head=head)

        def do_GET(self):
            self._serve()

        def do_HEAD(self):
            self._serve(head=True)

        def do_POST(self):
            path = self._path()
            server.requests.append(("POST", path, None))
            length = int(self.headers.get("Content-Length") or 0)
            body = self.rfile.read(length) if length else b""
            if self._planned_failure(path):
                return
            handler = server._posts.get(path)
            if handler is None:
                self._send(404, b"not found", "text/plain")
                return
            status, answer = handler(json.loads(body or b"{}"))
            self._send(status, json.dumps(answer).encode(), "application/json")

    return Handler
