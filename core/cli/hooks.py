"""`nubo hook ...`: VM and host hooks at runtime, and their log (oneadmin)."""

from __future__ import annotations

import argparse
import time
import xml.etree.ElementTree as ET
from typing import Any

from core import template
from core.cli.client import Client, CliError
from core.cli.commands import Subparsers, command, group, parse_template, read_source
from core.cli.output import Column, date, emit, emit_id, emit_json, emit_rows, section

COLUMNS = [
    Column("ID", lambda h: str(h["id"]), right=True),
    Column("NAME", lambda h: h["name"]),
    Column("FOR", lambda h: h["resource"].lower()),
    Column("ON", lambda h: h["on"]),
    Column("COMMAND", lambda h: f"{h['command']} {h['arguments']}".strip()),
    Column("REMOTE", lambda h: h["remote"].lower()),
    Column("FROM", lambda h: "nubo.conf" if h["origin"] == "conf" else "api"),
]
RUN_COLUMNS = [
    Column("RUN", lambda r: str(r["id"]), right=True),
    Column("TIME", lambda r: date(r["time"])),
    Column("HOOK", lambda r: str(r["hook"]), right=True),
    Column("OBJECT", lambda r: f"{r['resource'].lower()} {r['object']}"),
    Column("EVENT", lambda r: r["event"]),
    Column("STATUS", lambda r: r["status"]),
    Column("RC", lambda r: r["rc"] or "-", right=True),
    Column("COMMAND", lambda r: f"{r['command']} {r['arguments']}".strip()),
]


def _hook(el: ET.Element) -> dict[str, Any]:
    t = el.find("TEMPLATE")
    assert t is not None
    return {"id": int(el.findtext("ID") or -1), "name": el.findtext("NAME") or "",
            **{tag.lower(): t.findtext(tag) or "" for tag in
               ("RESOURCE", "ON", "COMMAND", "ARGUMENTS", "REMOTE", "ORIGIN", "STATE",
                "LCM_STATE")}}


def _run(el: ET.Element) -> dict[str, Any]:
    return {"id": int(el.findtext("EXECUTION_ID") or -1), "hook": int(el.findtext("HOOK_ID") or -1),
            "time": int(el.findtext("TIMESTAMP") or 0), "resource": el.findtext("RESOURCE") or "",
            "object": int(el.findtext("RESOURCE_ID") or -1), "event": el.findtext("EVENT") or "",
            "status": el.findtext("STATUS") or "", "host": el.findtext("REMOTE_HOST") or "",
            "command": el.findtext("EXECUTION_RESULT/COMMAND") or "",
            "arguments": el.findtext("ARGUMENTS") or "",
            "rc": el.findtext("EXECUTION_RESULT/CODE") or "",
            "output": el.findtext("EXECUTION_RESULT/STDOUT") or ""}


def _hooks(client: Client) -> list[dict[str, Any]]:
    return [_hook(h) for h in client.document("one.hookpool.info").findall("HOOK")]


def _resolve(client: Client, ref: str) -> int:
    if ref.isdigit():
        return int(ref)
    found = [h for h in _hooks(client) if h["name"] == ref]
    if len(found) != 1:
        raise CliError(f"hook {ref!r} does not exist" if not found else
                       f"{len(found)} hooks are named {ref!r}: give the id")
    return int(found[0]["id"])


def list_hooks(client: Client, args: argparse.Namespace) -> int:
    return emit_rows(COLUMNS, _hooks(client), args.json)


def show(client: Client, args: argparse.Namespace) -> int:
    found = _hook(client.document("one.hook.info", _resolve(client, args.hook)))
    if args.json:
        emit_json(found)
        return 0
    fields: list[tuple[str, object]] = [(k.upper(), v) for k, v in found.items() if v != ""]
    emit(section(f"HOOK {found['id']} INFORMATION", fields).rstrip())
    return 0


def create(client: Client, args: argparse.Namespace) -> int:
    if args.file:
        source = "standard input" if args.file == "-" else args.file
        text = parse_template(read_source(args.file), source).dumps()
    else:
        missing = [flag for flag, value in (("--name", args.name), ("--on", args.on),
                                            ("--command", args.command_line)) if not value]
        if missing:
            raise CliError(f"give a template FILE, or {', '.join(missing)}")
        spec = template.Template()
        for name, value in (("NAME", args.name), ("RESOURCE", args.resource.upper()),
                            ("ON", args.on), ("COMMAND", args.command_line),
                            ("ARGUMENTS", args.arguments),
                            ("REMOTE", "YES" if args.remote else "NO")):
            spec.set(name, value)
        text = spec.dumps()
    emit_id(int(client.call("one.hook.allocate", text)), args.json)
    return 0


def delete(client: Client, args: argparse.Namespace) -> int:
    client.call("one.hook.delete", _resolve(client, args.hook))
    return 0


def log(client: Client, args: argparse.Namespace) -> int:
    hook_id = _resolve(client, args.hook) if args.hook else -1
    since = int(time.time() - args.since) if args.since else 0
    runs = [_run(r) for r in client.document("one.hooklog.info", since, 0, hook_id, 0)
            .findall("HOOK_EXECUTION_RECORD")]
    if args.vm is not None:
        runs = [r for r in runs if r["resource"] == "VM" and r["object"] == args.vm]
    if args.host is not None:
        runs = [r for r in runs if r["resource"] == "HOST" and r["object"] == args.host]
    if args.json or not args.output:
        return emit_rows(RUN_COLUMNS, runs, args.json)
    for run in runs:
        emit(f"--- run {run['id']}: hook {run['hook']} on {run['resource'].lower()} "
             f"{run['object']} {run['event']}, {run['status']} (exit {run['rc'] or '-'})")
        emit(run["output"] or "(no output)")
    return 0


def register(sub: Subparsers) -> None:
    verbs = group(sub, "hook", "VM and host hooks (oneadmin)")
    command(verbs, "list", "list the hooks (nubo.conf's and those made at runtime)", list_hooks)
    p = command(verbs, "show", "show a hook", show)
    p.add_argument("hook", metavar="ID|NAME")
    p = command(verbs, "create", "add a hook; it takes effect at the next event", create,
                description=(
                    "Add a hook from a template FILE (- reads standard input): one\n"
                    "VM_HOOK = [ ... ] or HOST_HOOK = [ ... ] vector as in nubo.conf, or\n"
                    "OpenNebula 5's NAME/RESOURCE/ON/COMMAND/ARGUMENTS/REMOTE; or from flags.\n\n"
                    "examples:\n"
                    "  nubo hook create --name notify --on RUNNING --command /usr/local/bin/notify"
                    " --arguments '$VMID $TEMPLATE'\n"
                    "  nubo hook create --host --name fence --on ERROR --command host_error"
                    " --arguments '$HID -r'"))
    p.add_argument("file", nargs="?", metavar="FILE|-", help="hook template")
    p.add_argument("--name")
    p.add_argument("--host", dest="resource", action="store_const", const="host", default="vm",
                   help="a host hook (default: a VM hook)")
    p.add_argument("--on", help="event: CREATE, PROLOG, RUNNING, SHUTDOWN, STOP, DONE, FAILED, "
                                "UNKNOWN (VM); CREATE, ERROR, DISABLE (host)")
    p.add_argument("--command", dest="command_line", metavar="COMMAND",
                   help="a hook in remotes/hooks/, an absolute path, or `onevm ...`")
    p.add_argument("--arguments", default="", help="with $VMID, $ID, $HID, $TEMPLATE, "
                   "$PREV_STATE, $PREV_LCM_STATE")
    p.add_argument("--remote", action="store_true", help="run it on the VM's host (or the host)")
    p = command(verbs, "delete", "remove a hook made at runtime", delete)
    p.add_argument("hook", metavar="ID|NAME")
    p = command(verbs, "log", "what the hooks ran: event, command, exit status, output", log)
    p.add_argument("hook", nargs="?", metavar="ID|NAME", help="one hook's runs only")
    p.add_argument("--vm", type=int, metavar="ID", help="runs for this VM only")
    p.add_argument("--host", type=int, metavar="ID", help="runs for this host only")
    p.add_argument("--since", type=float, metavar="S", help="runs of the last S seconds")
    p.add_argument("--output", action="store_true", help="print each run's output")
