"""nubo.conf: the daemon's configuration, in the same attribute language as oned.conf.

Every key has an embedded default, so `nubo serve` runs with no file at all. The data
directory (`var/` under the current directory unless NUBO_VAR says otherwise) holds the
SQLite database, the remotes tree the drivers run from, the admin credentials and the
localhost datastores.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from core import template
from core.errors import InvalidRequest

if TYPE_CHECKING:
    from core.hooks import Spec


@dataclass(frozen=True)
class InstanceType:
    """A named size (EC2 instance types, OCCI resource templates): CPU share, vCPUs, MB."""

    name: str
    cpu: float
    vcpu: int
    memory: int


DEFAULT_INSTANCE_TYPES = tuple(InstanceType(*row) for row in (
    ("t2.nano", 0.25, 1, 512),
    ("t2.micro", 0.5, 1, 1024),
    ("t2.small", 1, 1, 2048),
    ("t2.medium", 2, 2, 4096),
    ("m1.small", 1, 1, 1740),
    ("m1.medium", 1, 1, 3840),
    ("m1.large", 2, 2, 7680),
    ("m5.large", 2, 2, 8192),
    ("m5.xlarge", 4, 4, 16384),
    ("c5.large", 2, 2, 4096),
    ("r5.large", 2, 2, 16384),
))


@dataclass
class Config:
    var: Path
    host: str = "127.0.0.1"
    port: int = 4567
    occi_xml_port: int = 4568  # OpenNebula's OCCI-XML dialect (libcloud's driver); 0: off
    db: str = ""  # SQLAlchemy URL; default sqlite file under var
    sched_interval: float = 30.0
    max_vm: int = 300
    max_dispatch: int = 30
    max_host: int = 1
    sched_policy: int = 1
    sched_rank: str = ""
    monitoring_interval: float = 60.0
    vm_polling_interval: float = 60.0
    driver_timeout: float = 300.0
    monitor_timeout: float = 60.0
    dispatch_concurrency: int = 16
    datastore_location: str = ""  # default: <var>/datastores
    scripts_remote_dir: str = "/var/tmp/one"
    ssh_user: str = ""
    ssh_key: str = ""
    ssh_known_hosts: str = ""
    ssh_config: str = ""  # an ssh_config for the drivers that run ssh themselves (TM)
    register_localhost: bool = True
    # `auto`: qemu (im kvm, tm shared) when qemu works here, else dummy (core.localhost)
    localhost_im: str = "auto"
    localhost_vmm: str = "auto"
    localhost_tm: str = "auto"
    default_ds_mad: str = "fs"  # DS_MAD of the default datastore (id 1) when first created
    ds_concurrency: int = 4  # datastore driver actions (image copies) run at once
    ds_timeout: float = 7200.0  # seconds before a datastore action (a copy) is killed
    ec2_region: str = "us-east-1"  # answered when a request names none (SigV2)
    ec2_path: str = "/ec2"  # the EC2 Query API answers here and at /
    ec2_rate: float = 1000.0  # requests per second per access key (0: no limit)
    ec2_burst: float = 2000.0
    instance_types: tuple[InstanceType, ...] = DEFAULT_INSTANCE_TYPES
    default_instance_type: str = "m1.small"
    terminated_visible: float = 3600.0  # seconds a finished VM stays in EC2 listings
    ec2_public_network: str = ""  # vnet (name or id) whose leases are the Elastic IPs
    ec2_default_network: str = ""  # vnet (name or id) of instances launched without a subnet
    hooks: tuple[Spec, ...] = ()  # VM_HOOK and HOST_HOOK (core.hooks)
    hook_concurrency: int = 8  # hook commands run at once
    hook_timeout: float = 60.0  # seconds before a hook command is stopped
    host_missed_probes: int = 1  # probes failed in a row before a host goes to ERROR
    heartbeat_interval: float = 2.0  # seconds between two heartbeats of an SSH host (0: off)
    host_missed_beats: int = 2  # heartbeats missed in a row before a host goes to ERROR
    fence_command: str = ""  # host_error's way to fence a failed host (core.hooks; README)
    fence_grace: float = 10.0  # without one: seconds a host stays unreachable to count as down
    extra: template.Template = field(default_factory=template.Template)

    @property
    def db_url(self) -> str:
        return self.db or f"sqlite:///{self.var / 'nubo.db'}"

    @property
    def remotes(self) -> Path:
        return self.var / "remotes"

    @property
    def one_auth(self) -> Path:
        return self.var / "one_auth"

    @property
    def datastores(self) -> str:
        """DATASTORE_LOCATION: where VM dirs live on hosts (a host attribute may override)."""
        return self.datastore_location or str(self.var / "datastores")


# config key -> (attribute, type)
_KEYS: dict[str, tuple[str, type]] = {
    "LISTEN": ("host", str),
    "PORT": ("port", int),
    "OCCI_XML_PORT": ("occi_xml_port", int),
    "DB": ("db", str),
    "SCHED_INTERVAL": ("sched_interval", float),
    "MAX_VM": ("max_vm", int),
    "MAX_DISPATCH": ("max_dispatch", int),
    "MAX_HOST": ("max_host", int),
    "MONITORING_INTERVAL": ("monitoring_interval", float),
    "VM_POLLING_INTERVAL": ("vm_polling_interval", float),
    "DRIVER_TIMEOUT": ("driver_timeout", float),
    "MONITOR_TIMEOUT": ("monitor_timeout", float),
    "DISPATCH_CONCURRENCY": ("dispatch_concurrency", int),
    "DATASTORE_LOCATION": ("datastore_location", str),
    "SCRIPTS_REMOTE_DIR": ("scripts_remote_dir", str),
    "SSH_USER": ("ssh_user", str),
    "SSH_KEY": ("ssh_key", str),
    "SSH_KNOWN_HOSTS": ("ssh_known_hosts", str),
    "SSH_CONFIG": ("ssh_config", str),
    "LOCALHOST_IM": ("localhost_im", str),
    "LOCALHOST_VMM": ("localhost_vmm", str),
    "LOCALHOST_TM": ("localhost_tm", str),
    "DEFAULT_DS_MAD": ("default_ds_mad", str),
    "DS_CONCURRENCY": ("ds_concurrency", int),
    "DS_TIMEOUT": ("ds_timeout", float),
    "HOOK_CONCURRENCY": ("hook_concurrency", int),
    "HOOK_TIMEOUT": ("hook_timeout", float),
    "FENCE_COMMAND": ("fence_command", str),
    "HOST_MISSED_PROBES": ("host_missed_probes", int),
    "HEARTBEAT_INTERVAL": ("heartbeat_interval", float),
    "HOST_MISSED_BEATS": ("host_missed_beats", int),
    "FENCE_GRACE": ("fence_grace", float),
    "EC2_REGION": ("ec2_region", str),
    "EC2_PATH": ("ec2_path", str),
    "EC2_RATE": ("ec2_rate", float),
    "EC2_BURST": ("ec2_burst", float),
    "EC2_PUBLIC_NETWORK": ("ec2_public_network", str),
    "EC2_DEFAULT_NETWORK": ("ec2_default_network", str),
}


def load(var: Path | None = None, path: Path | None = None) -> Config:
    """Defaults, then `<var>/nubo.conf` (or `path`), then NUBO_* environment overrides."""
    var = (var or Path(os.environ.get("NUBO_VAR", "var"))).resolve()
    cfg = Config(var=var)
    conf_path = path or Path(os.environ.get("NUBO_CONF", var / "nubo.conf"))
    if conf_path.exists():
        apply_text(cfg, conf_path.read_text(), source=str(conf_path))
    if os.environ.get("NUBO_DB"):
        cfg.db = os.environ["NUBO_DB"]
    if os.environ.get("NUBO_PORT"):
        cfg.port = _convert("NUBO_PORT", os.environ["NUBO_PORT"], int, "environment")
    if os.environ.get("NUBO_OCCI_XML_PORT"):
        cfg.occi_xml_port = _convert("NUBO_OCCI_XML_PORT", os.environ["NUBO_OCCI_XML_PORT"], int,
                                     "environment")
    return cfg


# `HOST HOOK = [` as the seed's slides print it (a space for the underscore)
_SPACED_HOOK = re.compile(r"(?im)^(\s*)(HOST|VM) HOOK(\s*=)")


def apply_text(cfg: Config, text: str, *, source: str = "nubo.conf") -> None:
    text = _SPACED_HOOK.sub(r"\1\2_HOOK\3", text)
    try:
        parsed = template.parse(text)
    except InvalidRequest as exc:
        raise InvalidRequest(f"{source}: {exc}") from exc
    for name, value in parsed:
        if name in _KEYS and isinstance(value, str):
            attr, kind = _KEYS[name]
            setattr(cfg, attr, _convert(name, value, kind, source))
        elif name == "DEFAULT_SCHED" and isinstance(value, dict):
            if "POLICY" in value:
                cfg.sched_policy = _convert("DEFAULT_SCHED/POLICY", value["POLICY"], int, source)
            cfg.sched_rank = value.get("RANK", cfg.sched_rank)
        elif name == "INSTANCE_TYPE" and isinstance(value, dict):
            _add_instance_type(cfg, value, source)
        elif name == "DEFAULT_INSTANCE_TYPE" and isinstance(value, str):
            cfg.default_instance_type = value
        elif name == "TERMINATED_VISIBLE" and isinstance(value, str):
            cfg.terminated_visible = _convert(name, value, float, source)
        elif name == "REGISTER_LOCALHOST" and isinstance(value, str):
            cfg.register_localhost = value.upper() in ("YES", "TRUE", "1")
        elif name in ("VM_HOOK", "HOST_HOOK") and isinstance(value, dict):
            from core import hooks  # it renders documents, which read the configuration

            resource = "vm" if name == "VM_HOOK" else "host"
            cfg.hooks = (*cfg.hooks, hooks.spec(resource, value, where=f"{source}: "))
        else:
            cfg.extra.add(name, value)


def _add_instance_type(cfg: Config, spec: dict[str, str], source: str) -> None:
    """INSTANCE_TYPE = [ NAME = "x1.big", CPU = 4, VCPU = 4, MEMORY = 16384 ]: adds or
    replaces one entry of the table (the defaults stay unless replaced)."""
    if not spec.get("NAME"):
        raise InvalidRequest(f"{source}: INSTANCE_TYPE needs a NAME")
    entry = InstanceType(
        name=spec["NAME"],
        cpu=_convert("INSTANCE_TYPE/CPU", spec.get("CPU", "1"), float, source),
        vcpu=_convert("INSTANCE_TYPE/VCPU", spec.get("VCPU", "1"), int, source),
        memory=_convert("INSTANCE_TYPE/MEMORY", spec.get("MEMORY", "1024"), int, source),
    )
    others = tuple(t for t in cfg.instance_types if t.name != entry.name)
    cfg.instance_types = (*others, entry)


def _convert(name: str, value: str, kind: type, source: str) -> Any:
    try:
        return kind(value)
    except ValueError:
        raise InvalidRequest(f"{source}: {name} must be a {kind.__name__}, got {value!r}") from None
