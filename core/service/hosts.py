"""Hosts: registration, enable/disable, template updates, deletion."""

from __future__ import annotations

from sqlmodel import col, delete, select

from core import documents, hooks, template
from core.errors import Conflict, Forbidden, InvalidRequest, NotFound
from core.lifecycle import HostState, VmState
from core.models import VM, Host, HostLogEntry
from core.service.context import MONITOR, Caller, Cloud, host_log

SYNC = "sync"


def _require_admin(caller: Caller) -> None:
    if not caller.admin:
        raise Forbidden("only members of group oneadmin may manage hosts")


def _check_drivers(cloud: Cloud, *, im: str, vmm: str, vnm: str) -> None:
    remotes = cloud.config.remotes
    checks = (
        ("IM", im, remotes / "im" / f"{im}.d"),
        ("VMM", vmm, remotes / "vmm" / vmm),
        ("VNM", vnm, remotes / "vnm" / vnm),
    )
    for kind, name, path in checks:
        if not name or "/" in name or name.startswith("."):
            raise InvalidRequest(f"invalid {kind} driver name {name!r}")
        if kind == "VNM" and name == "dummy":
            continue  # the dummy network driver does nothing and needs no folder
        if not path.is_dir():
            raise InvalidRequest(f"no {kind} driver {name!r}: {path} does not exist")


def create_host(
    cloud: Cloud, caller: Caller, *, name: str, im: str, vmm: str, vnm: str = "dummy",
    cluster_id: int = -1, attributes: str = "",
) -> int:
    _require_admin(caller)
    name = name.strip()
    if not name or any(c.isspace() for c in name) or "/" in name:
        raise InvalidRequest(f"invalid host name {name!r}")
    _check_drivers(cloud, im=im, vmm=vmm, vnm=vnm)
    user_attrs = template.parse(attributes).dumps() if attributes else ""
    with cloud.session() as s:
        if s.exec(select(Host).where(Host.name == name)).first() is not None:
            raise Conflict(f"host {name} already exists")
        host = Host(
            name=name, im_mad=im, vmm_mad=vmm, vnm_mad=vnm, cluster_id=cluster_id,
            template=user_attrs,
        )
        s.add(host)
        s.flush()
        assert host.id is not None
        host_id = host.id
        host_log(s, host_id, f"Created by {caller.name}: im {im}, vmm {vmm}, vnm {vnm}")
        hooks.fire_host(s, host, "CREATE", prev_state=HostState.INIT)
    cloud.wakeups.notify(MONITOR)
    return host_id


def get_host(cloud: Cloud, caller: Caller, *, host_id: int) -> tuple[Host, list[int]]:
    """The host and the ids of the VMs placed on it."""
    with cloud.session() as s:
        host = s.get(Host, host_id)
        if host is None:
            raise NotFound("host", host_id)
        vms = list(
            s.exec(
                select(VM.id).where(VM.host_id == host_id, col(VM.state).in_(_ON_HOST))
            )
        )
        return host, [v for v in vms if v is not None]


_ON_HOST = (VmState.ACTIVE, VmState.SUSPENDED)


def list_hosts(cloud: Cloud, caller: Caller) -> list[tuple[Host, list[int]]]:
    with cloud.session() as s:
        hosts = list(s.exec(select(Host).order_by(col(Host.id))))
        placed: dict[int, list[int]] = {}
        rows = s.exec(select(VM.id, VM.host_id).where(col(VM.state).in_(_ON_HOST)))
        for vm_id, host_id in rows:
            if host_id is not None and vm_id is not None:
                placed.setdefault(host_id, []).append(vm_id)
        return [(h, placed.get(h.id or 0, [])) for h in hosts]


def find_host(cloud: Cloud, caller: Caller, *, ref: str) -> int:
    """A host id from a name or a numeric id (CLI convenience)."""
    if ref.isdigit():
        return int(ref)
    with cloud.session() as s:
        host = s.exec(select(Host).where(Host.name == ref)).first()
        if host is None or host.id is None:
            raise NotFound("host", ref)
        return host.id


def enable_host(cloud: Cloud, caller: Caller, *, host_id: int, enable: bool) -> None:
    _require_admin(caller)
    with cloud.session() as s:
        host = s.get(Host, host_id, with_for_update=True)
        if host is None:
            raise NotFound("host", host_id)
        if enable and host.state == HostState.DISABLED:
            host.state = HostState.INIT
            host_log(s, host_id, f"Enabled by {caller.name}")
        elif not enable and host.state != HostState.DISABLED:
            hooks.fire_host(s, host, "DISABLE", prev_state=host.state)
            host.state = HostState.DISABLED
            host_log(s, host_id, f"Disabled by {caller.name}: no new VMs")
        host.last_mon_time = 0  # probe it again now
        s.add(host)
    cloud.wakeups.notify(MONITOR)


def update_host(cloud: Cloud, caller: Caller, *, host_id: int, text: str, merge: bool) -> None:
    """Replace (or merge into) the host's template; probes refill monitored values."""
    _require_admin(caller)
    new = template.parse(text)
    with cloud.session() as s:
        host = s.get(Host, host_id, with_for_update=True)
        if host is None:
            raise NotFound("host", host_id)
        old = template.parse(host.template)
        for name in documents.SECRET_ATTRIBUTES:  # the mask sent back: the secret stays
            if new.get(name) == documents.MASK:
                new.set(name, old.get(name) or "")
        host.template = template.updated(host.template, new, merge=merge).dumps()
        host.last_mon_time = 0  # probe it again now, with its new attributes
        s.add(host)
        names = ", ".join(dict.fromkeys(name for name, _ in new)) or "nothing"
        host_log(s, host_id, f"Template {'merged' if merge else 'replaced'} by {caller.name}: "
                 f"{names}")
    cloud.wakeups.notify(MONITOR)


def delete_host(cloud: Cloud, caller: Caller, *, host_id: int) -> None:
    _require_admin(caller)
    with cloud.session() as s:
        host = s.get(Host, host_id)
        if host is None:
            raise NotFound("host", host_id)
        busy = s.exec(
            select(VM.id).where(VM.host_id == host_id, col(VM.state).in_(_ON_HOST))
        ).first()
        if busy is not None:
            raise Conflict(f"host {host.name} still has VM {busy}; move or delete its VMs first")
        s.delete(host)
        s.exec(delete(HostLogEntry).where(col(HostLogEntry.host_id) == host_id))


def host_log_entries(cloud: Cloud, caller: Caller, *, host_id: int,
                     after: int = 0) -> list[HostLogEntry]:
    """The host's log after entry `after`, oldest first (oneadmin only: it carries driver
    and hook output)."""
    if not caller.admin:
        raise Forbidden("only members of group oneadmin may read host logs")
    with cloud.session() as s:
        if s.get(Host, host_id) is None:
            raise NotFound("host", host_id)
        query = select(HostLogEntry).where(HostLogEntry.host_id == host_id,
                                           col(HostLogEntry.id) > after)
        return list(s.exec(query.order_by(col(HostLogEntry.id))))


def sync_hosts(cloud: Cloud, caller: Caller) -> None:
    """`onehost sync`: the next driver call on every host re-sends changed remotes."""
    _require_admin(caller)
    cloud.wakeups.notify(SYNC, MONITOR)
