"""The daemon's XML documents (core.documents) as plain dicts: what `--json` prints and
what the tables and `show` pages are drawn from. Keys are lower-case, numbers are numbers.
"""

from __future__ import annotations

import time
import xml.etree.ElementTree as ET
from collections.abc import Callable
from typing import Any

from core.lifecycle import (
    SHORT_HOST,
    HistoryReason,
    HostState,
    LcmState,
    VmState,
    short_state,
    state_name,
)

View = dict[str, Any]

IMAGE_TYPES = {0: "OS", 1: "CDROM", 2: "DATABLOCK"}
IMAGE_STATES = {0: ("INIT", "init"), 1: ("READY", "rdy"), 2: ("USED", "used"),
                3: ("DISABLED", "disa"), 4: ("LOCKED", "lock"), 5: ("ERROR", "err")}


def text(el: ET.Element, path: str) -> str:
    return el.findtext(path) or ""


def integer(el: ET.Element, path: str) -> int:
    return int(number(el, path))


def number(el: ET.Element, path: str) -> float:
    raw = el.findtext(path) or "0"
    try:
        return float(raw)
    except ValueError:
        return 0.0


def attributes(el: ET.Element | None) -> View:
    """A TEMPLATE element: name -> value, vector (dict) or, when repeated, a list of them."""
    out: View = {}
    if el is None:
        return out
    for child in el:
        value: Any = {k.tag: k.text or "" for k in child} if len(child) else child.text or ""
        if child.tag in out:
            previous = out[child.tag]
            out[child.tag] = [*previous, value] if isinstance(previous, list) else [previous,
                                                                                      value]
        else:
            out[child.tag] = value
    return out


def ids(el: ET.Element, path: str) -> list[int]:
    found = el.find(path)
    return [] if found is None else [int(i.text or -1) for i in found.findall("ID")]


def _enum_name(kind: type[VmState] | type[LcmState] | type[HostState], value: int) -> str:
    try:
        return kind(value).name
    except ValueError:
        return str(value)


def vm(el: ET.Element) -> View:
    state, lcm = integer(el, "STATE"), integer(el, "LCM_STATE")
    try:
        name, short = state_name(state, lcm), short_state(state, lcm)
    except (ValueError, KeyError):
        name, short = f"{state}/{lcm}", "?"
    history = [_history(h) for h in el.findall("HISTORY_RECORDS/HISTORY")]
    placed = history[-1] if history and state in (VmState.ACTIVE, VmState.SUSPENDED) else None
    tmpl = attributes(el.find("TEMPLATE"))
    user = el.find("USER_TEMPLATE")
    message = ""
    if user is not None:
        message = text(user, "ERROR") or text(user, "SCHED_MESSAGE")
    stime, etime = integer(el, "STIME"), integer(el, "ETIME")
    return {
        "id": integer(el, "ID"),
        "name": text(el, "NAME"),
        "uid": integer(el, "UID"),
        "gid": integer(el, "GID"),
        "user": text(el, "UNAME"),
        "group": text(el, "GNAME"),
        "state": _enum_name(VmState, state),
        "lcm_state": _enum_name(LcmState, lcm),
        "state_name": name,
        "short_state": short,
        "host": placed["host"] if placed else "",
        "host_id": placed["host_id"] if placed else -1,
        "cpu": _float(tmpl.get("CPU")),
        "memory_mb": int(_float(tmpl.get("MEMORY"))),
        "used_cpu": number(el, "MONITORING/CPU"),
        "used_memory_kb": integer(el, "MONITORING/MEMORY"),
        "net_rx": integer(el, "MONITORING/NETRX"),
        "net_tx": integer(el, "MONITORING/NETTX"),
        "stime": stime,
        "etime": etime,
        "age_seconds": max(0, (etime or int(time.time())) - stime) if stime else 0,
        "deploy_id": text(el, "DEPLOY_ID"),
        "message": message,
        "template": tmpl,
        "user_template": attributes(user),
        "history": history,
    }


def _float(value: Any) -> float:
    try:
        return float(value)
    except (TypeError, ValueError):
        return 0.0


def _history(h: ET.Element) -> View:
    reason = integer(h, "REASON")
    try:
        reason_name = HistoryReason(reason).name.lower()
    except ValueError:
        reason_name = str(reason)
    return {
        "seq": integer(h, "SEQ"),
        "host": text(h, "HOSTNAME"),
        "host_id": integer(h, "HID"),
        "stime": integer(h, "STIME"),
        "etime": integer(h, "ETIME"),
        "prolog_stime": integer(h, "PSTIME"),
        "prolog_etime": integer(h, "PETIME"),
        "running_stime": integer(h, "RSTIME"),
        "running_etime": integer(h, "RETIME"),
        "epilog_stime": integer(h, "ESTIME"),
        "epilog_etime": integer(h, "EETIME"),
        "reason": reason_name,
        "vm_mad": text(h, "VM_MAD"),
        "tm_mad": text(h, "TM_MAD"),
    }


def host(el: ET.Element) -> View:
    state = integer(el, "STATE")
    try:
        short = SHORT_HOST[HostState(state)]
    except ValueError:
        short = "?"
    tmpl = attributes(el.find("TEMPLATE"))
    share = "HOST_SHARE/"
    return {
        "id": integer(el, "ID"),
        "name": text(el, "NAME"),
        "state": _enum_name(HostState, state),
        "short_state": short,
        "im_mad": text(el, "IM_MAD"),
        "vm_mad": text(el, "VM_MAD"),
        "vn_mad": text(el, "VN_MAD"),
        "cluster_id": integer(el, "CLUSTER_ID"),
        "last_monitored": integer(el, "LAST_MON_TIME"),
        "running_vms": integer(el, share + "RUNNING_VMS"),
        "cpu": {key.lower(): integer(el, share + f"{key}_CPU")
                for key in ("MAX", "FREE", "USED")} | {"allocated": integer(el, share + "CPU_USAGE")},
        "memory_kb": {key.lower(): integer(el, share + f"{key}_MEM")
                      for key in ("MAX", "FREE", "USED")}
        | {"allocated": integer(el, share + "MEM_USAGE")},
        "error": str(tmpl.get("ERROR", "")),
        "vms": ids(el, "VMS"),
        "template": tmpl,
    }


def image(el: ET.Element) -> View:
    kind, state = integer(el, "TYPE"), integer(el, "STATE")
    state_long, state_short = IMAGE_STATES.get(state, (str(state), "?"))
    return {
        "id": integer(el, "ID"),
        "name": text(el, "NAME"),
        "user": text(el, "UNAME"),
        "group": text(el, "GNAME"),
        "type": IMAGE_TYPES.get(kind, str(kind)),
        "state": state_long,
        "short_state": state_short,
        "persistent": text(el, "PERSISTENT") == "1",
        "size_mb": integer(el, "SIZE"),
        "path": text(el, "PATH"),
        "source": text(el, "SOURCE"),
        "fstype": text(el, "FSTYPE"),
        "datastore_id": integer(el, "DATASTORE_ID"),
        "datastore": text(el, "DATASTORE"),
        "running_vms": integer(el, "RUNNING_VMS"),
        "regtime": integer(el, "REGTIME"),
        "vms": ids(el, "VMS"),
        "template": attributes(el.find("TEMPLATE")),
    }


def datastore(el: ET.Element) -> View:
    return {
        "id": integer(el, "ID"),
        "name": text(el, "NAME"),
        "type": "system" if text(el, "TYPE") == "1" else "image",
        "tm_mad": text(el, "TM_MAD"),
        "ds_mad": text(el, "DS_MAD"),
        "base_path": text(el, "BASE_PATH"),
        "images": ids(el, "IMAGES"),
        "template": attributes(el.find("TEMPLATE")),
    }


def vm_template(el: ET.Element) -> View:
    return {
        "id": integer(el, "ID"),
        "name": text(el, "NAME"),
        "user": text(el, "UNAME"),
        "group": text(el, "GNAME"),
        "regtime": integer(el, "REGTIME"),
        "template": attributes(el.find("TEMPLATE")),
    }


def user(el: ET.Element) -> View:
    return {
        "id": integer(el, "ID"),
        "name": text(el, "NAME"),
        "gid": integer(el, "GID"),
        "group": text(el, "GNAME"),
        "groups": ids(el, "GROUPS"),
        "auth_driver": text(el, "AUTH_DRIVER"),
        "enabled": text(el, "ENABLED") == "1",
        "password": text(el, "PASSWORD"),
        "template": attributes(el.find("TEMPLATE")),
    }


def pool(root: ET.Element, tag: str, view: Callable[[ET.Element], View]) -> list[View]:
    return [view(el) for el in root.findall(tag)]
