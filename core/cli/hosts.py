"""`nubo host ...`: onehost's verbs."""

from __future__ import annotations

import argparse

from core import template
from core.cli import follow, views
from core.cli.client import Client, resolve
from core.cli.commands import Subparsers, attribute, command, for_each, group, read_source
from core.cli.output import (
    Column,
    Row,
    date,
    emit,
    emit_id,
    emit_json,
    emit_rows,
    human_kb,
    percent,
    section,
    template_text,
)


def _cpu(h: Row) -> str:
    cpu = h["cpu"]
    return f"{cpu['allocated']} / {cpu['max']} ({percent(cpu['allocated'], cpu['max'])}%)"


def _mem(h: Row) -> str:
    mem = h["memory_kb"]
    return (f"{human_kb(mem['allocated'])} / {human_kb(mem['max'])} "
            f"({percent(mem['allocated'], mem['max'])}%)")


COLUMNS = [
    Column("ID", lambda h: str(h["id"]), right=True),
    Column("NAME", lambda h: h["name"]),
    Column("RVM", lambda h: str(h["running_vms"]), right=True),
    Column("ALLOCATED_CPU", _cpu, right=True),
    Column("ALLOCATED_MEM", _mem, right=True),
    Column("STAT", lambda h: h["short_state"]),
]


def create(client: Client, args: argparse.Namespace) -> int:
    attrs = [attribute(a) for a in args.attr]
    host_id = int(client.call("one.host.allocate", args.name, args.im, args.vmm, args.vnm,
                              args.cluster))
    if attrs:
        client.call("one.host.update", host_id, template.Template(attrs).dumps(), 1)
    return emit_id(host_id, args.json)


def list_hosts(client: Client, args: argparse.Namespace) -> int:
    hosts = views.pool(client.document("one.hostpool.info"), "HOST", views.host)
    return emit_rows(COLUMNS, hosts, args.json)


def show(client: Client, args: argparse.Namespace) -> int:
    host_id = resolve(client, "host", args.host)
    h = views.host(client.document("one.host.info", host_id))
    if args.json:
        emit_json(h)
        return 0
    cpu, mem = h["cpu"], h["memory_kb"]
    fields: list[tuple[str, object]] = [
        ("ID", h["id"]), ("NAME", h["name"]), ("STATE", h["state"]),
        ("IM_MAD", h["im_mad"]), ("VM_MAD", h["vm_mad"]), ("VN_MAD", h["vn_mad"]),
        ("CLUSTER", h["cluster_id"]), ("LAST MONITORING TIME", date(h["last_monitored"])),
    ]
    if h["error"]:
        label = "ERROR" if h["state"] == "ERROR" else "LAST ERROR"
        fields.append((label, h["error"]))
    pages = [section(f"HOST {h['id']} INFORMATION", fields), section("HOST SHARES", [
        ("RUNNING VMS", h["running_vms"]),
        ("TOTAL CPU", cpu["max"]), ("USED CPU (REAL)", cpu["used"]),
        ("USED CPU (ALLOCATED)", _cpu(h)), ("FREE CPU", cpu["free"]),
        ("TOTAL MEM", human_kb(mem["max"])), ("USED MEM (REAL)", human_kb(mem["used"])),
        ("USED MEM (ALLOCATED)", _mem(h)), ("FREE MEM", human_kb(mem["free"])),
    ])]
    tmpl = {k: v for k, v in h["template"].items() if k != "ERROR"}
    pages.append("HOST TEMPLATE\n" + template_text(tmpl))
    pages.append("VIRTUAL MACHINES\n" + (" ".join(str(i) for i in h["vms"]) or "-"))
    emit("\n\n".join(p.rstrip() for p in pages))
    return 0


def enable(client: Client, args: argparse.Namespace) -> int:
    return for_each(client, "host", args.hosts, lambda i: client.call("one.host.enable", i, True))


def disable(client: Client, args: argparse.Namespace) -> int:
    return for_each(client, "host", args.hosts,
                    lambda i: client.call("one.host.enable", i, False))


def delete(client: Client, args: argparse.Namespace) -> int:
    return for_each(client, "host", args.hosts, lambda i: client.call("one.host.delete", i))


def sync(client: Client, args: argparse.Namespace) -> int:
    client.call("one.host.sync")
    return 0


def log(client: Client, args: argparse.Namespace) -> int:
    host_id = resolve(client, "host", args.host)
    return follow.show_log(client, host_id, follow=args.follow, as_json=args.json,
                           method="one.host.log")


def update(client: Client, args: argparse.Namespace) -> int:
    host_id = resolve(client, "host", args.host)
    client.call("one.host.update", host_id, read_source(args.file), 1 if args.merge else 0)
    return 0


def register(sub: Subparsers) -> None:
    verbs = group(sub, "host", "manage hypervisor hosts")
    p = command(verbs, "create", "register a host; prints its ID", create)
    p.add_argument("name", metavar="NAME")
    p.add_argument("--im", required=True, metavar="DRIVER", help="information driver (probes)")
    p.add_argument("--vmm", required=True, metavar="DRIVER", help="virtualization driver")
    p.add_argument("--vnm", default="dummy", metavar="DRIVER",
                   help="network driver (default: dummy)")
    p.add_argument("--cluster", type=int, default=-1, metavar="ID", help="cluster id")
    p.add_argument("--attr", action="append", default=[], metavar="NAME=VALUE",
                   help="template attribute merged in after creation (repeatable), "
                        "e.g. DUMMY_TOTALCPU=400")
    command(verbs, "list", "list hosts with their allocated capacity", list_hosts)
    p = command(verbs, "show", "show a host: state, share, template, VMs", show)
    p.add_argument("host", metavar="ID|NAME")
    for name, run, what in (("enable", enable, "enable hosts for scheduling"),
                            ("disable", disable, "disable hosts (no new VMs)"),
                            ("delete", delete, "delete hosts that run no VMs")):
        p = command(verbs, name, what, run)
        p.add_argument("hosts", nargs="+", metavar="ID|NAME")
    p = command(verbs, "log", "print a host's log: state changes and why, missed heartbeats, "
                "its hooks' outcomes (oneadmin)", log)
    p.add_argument("host", metavar="ID|NAME")
    p.add_argument("--follow", "-f", action="store_true",
                   help="keep printing new lines until Ctrl-C")
    command(verbs, "sync", "send changed driver remotes to every host", sync)
    p = command(verbs, "update", "replace (or --merge into) a host's template", update)
    p.add_argument("host", metavar="ID|NAME")
    p.add_argument("file", metavar="FILE|-", help="template file, - for standard input")
    p.add_argument("--merge", action="store_true",
                   help="merge the attributes in instead of replacing the template")
