"""Hooks over XML-RPC, with OpenNebula 5.10's names and documents (`one.hook.*`,
`one.hookpool.info`, `one.hooklog.info`), so pyone's hook calls work. Only state hooks
exist (`TYPE = state`); the hooks of nubo.conf are listed too, and cannot be deleted."""

from __future__ import annotations

import json
import xml.etree.ElementTree as ET

from apis.xmlrpc.methods import method, xml_text
from core.models import Hook, HookRun
from core.service import hooks
from core.service.context import Caller, Cloud


def hook_xml(hook: Hook) -> ET.Element:
    root = ET.Element("HOOK")
    for tag, value in (("ID", hook.id), ("NAME", hook.name), ("TYPE", "state")):
        ET.SubElement(root, tag).text = str(value)
    tmpl = ET.SubElement(root, "TEMPLATE")
    for tag, value in (("RESOURCE", hook.resource.upper()), ("ON", hook.on),
                       ("COMMAND", hook.command), ("ARGUMENTS", hook.arguments),
                       ("REMOTE", "YES" if hook.remote else "NO"), ("ORIGIN", hook.origin)):
        ET.SubElement(tmpl, tag).text = value
    if hook.on == "CUSTOM":
        ET.SubElement(tmpl, "STATE").text = str(hook.state)
        ET.SubElement(tmpl, "LCM_STATE").text = str(hook.lcm_state)
    return root


def run_xml(run: HookRun) -> ET.Element:
    """OpenNebula's HOOK_EXECUTION_RECORD, plus the object and event that fired it."""
    root = ET.Element("HOOK_EXECUTION_RECORD")
    argv = json.loads(run.argv)
    for tag, value in (("HOOK_ID", run.hook_id), ("EXECUTION_ID", run.id),
                       ("TIMESTAMP", int(run.created)), ("RESOURCE", run.resource.upper()),
                       ("RESOURCE_ID", run.object_id), ("EVENT", run.event),
                       ("STATUS", run.status), ("REMOTE_HOST", run.host),
                       ("ARGUMENTS", " ".join(argv[1:]))):
        ET.SubElement(root, tag).text = str(value)
    result = ET.SubElement(root, "EXECUTION_RESULT")
    ET.SubElement(result, "COMMAND").text = argv[0] if argv else ""
    ET.SubElement(result, "STDOUT").text = run.output
    ET.SubElement(result, "CODE").text = "" if run.rc is None else str(run.rc)
    return root


@method("one.hook.allocate", str)
def hook_allocate(cloud: Cloud, caller: Caller, text: str) -> int:
    return hooks.create_hook(cloud, caller, text=text)


@method("one.hook.info", int, optional=(bool,))
def hook_info(cloud: Cloud, caller: Caller, hook_id: int, _decrypt: bool = False) -> str:
    return xml_text(hook_xml(hooks.get_hook(cloud, caller, hook_id=hook_id)))


@method("one.hook.delete", int)
def hook_delete(cloud: Cloud, caller: Caller, hook_id: int) -> int:
    hooks.delete_hook(cloud, caller, hook_id=hook_id)
    return hook_id


@method("one.hookpool.info", optional=(int, int, int))
def hookpool_info(cloud: Cloud, caller: Caller, _filter: int = -2, _start: int = -1,
                  _end: int = -1) -> str:
    root = ET.Element("HOOK_POOL")
    root.extend(hook_xml(h) for h in hooks.list_hooks(cloud, caller))
    return xml_text(root)


@method("one.hooklog.info", optional=(int, int, int, int))
def hooklog_info(cloud: Cloud, caller: Caller, min_ts: int = 0, max_ts: int = 0,
                 hook_id: int = -1, rc_filter: int = 0) -> str:
    """5.10's filters: time window (0: open), hook (-1: any), 1 success only, -1 failures."""
    runs = hooks.list_runs(cloud, caller, hook_id=hook_id, since=float(min_ts))
    root = ET.Element("HOOKLOG")
    root.extend(run_xml(r) for r in runs
                if (not max_ts or r.created <= max_ts)
                and (rc_filter == 0 or (rc_filter > 0) == (r.status == "done")))
    return xml_text(root)
