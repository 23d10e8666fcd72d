"""`nubo serve`: prepare the data dir, start the daemon and the front doors, serve.

The main port carries XML-RPC, EC2 and OCCI (and the daemon's loops, in its app's lifespan); a
second port carries OpenNebula's OCCI-XML dialect, whose paths would clash with the main
port's. Both servers run on one event loop; the main one owns the signals and the second
stops with it.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import logging
import socket
import sys
from collections.abc import Iterator
from typing import Any

import uvicorn
from sqlmodel import select

from apis.app import build
from apis.occi_xml.app import build as build_occi_xml
from core import config as config_module
from core import localhost
from core.config import Config
from core.daemon import Daemon, prepare
from core.errors import CloudError
from core.models import Host
from drivers.wiring import DriverSet

log = logging.getLogger("nubo")


class _Follower(uvicorn.Server):
    """A server that leaves the signals to the leader and stops when the leader does."""

    def __init__(self, config: uvicorn.Config, leader: uvicorn.Server) -> None:
        super().__init__(config)
        self.leader = leader

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        yield

    async def on_tick(self, counter: int) -> bool:
        return self.leader.should_exit or await super().on_tick(counter)


def _listen(cfg: Config) -> socket.socket | None:
    """The OCCI-XML socket, bound and listening before anything starts (None when
    OCCI_XML_PORT is 0); a port that cannot be had ends start-up with a clear message."""
    if not cfg.occi_xml_port:
        return None
    if cfg.occi_xml_port == cfg.port:
        sys.exit(f"nubo: error: OCCI_XML_PORT ({cfg.occi_xml_port}) must differ from PORT")
    family = socket.AF_INET6 if ":" in cfg.host else socket.AF_INET
    # IPPROTO_TCP, not 0: asyncio sets TCP_NODELAY only on sockets that say TCP, and
    # without it every keep-alive answer waits for the client's delayed ACK (40 ms)
    sock = socket.socket(family, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((cfg.host, cfg.occi_xml_port))
        sock.listen()
    except OSError as exc:
        sock.close()
        sys.exit(f"nubo: error: cannot listen on {cfg.host}:{cfg.occi_xml_port} for OCCI-XML: "
                 f"{exc.strerror or exc}; set OCCI_XML_PORT in nubo.conf (or "
                 "NUBO_OCCI_XML_PORT) to a free port, or to 0 to turn OCCI-XML off")
    return sock


async def _serve_all(main: uvicorn.Server, second: uvicorn.Server | None,
                     sock: socket.socket | None) -> None:
    """Both servers on this loop. The main one runs in this task, not in a gathered one: a
    start-up failure exits (SystemExit) after the second has stopped, and the loop still
    shuts down cleanly."""
    if second is None or sock is None:
        await main.serve()
        return
    follower = asyncio.create_task(second.serve(sockets=[sock]))
    try:
        await main.serve()
    finally:
        second.should_exit = True
        await follower


def _run(main: Any) -> None:
    """The event loop: uvloop when installed (a faster loop for the HTTP front doors),
    else asyncio's own."""
    try:
        import uvloop
    except ImportError:
        asyncio.run(main)
        return
    uvloop.run(main)


def _tune_gc() -> None:
    """Fewer garbage collections. With CPython's defaults a 20,000-instance DescribeInstances
    spends more time in full collections, each walking every object the listing has built
    so far, than in the listing: its cost per instance tripled from 2,000 to 20,000. The
    objects loaded at start-up (modules, botocore's EC2 model) are frozen out of them."""
    gc.freeze()
    gc.set_threshold(50_000, 20, 20)


def serve(cfg: Config | None = None) -> None:
    try:
        cfg = cfg or config_module.load()
    except CloudError as exc:
        print(f"nubo: error: {exc}", file=sys.stderr)
        sys.exit(1)
    logging.basicConfig(level=logging.INFO,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    # every driver call is in the VM's log; the daemon's own log keeps only failures
    logging.getLogger("nubo.drivers").setLevel(logging.WARNING)
    logging.getLogger("asyncssh").setLevel(logging.WARNING)  # it logs every channel at INFO
    sock = _listen(cfg)
    cloud = prepare(cfg)
    drivers = DriverSet.from_config(cfg)
    daemon = Daemon(cloud, drivers)
    app = build(cloud, daemon)
    _tune_gc()
    base = f"http://{cfg.host}:{cfg.port}"
    print(f"Nubo listening on {base}/: XML-RPC at /RPC2, EC2 Query at / and "
          f"{'/' + cfg.ec2_path.strip('/')}, OCCI 1.1/1.2 at /-/", flush=True)
    if sock is not None:
        print(f"OCCI-XML (libcloud's OpenNebula driver) on http://{cfg.host}:{cfg.occi_xml_port}/",
              flush=True)
    print(f"Data in {cfg.var}; database {cfg.db_url.split('@')[-1]}", flush=True)
    print(f"Admin credentials in {cfg.one_auth}", flush=True)
    with cloud.session() as s:
        host = s.exec(select(Host).where(Host.name == "localhost")).first()
    if host is not None:
        print(localhost.describe(host.vmm_mad, cfg), flush=True)
    # no access log: it is below the log level anyway, and still costs every request a call
    quiet: dict[str, Any] = {"log_level": "warning", "access_log": False}
    server = uvicorn.Server(uvicorn.Config(app, host=cfg.host, port=cfg.port, lifespan="on",
                                           **quiet))
    second = None if sock is None else _Follower(uvicorn.Config(
        build_occi_xml(cloud), lifespan="off", **quiet), server)
    try:
        _run(_serve_all(server, second, sock))
    except KeyboardInterrupt:
        pass
    if server.started is False and not getattr(server, "should_exit", False):
        sys.exit(1)
