"""The core's rows rendered as OpenNebula's XML documents.

One function per document (`<VM>`, `<HOST>`, `<IMAGE>`, ...) plus `pool_xml` for the
`*_POOL` wrappers and `to_string` for the wire. The XML-RPC front door returns these
strings (pyone parses them with its generated bindings) and the drivers get the VM or
host document on stdin, exactly as OpenNebula passes them.

Element names, nesting and types follow pyone's bindings (OpenNebula 6/7 schemas). A few
3.4/4.x elements the seed's scripts read are kept alongside (HISTORY/DS_LOCATION and
VN_MAD, HOST_SHARE's FREE_*/USED_*, IMAGE/FSTYPE, VNET/LEASES); the bindings ignore
elements they do not know. An integer element never gets an empty text: generated
parsers reject it.

Messages:
- `VM.message` is `USER_TEMPLATE/SCHED_MESSAGE` while the VM is PENDING (why the
  scheduler has not placed it) and `USER_TEMPLATE/ERROR` in any other state.
- `Host.error` is `HOST/TEMPLATE/ERROR`, plain text, replacing any ERROR of the template.
"""

from __future__ import annotations

import base64
import gc
import ipaddress
import re
import xml.etree.ElementTree as ET
from collections.abc import Callable, Iterable, Mapping, Sequence

from core import template
from core.errors import InvalidRequest
from core.lifecycle import VmState
from core.models import (
    SYSTEM_DATASTORE_ID,
    VM,
    Datastore,
    Group,
    History,
    Host,
    Image,
    Lease,
    User,
    VMTemplate,
    VNet,
)
from core.service.vnets import address_range, mac_of

# MONITORING children that the bindings parse as numbers: a poll that reports one of
# these with a non-numeric value would make the whole document unparseable
_NUMERIC_MONITORING = frozenset(
    {
        "CPU", "MEMORY", "NETRX", "NETTX", "ID", "TIMESTAMP",
        "DISKRDBYTES", "DISKRDIOPS", "DISKWRBYTES", "DISKWRIOPS",
        "DISKRDBYTES_BW", "DISKRDIOPS_BW", "DISKWRBYTES_BW", "DISKWRIOPS_BW",
        "NETRX_BW", "NETTX_BW",
    }
)  # fmt: skip
_NUMBER = re.compile(r"-?(\d+\.?\d*|\.\d+)([eE][-+]?\d+)?")
_INTEGER = re.compile(r"-?\d+")
# characters XML 1.0 cannot carry, not even escaped (ANSI escapes in driver stderr, ...)
_NOT_XML = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\ud800-\udfff\ufffe\uffff]")


def vm_xml(vm: VM, *, history: Sequence[History], uname: str, gname: str) -> ET.Element:
    """`<VM>`: the VM row, its placements (HISTORY_RECORDS, oldest first) and owner names."""
    root = ET.Element("VM")
    _owner(root, vm.id, vm.uid, vm.gid, uname, gname, vm.name)
    _permissions(root)
    state, lcm = str(vm.state), str(vm.lcm_state)
    _fields(
        root,
        LAST_POLL=str(vm.last_poll),
        STATE=state,
        LCM_STATE=lcm,
        PREV_STATE=state,
        PREV_LCM_STATE=lcm,
        RESCHED="0",
        STIME=str(vm.stime),
        ETIME=str(vm.etime),
        DEPLOY_ID=vm.deploy_id,
    )
    root.append(_vm_monitoring(vm))
    root.append(_template(vm.template))
    user = ET.SubElement(root, "USER_TEMPLATE")
    if vm.message:
        tag = "SCHED_MESSAGE" if vm.state == VmState.PENDING else "ERROR"
        ET.SubElement(user, tag).text = vm.message
    records = ET.SubElement(root, "HISTORY_RECORDS")
    for h in sorted(history, key=_seq):
        records.append(_history(h, vm))
    return root


def add_vectors(doc: ET.Element, name: str, vectors: Iterable[Mapping[str, str]]) -> None:
    """Vectors the core adds to a document's TEMPLATE for the drivers (not stored)."""
    parent = doc.find("TEMPLATE")
    if parent is None:
        parent = ET.SubElement(doc, "TEMPLATE")
    for vector in vectors:
        element = ET.SubElement(parent, name)
        for key, value in vector.items():
            ET.SubElement(element, key).text = value


def host_xml(host: Host, *, vms: Sequence[int] = ()) -> ET.Element:
    """`<HOST>`: state, drivers, HOST_SHARE (3.4 and current fields), VMS, TEMPLATE."""
    root = ET.Element("HOST")
    _fields(
        root,
        ID=_id(host.id),
        NAME=host.name,
        STATE=str(host.state),
        PREV_STATE=str(host.state),
        IM_MAD=host.im_mad,
        VM_MAD=host.vmm_mad,
        VN_MAD=host.vnm_mad,
        LAST_MON_TIME=str(host.last_mon_time),
        CLUSTER_ID=str(host.cluster_id),
        CLUSTER="",
    )
    share = ET.SubElement(root, "HOST_SHARE")
    _fields(
        share,
        DISK_USAGE="0",
        MEM_USAGE=str(host.mem_usage),
        CPU_USAGE=str(host.cpu_usage),
        TOTAL_MEM=str(host.max_mem),
        TOTAL_CPU=str(host.max_cpu),
        MAX_DISK="0",
        MAX_MEM=str(host.max_mem),
        MAX_CPU=str(host.max_cpu),
        FREE_DISK="0",
        FREE_MEM=str(host.free_mem),
        FREE_CPU=str(host.free_cpu),
        USED_DISK="0",
        USED_MEM=str(host.used_mem),
        USED_CPU=str(host.used_cpu),
        RUNNING_VMS=str(host.running_vms),
        VMS_THREAD="0",
    )
    for tag in ("DATASTORES", "PCI_DEVICES", "NUMA_NODES"):
        ET.SubElement(share, tag)
    root.append(_ids("VMS", vms))
    tmpl = _template(host.template)
    for name in SECRET_ATTRIBUTES:
        for secret in tmpl.findall(name):
            secret.text = MASK
    if host.error:
        for old in tmpl.findall("ERROR"):
            tmpl.remove(old)
        ET.SubElement(tmpl, "ERROR").text = host.error
    root.append(tmpl)
    monitoring = ET.SubElement(root, "MONITORING")
    _fields(monitoring, TIMESTAMP=str(host.last_mon_time), ID=_id(host.id))
    _fields(
        ET.SubElement(monitoring, "CAPACITY"),
        FREE_CPU=str(host.free_cpu),
        FREE_MEMORY=str(host.free_mem),
        USED_CPU=str(host.used_cpu),
        USED_MEMORY=str(host.used_mem),
    )
    return root


def image_xml(image: Image, *, uname: str, gname: str, datastore: str, vms: Sequence[int] = ()) -> ET.Element:
    """`<IMAGE>`; `vms` are the VMs using it (IMAGE/VMS)."""
    root = ET.Element("IMAGE")
    _owner(root, image.id, image.uid, image.gid, uname, gname, image.name)
    _permissions(root, public=image.public)
    state = str(image.state)
    _fields(
        root,
        TYPE=str(image.type),
        DISK_TYPE="0",  # FILE
        PERSISTENT=_bool(image.persistent),
        REGTIME=str(image.regtime),
        MODTIME=str(image.regtime),
        SOURCE=image.source,
        PATH=image.path,
        FORMAT="",
        FS=image.fstype,
        FSTYPE=image.fstype,
        SIZE=str(image.size_mb),
        STATE=state,
        PREV_STATE=state,
        RUNNING_VMS=str(image.running_vms),
        CLONING_OPS="0",
        CLONING_ID="-1",
        TARGET_SNAPSHOT="-1",
        DATASTORE_ID=str(image.datastore_id),
        DATASTORE=datastore,
    )
    root.append(_ids("VMS", vms))
    ET.SubElement(root, "CLONES")
    ET.SubElement(root, "APP_CLONES")
    root.append(_template(image.template))
    snapshots = ET.SubElement(root, "SNAPSHOTS")
    _fields(snapshots, ALLOW_ORPHANS="NO", CURRENT_BASE="-1", NEXT_SNAPSHOT="0")
    return root


def datastore_xml(ds: Datastore, *, uname: str, gname: str, images: Sequence[int] = ()) -> ET.Element:
    """`<DATASTORE>`; TYPE is 1 (SYSTEM) for the system datastore, else 0 (IMAGE)."""
    root = ET.Element("DATASTORE")
    _owner(root, ds.id, ds.uid, ds.gid, uname, gname, ds.name)
    _permissions(root)
    _fields(
        root,
        DS_MAD=ds.ds_mad,
        TM_MAD=ds.tm_mad,
        BASE_PATH=ds.base_path,
        TYPE="1" if ds.system else "0",
        DISK_TYPE="0",
        STATE="0",  # READY
        CLUSTER_ID="-1",
        CLUSTER="",
    )
    ET.SubElement(root, "CLUSTERS")
    _fields(root, TOTAL_MB="0", FREE_MB="0", USED_MB="0")
    root.append(_ids("IMAGES", images))
    root.append(_template(ds.template))
    return root


def ds_action_data(image: Image, ds: Datastore, *, uname: str, gname: str,
                   restricted: Sequence[str] = (), safe: Sequence[str] = ()) -> str:
    """OpenNebula's DS_DRIVER_ACTION_DATA in base64, the first argument of every datastore
    action: `<IMAGE>` then `<DATASTORE>`. `restricted` and `safe` are added to the
    datastore template's RESTRICTED_DIRS and SAFE_DIRS (space-separated, as the drivers
    split them; a dir with a space cannot be listed and is left out) in this document
    only."""
    tmpl = template.parse(ds.template) if ds.template.strip() else template.Template()
    for name, extra in (("RESTRICTED_DIRS", restricted), ("SAFE_DIRS", safe)):
        dirs = (tmpl.get(name) or "").split()
        dirs += [d for d in extra if d and not any(c.isspace() for c in d) and d not in dirs]
        if dirs:
            tmpl.set(name, " ".join(dirs))
    sent = Datastore(**{**ds.model_dump(), "template": tmpl.dumps()})
    root = ET.Element("DS_DRIVER_ACTION_DATA")
    root.append(image_xml(image, uname=uname, gname=gname, datastore=ds.name))
    root.append(datastore_xml(sent, uname="oneadmin", gname="oneadmin"))
    return base64.b64encode(to_string(root).encode()).decode()


def template_xml(t: VMTemplate, *, uname: str, gname: str) -> ET.Element:
    """`<VMTEMPLATE>`."""
    root = ET.Element("VMTEMPLATE")
    _owner(root, t.id, t.uid, t.gid, uname, gname, t.name)
    _permissions(root)
    ET.SubElement(root, "REGTIME").text = str(t.regtime)
    root.append(_template(t.template))
    return root


def user_xml(user: User, *, gname: str) -> ET.Element:
    """`<USER>`; PASSWORD is the stored SHA1, as OpenNebula shows it. No EC2 keys."""
    root = ET.Element("USER")
    _fields(root, ID=_id(user.id), GID=str(user.gid))
    root.append(_ids("GROUPS", (user.gid,)))
    _fields(
        root,
        GNAME=gname,
        NAME=user.name,
        PASSWORD=user.password_hash,
        AUTH_DRIVER=user.auth_driver,
        ENABLED=_bool(user.enabled),
    )
    root.append(_template(user.template))
    _quotas(root)
    _quotas(ET.SubElement(root, "DEFAULT_USER_QUOTAS"))
    return root


def group_xml(group: Group, *, users: Sequence[int] = ()) -> ET.Element:
    """`<GROUP>` with its members in USERS."""
    root = ET.Element("GROUP")
    _fields(root, ID=_id(group.id), NAME=group.name)
    ET.SubElement(root, "TEMPLATE")
    root.append(_ids("USERS", users))
    ET.SubElement(root, "ADMINS")
    _quotas(root)
    _quotas(ET.SubElement(root, "DEFAULT_GROUP_QUOTAS"))
    return root


def vnet_xml(vnet: VNet, *, uname: str, gname: str, leases: Sequence[Lease] = ()) -> ET.Element:
    """`<VNET>`: 3.4's TYPE/VLAN/LEASES plus the current AR_POOL.

    `leases` in the order to show. LEASES/LEASE lists every one with USED and VID (3.4);
    AR_POOL holds one address range over all of them whose LEASES are the used ones.
    """
    root = ET.Element("VNET")
    _owner(root, vnet.id, vnet.uid, vnet.gid, uname, gname, vnet.name)
    _permissions(root)
    used = [lease for lease in leases if lease.vm_id is not None]
    ET.SubElement(root, "CLUSTERS")
    _fields(
        root,
        CLUSTER_ID="-1",
        CLUSTER="",
        TYPE=str(vnet.type),
        BRIDGE=vnet.bridge,
        BRIDGE_TYPE="linux",
        STATE="1",  # READY
        PREV_STATE="1",
        PARENT_NETWORK_ID="",
        VN_MAD="",
        PHYDEV=vnet.phydev,
        VLAN=_bool(vnet.vlan),
        VLAN_ID=vnet.vlan_id,
        OUTER_VLAN_ID="",
        VLAN_ID_AUTOMATIC="0",
        OUTER_VLAN_ID_AUTOMATIC="0",
        USED_LEASES=str(len(used)),
        TOTAL_LEASES=str(_address_range(vnet, leases)[1]),
    )
    for tag in ("VROUTERS", "UPDATED_VMS", "OUTDATED_VMS", "UPDATING_VMS", "ERROR_VMS"):
        ET.SubElement(root, tag)
    root.append(_template(vnet.template))
    all_leases = ET.SubElement(root, "LEASES")
    for lease in leases:
        vid = "-1" if lease.vm_id is None else str(lease.vm_id)
        _fields(
            ET.SubElement(all_leases, "LEASE"),
            IP=lease.ip,
            MAC=lease.mac,
            USED=_bool(lease.vm_id is not None),
            VID=vid,
        )
    pool = ET.SubElement(root, "AR_POOL")
    first_ip, size = _address_range(vnet, leases)
    if size:
        ar = ET.SubElement(pool, "AR")
        _fields(
            ar,
            AR_ID="0",
            IP=first_ip,
            MAC=mac_of(first_ip),
            SIZE=str(size),
            TYPE="IP6" if ":" in first_ip else "IP4",
            USED_LEASES=str(len(used)),
        )
        allocated = ET.SubElement(ar, "LEASES")
        for lease in used:
            _fields(
                ET.SubElement(allocated, "LEASE"),
                IP=lease.ip,
                MAC=lease.mac,
                VM=str(lease.vm_id),
            )
    return root


def _address_range(vnet: VNet, leases: Sequence[Lease]) -> tuple[str, int]:
    """First address and size of the network: its range (RANGED) or its leases (FIXED)."""
    if vnet.type == 0:
        try:
            low, high = address_range(template.parse(vnet.template))
            return str(ipaddress.IPv4Address(low)), high - low + 1
        except InvalidRequest:  # a row written without its range: show its leases
            pass
    return (leases[0].ip, len(leases)) if leases else ("", 0)


def pool_xml(tag: str, items: Iterable[ET.Element]) -> ET.Element:
    """`<VM_POOL>`, `<HOST_POOL>`, ... around the rendered documents.

    Pass a generator (`pool_xml("VM_POOL", (vm_xml(...) for ...))`) for big pools: it is
    consumed with the cyclic garbage collector paused. Every element built survives, so
    the full collections that hundreds of thousands of new elements would trigger (each
    walking the whole heap) are pure waste; they were half the time of a 5,000-VM pool.
    """
    root = ET.Element(tag)
    paused = gc.isenabled()
    if paused:
        gc.disable()
    try:
        root.extend(list(items))  # C extend() would mask an exception raised by `items`
    finally:
        if paused:
            gc.enable()
    return root


def to_string(el: ET.Element) -> str:
    """Compact XML text without declaration; encode it as UTF-8 for the wire.

    Characters XML 1.0 cannot carry (control characters, lone surrogates) are dropped,
    so one VM with an escape sequence in its message cannot break a whole pool listing.
    """
    parts: list[str] = []
    _write(el, parts.append)
    return _NOT_XML.sub("", "".join(parts))


def _write(el: ET.Element, out: Callable[[str], object]) -> None:
    """ElementTree's serializer without namespaces, several times faster on big pools.

    Leaves (most elements) are written in their parent's loop, without a call.
    """
    tag = el.tag
    items = el.items()
    if items:
        attrs = "".join(f' {k}="{_escape_attr(v)}"' for k, v in items)
        out(f"<{tag}{attrs}>")
    else:
        out(f"<{tag}>")
    if el.text:
        out(_escape(el.text))
    for child in el:
        text = child.text
        if len(child) or child.items():  # not .attrib: reading it creates a dict
            _write(child, out)
        elif text:
            tag = child.tag
            out(f"<{tag}>{_escape(text)}</{tag}>")
        else:
            out(f"<{child.tag}/>")
        if child.tail:
            out(_escape(child.tail))
    out(f"</{el.tag}>")


def _escape(text: str) -> str:
    if "&" in text:
        text = text.replace("&", "&amp;")
    if "<" in text:
        text = text.replace("<", "&lt;")
    if ">" in text:
        text = text.replace(">", "&gt;")
    return text


def _escape_attr(text: str) -> str:
    return _escape(text).replace('"', "&quot;").replace("\n", "&#10;")


# --- pieces ---------------------------------------------------------------------------


def _id(value: int | None) -> str:
    """Ids of rows not yet flushed render as -1, never as an empty integer."""
    return "-1" if value is None else str(value)


def _bool(value: bool) -> str:
    return "1" if value else "0"


def _seq(h: History) -> int:
    return h.seq


def _number(value: float) -> str:
    value = float(value)  # an unflushed row may still hold the int default
    if value.is_integer():
        return str(int(value))
    return repr(value)


def _fields(parent: ET.Element, **children: str) -> None:
    """Append `<NAME>text</NAME>` children in keyword order."""
    sub = ET.SubElement
    for tag, text in children.items():
        sub(parent, tag).text = text


def _owner(root: ET.Element, oid: int | None, uid: int, gid: int, uname: str, gname: str, name: str) -> None:
    _fields(root, ID=_id(oid), UID=str(uid), GID=str(gid), UNAME=uname, GNAME=gname, NAME=name)


def _permissions(root: ET.Element, *, public: bool = False) -> None:
    """The owner may use and manage; group and others nothing (OpenNebula's umask 177),
    except that everyone may use a public object."""
    _fields(
        ET.SubElement(root, "PERMISSIONS"),
        OWNER_U="1",
        OWNER_M="1",
        OWNER_A="0",
        GROUP_U="0",
        GROUP_M="0",
        GROUP_A="0",
        OTHER_U=_bool(public),
        OTHER_M="0",
        OTHER_A="0",
    )


def _ids(tag: str, ids: Iterable[int]) -> ET.Element:
    el = ET.Element(tag)
    for i in ids:
        ET.SubElement(el, "ID").text = str(i)
    return el


def _quotas(parent: ET.Element) -> None:
    for tag in ("DATASTORE_QUOTA", "NETWORK_QUOTA", "VM_QUOTA", "IMAGE_QUOTA"):
        ET.SubElement(parent, tag)


# host attributes never rendered (a public-cloud region's credentials, hybrid.region); an
# update that sends the mask back keeps the stored value (core.service.hosts)
SECRET_ATTRIBUTES = ("SECRET_ACCESS_KEY", "SESSION_TOKEN")
MASK = "********"


def _template(text: str, root: str = "TEMPLATE") -> ET.Element:
    if not text or text.isspace():
        return ET.Element(root)
    return template.parse(text).to_xml(root=root)


def _vm_monitoring(vm: VM) -> ET.Element:
    """MONITORING as current OpenNebula has it: CPU (%), MEMORY (KB), NETRX/NETTX (bytes),
    then whatever else the poll reported (`vm.monitoring`)."""
    el = ET.Element("MONITORING")
    _fields(
        el,
        CPU=_number(vm.used_cpu),
        MEMORY=str(vm.used_memory),
        NETRX=str(vm.net_rx),
        NETTX=str(vm.net_tx),
        ID=_id(vm.id),
        TIMESTAMP=str(vm.last_poll),
    )
    if vm.monitoring and not vm.monitoring.isspace():
        ours = {child.tag for child in el}
        for child in _template(vm.monitoring, "MONITORING"):
            if child.tag in ours:
                continue
            if child.tag in _NUMERIC_MONITORING and not _NUMBER.fullmatch(child.text or ""):
                continue
            if child.tag == "DISK_SIZE" and not all(_INTEGER.fullmatch(x.text or "") for x in child):
                continue  # [ID, SIZE], both integers in the bindings
            el.append(child)
    return el


def _history(h: History, vm: VM) -> ET.Element:
    el = ET.Element("HISTORY")
    _fields(
        el,
        OID=_id(vm.id),
        SEQ=str(h.seq),
        HOSTNAME=h.hostname,
        HID=str(h.host_id),
        CID="-1",
        STIME=str(h.stime),
        ETIME=str(h.etime),
        VM_MAD=h.vmm_mad,
        VN_MAD=h.vnm_mad,
        TM_MAD=h.tm_mad,
        DS_ID=str(SYSTEM_DATASTORE_ID),
        DS_LOCATION=h.ds_location,
        PSTIME=str(h.pstime),
        PETIME=str(h.petime),
        RSTIME=str(h.rstime),
        RETIME=str(h.retime),
        ESTIME=str(h.estime),
        EETIME=str(h.eetime),
        REASON=str(h.reason),
        ACTION="0",
        UID="-1",
        GID="-1",
        REQUEST_ID="-1",
    )
    return el
