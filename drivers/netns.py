"""TCP sockets created inside a network namespace (/run/netns/<name>), so that SshRunner
can reach hosts that live in one (`HostAccess(netns=...)`, as the tests' lab hosts do)."""

from __future__ import annotations

import ctypes
import os
import socket
import threading

from drivers.protocol import SAFE_NAME

_libc: ctypes.CDLL | None = None


def _setns_net(fd: int) -> None:
    global _libc
    if hasattr(os, "setns"):  # Python 3.12+
        os.setns(fd, 0x40000000)
        return
    if _libc is None:
        _libc = ctypes.CDLL(None, use_errno=True)
    if _libc.setns(fd, 0x40000000) != 0:  # CLONE_NEWNET
        errno = ctypes.get_errno()
        raise OSError(errno, os.strerror(errno))


def netns_socket(netns: str, family: int) -> socket.socket:
    """A TCP socket created inside /run/netns/<netns>; it stays there once this thread ends."""
    if not SAFE_NAME.match(netns):
        raise ValueError(f"invalid netns name {netns!r}")
    box: dict[str, socket.socket | BaseException] = {}

    def make() -> None:  # setns() affects only the calling thread: use a throwaway one
        try:
            fd = os.open(f"/run/netns/{netns}", os.O_RDONLY | os.O_CLOEXEC)
            try:
                _setns_net(fd)
            finally:
                os.close(fd)
            box["sock"] = socket.socket(family, socket.SOCK_STREAM)
        except BaseException as exc:  # handed to the caller's thread
            box["exc"] = exc

    thread = threading.Thread(target=make, name=f"netns-{netns}")
    thread.start()
    thread.join()
    made = box.get("sock") or box["exc"]
    if isinstance(made, BaseException):
        raise made
    return made
