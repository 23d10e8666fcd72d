"""The CLI's one way to the daemon: OpenNebula's XML-RPC API at NUBO_URL.

Credentials are `user:password`, read from the file ONE_AUTH names, else `var/one_auth`
under NUBO_VAR (default `./var`, where `nubo serve` writes the admin's), else
`~/.one/one_auth`. Every failure becomes a `CliError`: one line for the user.
"""

from __future__ import annotations

import http.client
import os
import re
import socket
import xml.etree.ElementTree as ET
import xmlrpc.client
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit
from xml.parsers.expat import ExpatError

DEFAULT_URL = "http://127.0.0.1:4567/RPC2"
AUTHENTICATION = 0x100
_METHOD_PREFIX = re.compile(r"^\[[\w.]+\]\s*")


class CliError(Exception):
    """A failure to report as `nubo: error: <message>`."""


class CallFailed(CliError):
    """The daemon answered `[false, message, code]`."""

    def __init__(self, message: str, code: int) -> None:
        super().__init__(message)
        self.code = code


@dataclass(frozen=True)
class Credentials:
    session: str
    source: str


def credentials_path() -> Path:
    """ONE_AUTH, else $NUBO_VAR/one_auth (default ./var), else ~/.one/one_auth."""
    named = os.environ.get("ONE_AUTH")
    if named:
        return Path(named).expanduser()
    local = Path(os.environ.get("NUBO_VAR") or "var") / "one_auth"
    if local.exists():
        return local
    home = Path("~/.one/one_auth").expanduser()
    if home.exists():
        return home
    raise CliError("no credentials: set ONE_AUTH to a file holding user:password, or run "
                   f"where {local} exists, or create {home}")


def load_credentials() -> Credentials:
    path = credentials_path()
    try:
        lines = path.read_text().splitlines()
    except OSError as exc:
        raise CliError(f"cannot read credentials from {path}: {exc.strerror or exc}") from None
    session = lines[0].strip() if lines else ""
    name, sep, _ = session.partition(":")
    if not sep or not name:
        raise CliError(f"{path} must hold user:password on its first line")
    return Credentials(session=session, source=str(path))


def _transport(scheme: str, timeout: float) -> xmlrpc.client.Transport:
    base: type[xmlrpc.client.Transport] = (
        xmlrpc.client.SafeTransport if scheme == "https" else xmlrpc.client.Transport)

    class TimedTransport(base):  # type: ignore[valid-type,misc]
        def make_connection(self, host: Any) -> http.client.HTTPConnection:
            conn: http.client.HTTPConnection = super().make_connection(host)
            conn.timeout = timeout
            return conn

    transport: xmlrpc.client.Transport = TimedTransport(use_builtin_types=True)
    return transport


class Client:
    """Calls `one.*` methods with the session string; returns the result or raises."""

    def __init__(self, url: str, credentials: Credentials, *, timeout: float = 60.0) -> None:
        parts = urlsplit(url)
        if parts.scheme not in ("http", "https") or not parts.netloc:
            raise CliError(f"NUBO_URL must be an http:// or https:// URL, not {url!r}")
        self.url = url
        self.credentials = credentials
        self._proxy = xmlrpc.client.ServerProxy(
            url, transport=_transport(parts.scheme, timeout), allow_none=False,
            use_builtin_types=True)

    @classmethod
    def from_environment(cls) -> Client:
        return cls(os.environ.get("NUBO_URL") or DEFAULT_URL, load_credentials())

    def call(self, method: str, *args: Any) -> Any:
        """`[ok, result, code]` unwrapped: the result, or CallFailed with the message."""
        try:
            reply = getattr(self._proxy, method)(self.credentials.session, *args)
        except ConnectionRefusedError:
            raise self._unreachable("connection refused") from None
        except socket.gaierror:
            raise self._unreachable("unknown host name") from None
        except TimeoutError:
            raise self._unreachable("no answer in time") from None
        except xmlrpc.client.ProtocolError as exc:
            hint = ("the daemon's log says why" if exc.errcode >= 500
                    else "is NUBO_URL right?")
            raise CliError(f"{method}: the server at {self.url} answered HTTP {exc.errcode} "
                           f"{exc.errmsg}; {hint}") from None
        except xmlrpc.client.Fault as exc:
            raise CliError(f"{method}: {exc.faultString}") from None
        except (ExpatError, xmlrpc.client.ResponseError, http.client.HTTPException):
            raise CliError(f"the server at {self.url} sent a reply that is not XML-RPC; "
                           "is NUBO_URL right?") from None
        except OSError as exc:
            raise self._unreachable(exc.strerror or str(exc)) from None
        if not isinstance(reply, list | tuple) or len(reply) < 2:
            raise CliError(f"{method}: unexpected reply {reply!r}")
        ok, result = reply[0], reply[1]
        code = reply[2] if len(reply) > 2 and isinstance(reply[2], int) else 0
        if ok:
            return result
        message = _METHOD_PREFIX.sub("", str(result)) or f"{method} failed"
        if code == AUTHENTICATION:
            message = f"{message} (credentials from {self.credentials.source})"
        raise CallFailed(message, code)

    def document(self, method: str, *args: Any) -> ET.Element:
        """A call whose result is an XML document, parsed."""
        text = self.call(method, *args)
        try:
            return ET.fromstring(str(text))
        except ET.ParseError as exc:
            raise CliError(f"{method}: the daemon sent XML that does not parse ({exc})") from None

    def _unreachable(self, why: str) -> CliError:
        return CliError(f"cannot reach the Nubo daemon at {self.url}: {why} "
                        "(is `nubo serve` running?)")


# --- names or ids ----------------------------------------------------------------------

# kind -> (pool method, its arguments, element of one object, noun in messages)
POOLS: dict[str, tuple[str, tuple[int, ...], str, str]] = {
    "vm": ("one.vmpool.info", (-2, -1, -1, -1), "VM", "VM"),
    "host": ("one.hostpool.info", (), "HOST", "host"),
    "image": ("one.imagepool.info", (-2, -1, -1), "IMAGE", "image"),
    "template": ("one.templatepool.info", (-2, -1, -1), "VMTEMPLATE", "template"),
    "user": ("one.userpool.info", (), "USER", "user"),
    "datastore": ("one.datastorepool.info", (), "DATASTORE", "datastore"),
    "vnet": ("one.vnpool.info", (-2, -1, -1), "VNET", "virtual network"),
}


def resolve(client: Client, kind: str, ref: str) -> int:
    """An id given as digits, or the id of the one object of that kind with that name."""
    ref = ref.strip()
    if ref.isdigit():
        return int(ref)
    method, args, tag, noun = POOLS[kind]
    pool = client.document(method, *args)
    ids = [int(el.findtext("ID") or -1) for el in pool.iter(tag) if el.findtext("NAME") == ref]
    if not ids:
        raise CliError(f"{noun} {ref!r} does not exist (give an id or an existing name)")
    if len(ids) > 1:
        listed = ", ".join(str(i) for i in ids)
        raise CliError(f"several {noun}s are named {ref!r} (ids {listed}); give an id")
    return ids[0]
