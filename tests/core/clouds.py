"""A core on a real database for service tests: the same bootstrap the daemon runs."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from core import db
from core.config import Config
from core.service import datastores, identity
from core.service.context import Caller, Cloud

ADMIN = Caller(uid=0, gid=0, name="oneadmin")
VM_TEXT = 'NAME = "web"\nMEMORY = 256\nCPU = 0.5\n'


def make_cloud(db_url: str, var: Path, **settings: Any) -> Cloud:
    """Schema, admin and datastores on `db_url`; dispose of `cloud.engine` when done. The
    default datastore registers images in place (DS_MAD dummy) unless `settings` say."""
    settings.setdefault("default_ds_mad", "dummy")
    cfg = Config(var=var, db=db_url, **settings)
    (cfg.remotes / "im" / "dummy.d").mkdir(parents=True, exist_ok=True)
    (cfg.remotes / "vmm" / "dummy").mkdir(parents=True, exist_ok=True)
    engine = db.make_engine(cfg.db_url)
    db.migrate(engine)
    cloud = Cloud(engine=engine, config=cfg)
    identity.bootstrap(cloud, admin_password="pw")
    datastores.bootstrap_datastores(cloud)
    return cloud


def user(cloud: Cloud, name: str) -> Caller:
    identity.create_user(cloud, ADMIN, name=name, password=name + "-pw")
    return identity.authenticate(cloud, f"{name}:{name}-pw")
