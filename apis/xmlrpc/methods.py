"""OpenNebula's XML-RPC methods: names and argument orders, each mapped to one service call.

Argument lists follow OpenNebula 3.4; where later versions (which pyone 7 targets) added
trailing arguments, they are accepted and, when they carry no meaning here, ignored.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from apis.xmlrpc.errors import BadCall
from core import documents
from core.errors import InvalidRequest
from core.models import SYSTEM_DATASTORE_ID
from core.service import datastores, hosts, identity, images, logins, migration, templates, vms
from core.service.context import Caller, Cloud

Handler = Callable[..., Any]


@dataclass(frozen=True)
class Method:
    handler: Handler
    required: tuple[type, ...]
    optional: tuple[type, ...] = ()


METHODS: dict[str, Method] = {}


def method(name: str, *required: type, optional: tuple[type, ...] = ()) -> Callable[[Handler], Handler]:
    def register(fn: Handler) -> Handler:
        METHODS[name] = Method(fn, required, optional)
        return fn

    return register


def check_args(name: str, spec: Method, args: tuple[Any, ...]) -> tuple[Any, ...]:
    types = spec.required + spec.optional
    if not len(spec.required) <= len(args) <= len(types):
        expected = ", ".join(t.__name__ for t in spec.required)
        raise BadCall(f"[{name}] expects (session, {expected}), got {len(args)} argument(s) "
                      "after the session")
    out = []
    for i, (value, kind) in enumerate(zip(args, types, strict=False)):
        if kind is bool and isinstance(value, int):
            value = bool(value)
        elif kind is int and isinstance(value, bool):
            raise BadCall(f"[{name}] argument {i + 1} must be an int, not a boolean")
        if not isinstance(value, kind):
            raise BadCall(f"[{name}] argument {i + 1} must be {kind.__name__}, "
                          f"not {type(value).__name__}")
        out.append(value)
    return tuple(out)


def xml_text(el: Any) -> str:
    return documents.to_string(el)


# --- system ---

@method("one.system.version")
def system_version(cloud: Cloud, caller: Caller) -> str:
    return "3.4.1"


# --- users and groups ---

@method("one.user.allocate", str, str, optional=(str, list))
def user_allocate(cloud: Cloud, caller: Caller, name: str, password: str, driver: str = "core",
                  groups: list[Any] | None = None) -> int:
    gid = groups[0] if groups and isinstance(groups[0], int) else 1
    return identity.create_user(cloud, caller, name=name, password=password,
                                driver=driver or "core", gid=gid)


@method("one.user.info", int, optional=(bool,))
def user_info(cloud: Cloud, caller: Caller, user_id: int, _decrypt: bool = False) -> str:
    user = identity.get_user(cloud, caller, user_id=user_id)
    _, groups = identity.owner_names(cloud)
    return xml_text(documents.user_xml(user, gname=groups.get(user.gid, "")))


@method("one.userpool.info")
def userpool_info(cloud: Cloud, caller: Caller) -> str:
    _, groups = identity.owner_names(cloud)
    users = identity.list_users(cloud, caller)
    return xml_text(documents.pool_xml(
        "USER_POOL", (documents.user_xml(u, gname=groups.get(u.gid, "")) for u in users)))


@method("one.user.passwd", int, str)
def user_passwd(cloud: Cloud, caller: Caller, user_id: int, password: str) -> int:
    identity.set_password(cloud, caller, user_id=user_id, password=password)
    return user_id


@method("one.user.chgrp", int, int)
def user_chgrp(cloud: Cloud, caller: Caller, user_id: int, gid: int) -> int:
    identity.change_group(cloud, caller, user_id=user_id, gid=gid)
    return user_id


@method("one.user.delete", int)
def user_delete(cloud: Cloud, caller: Caller, user_id: int) -> int:
    identity.delete_user(cloud, caller, user_id=user_id)
    return user_id


@method("one.user.login", str, optional=(str, int, int))
def user_login(cloud: Cloud, caller: Caller, name: str, _token: str = "",
               ttl: int = logins.DEFAULT_TTL, _gid: int = -1) -> str:
    """OpenNebula 4: a login token for `name`, valid `ttl` seconds (0 or less revokes the
    user's tokens). Nubo makes the token itself; a token the client proposes is ignored."""
    return logins.login(cloud, caller, name=name, ttl=ttl)


@method("one.user.ec2keys", int)
def user_ec2keys(cloud: Cloud, caller: Caller, user_id: int) -> list[str]:
    """Nubo extension: the user's EC2 access key and secret."""
    access, secret = identity.ec2_keys(cloud, caller, user_id=user_id)
    return [access, secret]


@method("one.group.allocate", str)
def group_allocate(cloud: Cloud, caller: Caller, name: str) -> int:
    return identity.create_group(cloud, caller, name=name)


@method("one.group.info", int, optional=(bool,))
def group_info(cloud: Cloud, caller: Caller, group_id: int, _decrypt: bool = False) -> str:
    group = identity.get_group(cloud, caller, group_id=group_id)
    members = [u.id for u in identity.list_users(cloud, caller) if u.gid == group_id and u.id is not None]
    return xml_text(documents.group_xml(group, users=members))


@method("one.grouppool.info")
def grouppool_info(cloud: Cloud, caller: Caller) -> str:
    users = identity.list_users(cloud, caller)
    groups = identity.list_groups(cloud, caller)
    return xml_text(documents.pool_xml("GROUP_POOL", (
        documents.group_xml(g, users=[u.id for u in users if u.gid == g.id and u.id is not None])
        for g in groups)))


# --- hosts ---

@method("one.host.allocate", str, str, str, optional=(object, object))
def host_allocate(cloud: Cloud, caller: Caller, name: str, im: str, vmm: str, fourth: Any = -1,
                  fifth: Any = -1) -> int:
    # 3.4: (name, im, vmm, vnm, cluster); 4.x and later: (name, im, vmm, cluster)
    vnm = fourth if isinstance(fourth, str) else "dummy"
    cluster = fifth if isinstance(fourth, str) else fourth
    if not isinstance(cluster, int) or isinstance(cluster, bool):
        raise BadCall("[one.host.allocate] the cluster id must be an int")
    return hosts.create_host(cloud, caller, name=name, im=im, vmm=vmm, vnm=vnm, cluster_id=cluster)


@method("one.host.info", int, optional=(bool,))
def host_info(cloud: Cloud, caller: Caller, host_id: int, _decrypt: bool = False) -> str:
    host, placed = hosts.get_host(cloud, caller, host_id=host_id)
    return xml_text(documents.host_xml(host, vms=placed))


@method("one.hostpool.info")
def hostpool_info(cloud: Cloud, caller: Caller) -> str:
    return xml_text(documents.pool_xml(
        "HOST_POOL", (documents.host_xml(h, vms=v) for h, v in hosts.list_hosts(cloud, caller))))


@method("one.host.enable", int, bool)
def host_enable(cloud: Cloud, caller: Caller, host_id: int, enable: bool) -> int:
    hosts.enable_host(cloud, caller, host_id=host_id, enable=enable)
    return host_id


@method("one.host.status", int, int)
def host_status(cloud: Cloud, caller: Caller, host_id: int, status: int) -> int:
    """Later API: 0 enabled, 1 disabled, 2 offline (treated as disabled)."""
    hosts.enable_host(cloud, caller, host_id=host_id, enable=status == 0)
    return host_id


@method("one.host.update", int, str, optional=(int,))
def host_update(cloud: Cloud, caller: Caller, host_id: int, text: str, merge: int = 0) -> int:
    hosts.update_host(cloud, caller, host_id=host_id, text=text, merge=merge == 1)
    return host_id


@method("one.host.log", int, optional=(int,))
def host_log(cloud: Cloud, caller: Caller, host_id: int, after: int = 0) -> list[list[Any]]:
    """Nubo extension: the host's log as [id, time, severity, message] rows after `after`
    (oneadmin only)."""
    return [[e.id or 0, e.time, e.severity, e.message]
            for e in hosts.host_log_entries(cloud, caller, host_id=host_id, after=after)]


@method("one.host.delete", int)
def host_delete(cloud: Cloud, caller: Caller, host_id: int) -> int:
    hosts.delete_host(cloud, caller, host_id=host_id)
    return host_id


@method("one.host.sync")
def host_sync(cloud: Cloud, caller: Caller) -> int:
    """Nubo extension (`onehost sync`): re-send changed remotes to every host."""
    hosts.sync_hosts(cloud, caller)
    return 0


# --- datastores ---

@method("one.datastore.allocate", str, optional=(int,))
def datastore_allocate(cloud: Cloud, caller: Caller, text: str, _cluster: int = -1) -> int:
    return datastores.create_datastore(cloud, caller, text=text)


@method("one.datastore.update", int, str, optional=(int,))
def datastore_update(cloud: Cloud, caller: Caller, ds_id: int, text: str, append: int = 0) -> int:
    """Replace the template, or (append = 1, OpenNebula 4.x) merge into it."""
    datastores.update_datastore(cloud, caller, datastore_id=ds_id, text=text, merge=append == 1)
    return ds_id


@method("one.datastore.info", int, optional=(bool,))
def datastore_info(cloud: Cloud, caller: Caller, ds_id: int, _decrypt: bool = False) -> str:
    ds, image_ids = datastores.get_datastore(cloud, caller, datastore_id=ds_id)
    users, groups = identity.owner_names(cloud)
    return xml_text(documents.datastore_xml(ds, uname=users.get(ds.uid, ""),
                                        gname=groups.get(ds.gid, ""), images=image_ids))


@method("one.datastorepool.info")
def datastorepool_info(cloud: Cloud, caller: Caller) -> str:
    users, groups = identity.owner_names(cloud)
    return xml_text(documents.pool_xml("DATASTORE_POOL", (
        documents.datastore_xml(ds, uname=users.get(ds.uid, ""), gname=groups.get(ds.gid, ""),
                                images=ids)
        for ds, ids in datastores.list_datastores(cloud, caller))))


@method("one.datastore.delete", int)
def datastore_delete(cloud: Cloud, caller: Caller, ds_id: int) -> int:
    datastores.delete_datastore(cloud, caller, datastore_id=ds_id)
    return ds_id


# --- images ---

def _image_doc(cloud: Cloud, image: Any) -> Any:
    users, groups = identity.owner_names(cloud)
    stores = {ds.id: ds.name for ds, _ in datastores.list_datastores(cloud, _ADMIN)}
    return documents.image_xml(image, uname=users.get(image.uid, ""),
                               gname=groups.get(image.gid, ""),
                               datastore=stores.get(image.datastore_id, ""))


_ADMIN = Caller(uid=0, gid=0, name="oneadmin")  # only for reading datastore names


@method("one.image.allocate", str, int, optional=(bool,))
def image_allocate(cloud: Cloud, caller: Caller, text: str, ds_id: int,
                   _no_check: bool = False) -> int:
    return images.create_image(cloud, caller, text=text, datastore_id=ds_id)


@method("one.image.info", int, optional=(bool,))
def image_info(cloud: Cloud, caller: Caller, image_id: int, _decrypt: bool = False) -> str:
    return xml_text(_image_doc(cloud, images.get_image(cloud, caller, image_id=image_id)))


@method("one.imagepool.info", int, int, int)
def imagepool_info(cloud: Cloud, caller: Caller, flag: int, start: int, end: int) -> str:
    found = images.list_images(cloud, caller, flag=flag, start=start, end=end)
    users, groups = identity.owner_names(cloud)
    stores = {ds.id: ds.name for ds, _ in datastores.list_datastores(cloud, _ADMIN)}
    return xml_text(documents.pool_xml("IMAGE_POOL", (
        documents.image_xml(i, uname=users.get(i.uid, ""), gname=groups.get(i.gid, ""),
                            datastore=stores.get(i.datastore_id, ""))
        for i in found)))


@method("one.image.delete", int, optional=(bool,))
def image_delete(cloud: Cloud, caller: Caller, image_id: int, _force: bool = False) -> int:
    images.delete_image(cloud, caller, image_id=image_id)
    return image_id


@method("one.image.enable", int, bool)
def image_enable(cloud: Cloud, caller: Caller, image_id: int, enable: bool) -> int:
    images.enable_image(cloud, caller, image_id=image_id, enable=enable)
    return image_id


@method("one.image.publish", int, bool)
def image_publish(cloud: Cloud, caller: Caller, image_id: int, public: bool) -> int:
    """OpenNebula 2.x/3.0's call: every user may see and use the image (or no longer)."""
    images.publish_image(cloud, caller, image_id=image_id, public=public)
    return image_id


@method("one.image.persistent", int, bool)
def image_persistent(cloud: Cloud, caller: Caller, image_id: int, persistent: bool) -> int:
    images.persistent_image(cloud, caller, image_id=image_id, persistent=persistent)
    return image_id


@method("one.image.chtype", int, str)
def image_chtype(cloud: Cloud, caller: Caller, image_id: int, type_name: str) -> int:
    images.chtype_image(cloud, caller, image_id=image_id, type_name=type_name)
    return image_id


# --- VM templates ---

@method("one.template.allocate", str)
def template_allocate(cloud: Cloud, caller: Caller, text: str) -> int:
    return templates.create_template(cloud, caller, text=text)


@method("one.template.info", int, optional=(bool, bool))
def template_info(cloud: Cloud, caller: Caller, template_id: int, _extended: bool = False,
                  _decrypt: bool = False) -> str:
    row = templates.get_template(cloud, caller, template_id=template_id)
    users, groups = identity.owner_names(cloud)
    return xml_text(documents.template_xml(row, uname=users.get(row.uid, ""),
                                       gname=groups.get(row.gid, "")))


@method("one.templatepool.info", int, int, int)
def templatepool_info(cloud: Cloud, caller: Caller, flag: int, start: int, end: int) -> str:
    users, groups = identity.owner_names(cloud)
    rows = templates.list_templates(cloud, caller, flag=flag, start=start, end=end)
    return xml_text(documents.pool_xml("VMTEMPLATE_POOL", (
        documents.template_xml(r, uname=users.get(r.uid, ""), gname=groups.get(r.gid, ""))
        for r in rows)))


@method("one.template.update", int, str, optional=(int,))
def template_update(cloud: Cloud, caller: Caller, template_id: int, text: str,
                    merge: int = 0) -> int:
    templates.update_template(cloud, caller, template_id=template_id, text=text, merge=merge == 1)
    return template_id


@method("one.template.delete", int, optional=(bool,))
def template_delete(cloud: Cloud, caller: Caller, template_id: int, _images: bool = False) -> int:
    templates.delete_template(cloud, caller, template_id=template_id)
    return template_id


@method("one.template.instantiate", int, optional=(str, bool, str, bool))
def template_instantiate(cloud: Cloud, caller: Caller, template_id: int, name: str = "",
                         hold: bool = False, _extra: str = "", _persistent: bool = False) -> int:
    return vms.instantiate(cloud, caller, template_id=template_id, name=name, hold=hold)


# --- VMs ---

@method("one.vm.allocate", str, optional=(bool,))
def vm_allocate(cloud: Cloud, caller: Caller, text: str, hold: bool = False) -> int:
    return vms.create_vm(cloud, caller, text=text, hold=hold)


def _vm_doc(info: vms.VMInfo) -> Any:
    return documents.vm_xml(info.vm, history=info.history, uname=info.uname, gname=info.gname)


@method("one.vm.info", int, optional=(bool,))
def vm_info(cloud: Cloud, caller: Caller, vm_id: int, _decrypt: bool = False) -> str:
    return xml_text(_vm_doc(vms.get_vm(cloud, caller, vm_id=vm_id)))


@method("one.vmpool.info", int, int, int, int)
def vmpool_info(cloud: Cloud, caller: Caller, flag: int, start: int, end: int, state: int) -> str:
    found = vms.list_vms(cloud, caller, flag=flag, start=start, end=end, state=state)
    return xml_text(documents.pool_xml("VM_POOL", (_vm_doc(i) for i in found)))


@method("one.vm.action", str, int)
def vm_action(cloud: Cloud, caller: Caller, action: str, vm_id: int) -> int:
    vms.act(cloud, caller, vm_id=vm_id, action=action)
    return vm_id


@method("one.vm.deploy", int, int, optional=(bool, int))
def vm_deploy(cloud: Cloud, caller: Caller, vm_id: int, host_id: int, _enforce: bool = False,
              _ds: int = -1) -> int:
    vms.deploy(cloud, caller, vm_id=vm_id, host_id=host_id)
    return vm_id


@method("one.vm.migrate", int, int, optional=(bool, bool, int, int))
def vm_migrate(cloud: Cloud, caller: Caller, vm_id: int, host_id: int, live: bool = False,
               enforce: bool = False, ds_id: int = -1, _kind: int = 0) -> int:
    """3.4's (vmid, hid, live); 4.x adds `enforce` (check the target's capacity), 5.x a
    system datastore (there is one) and a kind (a cold migration here always saves)."""
    if ds_id not in (-1, SYSTEM_DATASTORE_ID):
        raise InvalidRequest(f"datastore {ds_id} is not a system datastore")
    migration.migrate(cloud, caller, vm_id=vm_id, host_id=host_id, live=live, enforce=enforce)
    return vm_id


@method("one.vm.console", int)
def vm_console(cloud: Cloud, caller: Caller, vm_id: int) -> str:
    """Nubo extension: the last 64 KB of the VM's serial console, as of its last poll."""
    return vms.console(cloud, caller, vm_id=vm_id)


@method("one.vm.log", int, optional=(int,))
def vm_log(cloud: Cloud, caller: Caller, vm_id: int, after: int = 0) -> list[list[Any]]:
    """Nubo extension: the VM's log as [id, time, severity, message] rows after `after`."""
    return [[e.id or 0, e.time, e.severity, e.message]
            for e in vms.vm_log_entries(cloud, caller, vm_id=vm_id, after=after)]
