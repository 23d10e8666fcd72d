"""A web server on loopback for the tests that download (datastore and TM drivers): it
serves the bytes put in its `files` dict, and paths under /slow/ in 20 chunks 0.25 s apart
(a copy that takes a while, with progress to report)."""

from __future__ import annotations

import contextlib
import http.server
import threading
import time
from collections.abc import Iterator

Files = dict[str, bytes]
CHUNKS = 20
PAUSE = 0.25


class _Handler(http.server.BaseHTTPRequestHandler):
    def log_message(self, format: str, *args: object) -> None:
        pass

    def _head(self) -> bytes | None:
        data: bytes | None = self.server.files.get(self.path)  # type: ignore[attr-defined]
        if data is None:
            self.send_error(404)
            return None
        self.send_response(200)
        self.send_header("Content-Type", "application/octet-stream")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        return data

    def do_HEAD(self) -> None:
        self._head()

    def do_GET(self) -> None:
        data = self._head()
        if data is None:
            return
        step = len(data) // CHUNKS + 1 if self.path.startswith("/slow/") else len(data)
        try:
            for start in range(0, len(data), max(step, 1)):
                self.wfile.write(data[start:start + step])
                self.wfile.flush()
                if step < len(data):
                    time.sleep(PAUSE)
        except ConnectionError:
            pass


@contextlib.contextmanager
def serving() -> Iterator[tuple[str, Files]]:
    """(its base URL, the dict of path -> bytes it serves)."""
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
    server.daemon_threads = True
    files: Files = {}
    server.files = files  # type: ignore[attr-defined]
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}", files
    finally:
        server.shutdown()
        server.server_close()
        thread.join()
