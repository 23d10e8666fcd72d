"""OpenNebula 3.4's virtual network methods (`one.vn.*`, `one.vnpool.info`)."""

from __future__ import annotations

from typing import Any

from apis.xmlrpc.methods import method, xml_text
from core import documents
from core.models import Lease, VNet
from core.service import identity, vnets
from core.service.context import Caller, Cloud


def _doc(cloud: Cloud, vnet: VNet, leases: list[Lease]) -> Any:
    users, groups = identity.owner_names(cloud)
    return documents.vnet_xml(vnet, uname=users.get(vnet.uid, ""),
                              gname=groups.get(vnet.gid, ""), leases=leases)


@method("one.vn.allocate", str, optional=(int,))
def vn_allocate(cloud: Cloud, caller: Caller, text: str, _cluster: int = -1) -> int:
    return vnets.create_vnet(cloud, caller, text=text)


@method("one.vn.info", int, optional=(bool,))
def vn_info(cloud: Cloud, caller: Caller, vnet_id: int, _decrypt: bool = False) -> str:
    return xml_text(_doc(cloud, *vnets.get_vnet(cloud, caller, vnet_id=vnet_id)))


@method("one.vnpool.info", int, int, int)
def vnpool_info(cloud: Cloud, caller: Caller, flag: int, start: int, end: int) -> str:
    found = vnets.list_vnets(cloud, caller, flag=flag, start=start, end=end)
    return xml_text(documents.pool_xml("VNET_POOL", (_doc(cloud, v, leases) for v, leases in found)))


@method("one.vn.delete", int)
def vn_delete(cloud: Cloud, caller: Caller, vnet_id: int) -> int:
    vnets.delete_vnet(cloud, caller, vnet_id=vnet_id)
    return vnet_id


@method("one.vn.addleases", int, str)
def vn_addleases(cloud: Cloud, caller: Caller, vnet_id: int, text: str) -> int:
    vnets.add_leases(cloud, caller, vnet_id=vnet_id, text=text)
    return vnet_id


@method("one.vn.rmleases", int, str)
def vn_rmleases(cloud: Cloud, caller: Caller, vnet_id: int, text: str) -> int:
    vnets.rm_leases(cloud, caller, vnet_id=vnet_id, text=text)
    return vnet_id


@method("one.vn.hold", int, str)
def vn_hold(cloud: Cloud, caller: Caller, vnet_id: int, text: str) -> int:
    vnets.hold(cloud, caller, vnet_id=vnet_id, text=text, on=True)
    return vnet_id


@method("one.vn.release", int, str)
def vn_release(cloud: Cloud, caller: Caller, vnet_id: int, text: str) -> int:
    vnets.hold(cloud, caller, vnet_id=vnet_id, text=text, on=False)
    return vnet_id
