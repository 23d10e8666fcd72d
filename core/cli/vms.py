"""`nubo vm ...`: onevm's verbs."""

from __future__ import annotations

import argparse
import sys
import time

from core import template
from core.cli import devices, follow, views
from core.cli.client import Client, CliError, resolve
from core.cli.commands import (
    Run,
    Subparsers,
    attribute,
    command,
    for_each,
    group,
    parse_template,
    read_source,
)
from core.cli.output import (
    Column,
    date,
    duration,
    emit,
    emit_id,
    emit_json,
    emit_rows,
    error,
    human_kb,
    section,
    table,
    template_text,
)
from core.lifecycle import SHORT_LCM, SHORT_STATE, LcmState, VmState

COLUMNS = [
    Column("ID", lambda v: str(v["id"]), right=True),
    Column("USER", lambda v: v["user"]),
    Column("GROUP", lambda v: v["group"]),
    Column("NAME", lambda v: v["name"]),
    Column("STAT", lambda v: v["short_state"]),
    Column("UCPU", lambda v: f"{v['used_cpu']:g}", right=True),
    Column("UMEM", lambda v: human_kb(v["used_memory_kb"]), right=True),
    Column("HOST", lambda v: v["host"]),
    Column("TIME", lambda v: duration(v["age_seconds"]), right=True),
]

# `nubo vm <verb>` -> the API action it sends
ACTIONS = {
    "shutdown": ("shutdown", "shut down running VMs (ACPI), then clean up their hosts"),
    "hold": ("hold", "keep pending VMs from being scheduled"),
    "release": ("release", "let held VMs be scheduled again"),
    "stop": ("stop", "save running VMs and move their files back to the front-end"),
    "cancel": ("cancel", "power off running VMs at once, then clean up their hosts"),
    "suspend": ("suspend", "save running VMs, keeping them on their hosts"),
    "resume": ("resume", "resume stopped or suspended VMs"),
    "restart": ("restart", "boot again VMs stuck in BOOT or UNKNOWN"),
    "reboot": ("reboot", "reboot running VMs"),
    "delete": ("finalize", "delete VMs in any state, cleaning up what they left"),
    "resubmit": ("resubmit", "send VMs back to PENDING to be scheduled again"),
}


def mb_size(text: str) -> int:
    """`512`, `512M` or `2G` as MB."""
    raw = text.strip().upper().removesuffix("B")
    scale = {"M": 1, "G": 1024, "T": 1024 * 1024}.get(raw[-1:], 0)
    digits = raw[:-1] if scale else raw
    if not digits.isdigit() or int(digits) <= 0:
        raise argparse.ArgumentTypeError(f"expected a size in MB (or with M/G), not {text!r}")
    return int(digits) * (scale or 1)


def build_template(args: argparse.Namespace) -> str:
    if args.file:
        source = "standard input" if args.file == "-" else args.file
        tmpl = parse_template(read_source(args.file), source)
    elif args.memory is None:
        raise CliError("give a template FILE (- for standard input), or --memory and --cpu")
    else:
        tmpl = template.Template()
    if args.name:
        tmpl.set("NAME", args.name)
    if args.memory is not None:
        tmpl.set("MEMORY", str(args.memory))
    if args.cpu is not None:
        tmpl.set("CPU", f"{args.cpu:g}")
    elif "CPU" not in tmpl:
        tmpl.set("CPU", "1")
    for disk in args.disk:
        tmpl.add("DISK", {"IMAGE_ID": disk} if disk.isdigit() else {"IMAGE": disk})
    for name, value in (attribute(a) for a in args.attr):
        if isinstance(value, dict):
            tmpl.add(name, value)
        else:
            tmpl.set(name, value)
    return tmpl.dumps()


def created(client: Client, vm_id: int, args: argparse.Namespace) -> int:
    """Print the new VM's id; with --wait, follow it to RUNNING."""
    if args.wait:
        if not args.json:
            emit(f"ID: {vm_id}")
        return follow.wait_running(client, vm_id, timeout=args.timeout, as_json=args.json)
    return emit_id(vm_id, args.json)


def check_wait(args: argparse.Namespace) -> None:
    if args.wait and args.hold:
        raise CliError("--wait cannot follow a VM created with --hold: it stays in HOLD")


def create(client: Client, args: argparse.Namespace) -> int:
    check_wait(args)
    text = build_template(args)
    return created(client, int(client.call("one.vm.allocate", text, args.hold)), args)


def state_filter(name: str) -> tuple[int, set[int] | None]:
    """A state name (`running`, `PENDING`, `runn`, ...) as (pool state filter, LCM states)."""
    up, low = name.upper(), name.lower()
    if up in VmState.__members__:
        return int(VmState[up]), None
    if up in LcmState.__members__:
        return int(VmState.ACTIVE), {int(LcmState[up])}
    for state, short in SHORT_STATE.items():
        if short == low:
            return int(state), None
    lcms = {int(lcm) for lcm, short in SHORT_LCM.items() if short == low}
    if lcms:
        return int(VmState.ACTIVE), lcms
    known = ", ".join(s.lower() for s in [*VmState.__members__, *LcmState.__members__])
    raise CliError(f"unknown state {name!r}; use one of {known} or a short name like runn")


def list_vms(client: Client, args: argparse.Namespace) -> int:
    flag = -2 if args.all else -3 if args.mine else -1
    state, lcms = state_filter(args.state) if args.state else (-1, None)
    pool = client.document("one.vmpool.info", flag, -1, -1, state)
    found = views.pool(pool, "VM", views.vm)
    if lcms is not None:
        names = {LcmState(lcm).name for lcm in lcms}
        found = [v for v in found if v["lcm_state"] in names]
    return emit_rows(COLUMNS, found, args.json)


def show(client: Client, args: argparse.Namespace) -> int:
    vm_id = resolve(client, "vm", args.vm)
    vm = views.vm(client.document("one.vm.info", vm_id))
    if args.json:
        emit_json(vm)
        return 0
    lcm = vm["lcm_state"] if vm["state"] == "ACTIVE" else "LCM_INIT"
    fields: list[tuple[str, object]] = [
        ("ID", vm["id"]), ("NAME", vm["name"]), ("USER", vm["user"]), ("GROUP", vm["group"]),
        ("STATE", vm["state"]), ("LCM_STATE", lcm), ("HOST", vm["host"] or "-"),
        ("CPU", f"{vm['cpu']:g}"), ("MEMORY", f"{vm['memory_mb']}M"),
        ("START TIME", date(vm["stime"])), ("END TIME", date(vm["etime"])),
        ("DEPLOY ID", vm["deploy_id"] or "-"),
    ]
    if vm["message"]:
        label = "WAITING" if vm["state"] == "PENDING" else "MESSAGE"
        fields.append((label, vm["message"]))
    pages = [
        section(f"VIRTUAL MACHINE {vm['id']} INFORMATION", fields),
        section("VIRTUAL MACHINE MONITORING", [
            ("USED CPU", f"{vm['used_cpu']:g}"), ("USED MEMORY", human_kb(vm["used_memory_kb"])),
            ("NET_RX", human_kb(vm["net_rx"] / 1024)), ("NET_TX", human_kb(vm["net_tx"] / 1024)),
        ]),
        "VIRTUAL MACHINE TEMPLATE\n" + template_text(vm["template"]),
        "VIRTUAL MACHINE HISTORY\n" + table(HISTORY_COLUMNS, vm["history"]),
    ]
    emit("\n\n".join(p.rstrip() for p in pages))
    return 0


HISTORY_COLUMNS = [
    Column("SEQ", lambda h: str(h["seq"]), right=True),
    Column("HOST", lambda h: h["host"]),
    Column("REASON", lambda h: h["reason"]),
    Column("START", lambda h: date(h["stime"])),
    Column("END", lambda h: date(h["etime"])),
    Column("PROLOG", lambda h: _span(h["prolog_stime"], h["prolog_etime"]), right=True),
    Column("RUNNING", lambda h: _span(h["running_stime"], h["running_etime"]), right=True),
]


def _span(start: int, end: int) -> str:
    if not start:
        return "-"
    return duration((end or time.time()) - start)


def act(action: str) -> Run:
    def run(client: Client, args: argparse.Namespace) -> int:
        rc = for_each(client, "vm", args.vms,
                      lambda vm_id: client.call("one.vm.action", action, vm_id))
        if rc == 0 and args.wait:
            for ref in args.vms:
                vm_id = resolve(client, "vm", ref)
                rc = max(rc, follow.wait_running(client, vm_id, timeout=args.timeout,
                                                 as_json=args.json, settle=True))
        return rc

    return run


def deploy(client: Client, args: argparse.Namespace) -> int:
    vm_id = resolve(client, "vm", args.vm)
    client.call("one.vm.deploy", vm_id, resolve(client, "host", args.host))
    return 0


def migrate(client: Client, args: argparse.Namespace) -> int:
    vm_id = resolve(client, "vm", args.vm)
    host_id = resolve(client, "host", args.host)
    client.call("one.vm.migrate", vm_id, host_id, args.live, args.enforce)
    if not args.wait:
        return 0
    rc = follow.wait_running(client, vm_id, timeout=args.timeout, as_json=args.json)
    vm = views.vm(client.document("one.vm.info", vm_id))
    if rc == 0 and vm["host"] != views.host(client.document("one.host.info", host_id))["name"]:
        error(f"VM {vm_id} still runs on {vm['host']}: {vm['message'] or 'the migration failed'}")
        return 1
    return rc


def log(client: Client, args: argparse.Namespace) -> int:
    vm_id = resolve(client, "vm", args.vm)
    return follow.show_log(client, vm_id, follow=args.follow, as_json=args.json)


def console(client: Client, args: argparse.Namespace) -> int:
    vm_id = resolve(client, "vm", args.vm)
    text = str(client.call("one.vm.console", vm_id))
    if args.json:
        emit_json({"id": vm_id, "console": text})
    else:
        sys.stdout.write(text if not text or text.endswith("\n") else text + "\n")
    return 0


def add_wait_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("--hold", action="store_true", help="create it in HOLD (see `vm release`)")
    p.add_argument("--wait", action="store_true",
                   help="follow the VM, printing each state change, until it is RUNNING; "
                        "exit 1 if it fails or the timeout passes")
    p.add_argument("--timeout", type=float, default=300.0, metavar="S",
                   help="with --wait: give up after S seconds (default 300; 0: never)")


def register(sub: Subparsers) -> None:
    verbs = group(sub, "vm", "manage virtual machines")
    p = command(verbs, "create", "create a VM from a template file or options; prints its ID",
                create, description=(
                    "Create a VM from a template FILE (- reads standard input), or build the\n"
                    "template from --memory/--cpu/--disk/--attr (which also amend a FILE).\n\n"
                    "  nubo vm create --memory 512 --cpu 1 --disk ttylinux --wait\n"
                    "  nubo vm create web.one --attr DUMMY_FAIL=deploy"))
    p.add_argument("file", nargs="?", metavar="FILE|-", help="VM template file")
    p.add_argument("--memory", type=mb_size, metavar="MB", help="memory in MB (or 2G)")
    p.add_argument("--cpu", type=float, metavar="N", help="CPUs to reserve (default 1)")
    p.add_argument("--name", help="VM name (default one-<id>)")
    p.add_argument("--disk", action="append", default=[], metavar="IMAGE",
                   help="attach an image by name or id (repeatable)")
    p.add_argument("--attr", action="append", default=[], metavar="NAME=VALUE",
                   help="set a template attribute (repeatable)")
    add_wait_options(p)
    p = command(verbs, "list", "list VMs (yours and your group's unless --all/--mine)",
                list_vms)
    scope = p.add_mutually_exclusive_group()
    scope.add_argument("--all", action="store_true", help="every VM you may see")
    scope.add_argument("--mine", action="store_true", help="only your own VMs")
    p.add_argument("--state", metavar="NAME",
                   help="only VMs in this state: pending, running, failed, done, runn, ...")
    p = command(verbs, "show", "show a VM: states, host, template, history, message", show)
    p.add_argument("vm", metavar="ID|NAME")
    p = command(verbs, "console", "print the last 64 KB of a VM's serial console (as of its "
                "last poll; hypervisor drivers with a `console` action keep it)", console)
    p.add_argument("vm", metavar="ID|NAME")
    p = command(verbs, "log", "print a VM's log", log)
    p.add_argument("vm", metavar="ID|NAME")
    p.add_argument("--follow", "-f", action="store_true",
                   help="keep printing new lines until Ctrl-C")
    for verb, (action, what) in ACTIONS.items():
        p = command(verbs, verb, what, act(action),
                    description=f"{what} (sends the `{action}` action; prints nothing)")
        p.add_argument("vms", nargs="+", metavar="ID|NAME")
        p.add_argument("--wait", action="store_true",
                       help="follow each VM until the action has played out (RUNNING, "
                            "SUSPENDED, STOPPED, DONE, ...); exit 1 if it ends FAILED")
        p.add_argument("--timeout", type=float, default=300.0, metavar="S",
                       help="with --wait: give up after S seconds (default 300; 0: never)")
    p = command(verbs, "deploy", "place a pending VM on a host by hand (oneadmin)", deploy)
    p.add_argument("vm", metavar="ID|NAME")
    p.add_argument("host", metavar="HOST")
    p = command(verbs, "migrate", "move a running VM to another host (oneadmin)", migrate,
                description="Move a RUNNING VM to HOST.\n\n"
                            "Cold (the default): the VM is saved, its files move with the\n"
                            "transfer manager and it is restored there.\n"
                            "--live: the guest moves while it runs; its directory must be on\n"
                            "shared storage (system datastore TM_MAD shared or qcow2).\n\n"
                            "examples:\n"
                            "  nubo vm migrate web h2 --wait\n"
                            "  nubo vm migrate 12 h3 --live --enforce")
    p.add_argument("vm", metavar="ID|NAME")
    p.add_argument("host", metavar="HOST")
    p.add_argument("--live", action="store_true", help="move the running guest without "
                   "stopping it (QMP migration between the hosts)")
    p.add_argument("--enforce", action="store_true",
                   help="refuse when HOST has no room for the VM (default: allow overcommit)")
    p.add_argument("--wait", action="store_true",
                   help="follow the VM until it runs again; exit 1 if it is not on HOST")
    p.add_argument("--timeout", type=float, default=300.0, metavar="S",
                   help="with --wait: give up after S seconds (default 300; 0: never)")
    devices.register(verbs)
