"""A TCP proxy on loopback that holds back the answer to an EC2 RunInstances for a while:
the launch reaches the endpoint at once, its answer does not. A test kills the daemon in
that window, as a crash between asking for an instance and hearing of it."""

from __future__ import annotations

import contextlib
import socket
import threading
import time

HOLD_MARK = b"Action=RunInstances"


class HoldingProxy:
    def __init__(self, upstream_port: int, hold: float) -> None:
        self.upstream_port = upstream_port
        self.hold = hold
        self.held = threading.Event()  # set once an answer is being held back
        self._server = socket.create_server(("127.0.0.1", 0))
        self.port = self._server.getsockname()[1]
        self._closed = False
        threading.Thread(target=self._accept, daemon=True).start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def close(self) -> None:
        self._closed = True
        self._server.close()

    def _accept(self) -> None:
        while not self._closed:
            try:
                client, _ = self._server.accept()
            except OSError:
                return
            upstream = socket.create_connection(("127.0.0.1", self.upstream_port))
            link = _Link(client, upstream)
            threading.Thread(target=self._pump, args=(link, True), daemon=True).start()
            threading.Thread(target=self._pump, args=(link, False), daemon=True).start()

    def _pump(self, link: _Link, request: bool) -> None:
        source, sink = (link.client, link.upstream) if request else (link.upstream, link.client)
        with contextlib.suppress(OSError):
            while data := source.recv(65536):
                if request and HOLD_MARK in data:
                    link.launching.set()
                elif not request and link.launching.is_set():
                    link.launching.clear()
                    self.held.set()
                    time.sleep(self.hold)
                sink.sendall(data)
        link.done()


class _Link:
    """One client connection and its upstream; closed when both directions ended."""

    def __init__(self, client: socket.socket, upstream: socket.socket) -> None:
        self.client, self.upstream = client, upstream
        self.launching = threading.Event()
        self._lock = threading.Lock()
        self._ended = 0

    def done(self) -> None:
        for sock in (self.client, self.upstream):  # wakes the other direction
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)
        with self._lock:
            self._ended += 1
            if self._ended == 2:
                self.client.close()
                self.upstream.close()
