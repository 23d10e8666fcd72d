"""`nubo serve`: prepare the data dir, start the daemon and the front doors, serve."""

from __future__ import annotations

import asyncio
import logging
import sys

import uvicorn

from apis.app import build
from core import config as config_module
from core.config import Config
from core.daemon import Daemon, prepare
from core.errors import CloudError
from drivers.wiring import DriverSet

log = logging.getLogger("nubo")


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
    cloud = prepare(cfg)
    drivers = DriverSet.from_config(cfg)
    daemon = Daemon(cloud, drivers)
    app = build(cloud, daemon)
    base = f"http://{cfg.host}:{cfg.port}"
    print(f"Nubo listening on {base}/: XML-RPC at /RPC2, EC2 Query at / and "
          f"{'/' + cfg.ec2_path.strip('/')}", flush=True)
    print(f"Data in {cfg.var}; database {cfg.db_url.split('@')[-1]}", flush=True)
    print(f"Admin credentials in {cfg.one_auth}", flush=True)
    server = uvicorn.Server(uvicorn.Config(app, host=cfg.host, port=cfg.port, log_level="warning",
                                           lifespan="on"))
    try:
        asyncio.run(server.serve())
    except KeyboardInterrupt:
        pass
    if server.started is False and not getattr(server, "should_exit", False):
        sys.exit(1)


