"""Hooks at runtime (oneadmin only): the hooks of nubo.conf, loaded at each start, and those
created through the CLI or XML-RPC, which take effect at the next event without a restart;
and their runs, the hooks' log."""

from __future__ import annotations

from sqlalchemy.exc import IntegrityError
from sqlmodel import col, delete, select

from core import hooks, template
from core.errors import Conflict, Forbidden, InvalidRequest, NotFound
from core.models import Hook, HookRun
from core.service.context import Caller, Cloud

RESOURCES = {"VM": "vm", "HOST": "host"}


def _admin(caller: Caller) -> None:
    if not caller.admin:
        raise Forbidden("only members of group oneadmin may see or change hooks")


def load_conf_hooks(cloud: Cloud) -> int:
    """Replace the hooks that came from nubo.conf with the ones it holds now."""
    with cloud.session() as s:
        s.exec(delete(Hook).where(col(Hook.origin) == "conf"))
        for spec in cloud.config.hooks:
            clash = s.exec(select(Hook).where(Hook.resource == spec.resource,
                                              Hook.name == spec.name)).first()
            if clash is not None:  # nubo.conf wins over a hook of the same name made at runtime
                s.delete(clash)
                s.flush()
            s.add(spec.row("conf"))
    hooks.changed(cloud.engine)
    return len(cloud.config.hooks)


def create_hook(cloud: Cloud, caller: Caller, *, text: str) -> int:
    """A hook from a template: OpenNebula 5's (`NAME`, `TYPE = state`, `RESOURCE = VM|HOST`,
    `ON`, `COMMAND`, `ARGUMENTS`, `REMOTE`, `STATE`, `LCM_STATE`) or one VM_HOOK/HOST_HOOK
    vector as nubo.conf writes it."""
    _admin(caller)
    parsed = template.parse(text)
    vectors = [(name, value) for name, value in parsed if isinstance(value, dict)
               and name in ("VM_HOOK", "HOST_HOOK")]
    if vectors:
        if len(vectors) > 1 or len(parsed.attrs) > 1:
            raise InvalidRequest("give one VM_HOOK or HOST_HOOK vector, and nothing else")
        name, value = vectors[0]
        spec = hooks.spec("vm" if name == "VM_HOOK" else "host", value)
    else:
        flat = {k: v for k, v in parsed if isinstance(v, str)}
        kind = (flat.pop("TYPE", "state") or "state").lower()
        if kind != "state":
            raise InvalidRequest(f"hook TYPE must be state (API hooks are not supported), "
                                 f"not {kind!r}")
        resource = RESOURCES.get((flat.pop("RESOURCE", "") or "").upper())
        if resource is None:
            raise InvalidRequest("a hook needs RESOURCE = VM or HOST")
        spec = hooks.spec(resource, flat)
    try:
        with cloud.session() as s:
            if s.exec(select(Hook).where(Hook.resource == spec.resource,
                                         Hook.name == spec.name)).first() is not None:
                raise Conflict(f"a {spec.resource} hook named {spec.name} exists")
            row = spec.row("api")
            s.add(row)
            s.flush()
            assert row.id is not None
    except IntegrityError:
        raise Conflict(f"a {spec.resource} hook named {spec.name} exists") from None
    hooks.changed(cloud.engine)
    return row.id


def get_hook(cloud: Cloud, caller: Caller, *, hook_id: int) -> Hook:
    _admin(caller)
    with cloud.session() as s:
        hook = s.get(Hook, hook_id)
        if hook is None:
            raise NotFound("hook", hook_id)
        return hook


def list_hooks(cloud: Cloud, caller: Caller) -> list[Hook]:
    _admin(caller)
    with cloud.session() as s:
        return list(s.exec(select(Hook).order_by(col(Hook.id))))


def delete_hook(cloud: Cloud, caller: Caller, *, hook_id: int) -> None:
    _admin(caller)
    with cloud.session() as s:
        hook = s.get(Hook, hook_id)
        if hook is None:
            raise NotFound("hook", hook_id)
        if hook.origin == "conf":
            raise InvalidRequest(f"hook {hook.name} comes from nubo.conf: remove it there "
                                 "(it is loaded again at each start)")
        s.delete(hook)
    hooks.changed(cloud.engine)


def list_runs(cloud: Cloud, caller: Caller, *, hook_id: int = -1, resource: str = "",
              object_id: int = -1, since: float = 0.0, limit: int = 1000) -> list[HookRun]:
    """The hooks' log, oldest first: every run with its event, argv, exit status, output."""
    _admin(caller)
    query = select(HookRun).where(col(HookRun.created) >= since)
    if hook_id >= 0:
        query = query.where(HookRun.hook_id == hook_id)
    if resource:
        query = query.where(HookRun.resource == resource)
    if object_id >= 0:
        query = query.where(HookRun.object_id == object_id)
    with cloud.session() as s:
        newest = list(s.exec(query.order_by(col(HookRun.id).desc()).limit(limit)))
    return newest[::-1]
