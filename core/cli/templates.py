"""`nubo template ...`: onetemplate's verbs."""

from __future__ import annotations

import argparse

from core.cli import views
from core.cli.client import Client, resolve
from core.cli.commands import Subparsers, command, for_each, group, parse_template, read_source
from core.cli.output import Column, date, emit, emit_id, emit_json, emit_rows, section, template_text
from core.cli.vms import add_wait_options, check_wait, created

COLUMNS = [
    Column("ID", lambda t: str(t["id"]), right=True),
    Column("USER", lambda t: t["user"]),
    Column("GROUP", lambda t: t["group"]),
    Column("NAME", lambda t: t["name"]),
    Column("REGTIME", lambda t: date(t["regtime"])),
]


def create(client: Client, args: argparse.Namespace) -> int:
    source = "standard input" if args.file == "-" else args.file
    text = parse_template(read_source(args.file), source).dumps()
    template_id = int(client.call("one.template.allocate", text))
    return emit_id(template_id, args.json)


def list_templates(client: Client, args: argparse.Namespace) -> int:
    pool = client.document("one.templatepool.info", -2, -1, -1)
    found = views.pool(pool, "VMTEMPLATE", views.vm_template)
    return emit_rows(COLUMNS, found, args.json)


def show(client: Client, args: argparse.Namespace) -> int:
    template_id = resolve(client, "template", args.template)
    t = views.vm_template(client.document("one.template.info", template_id))
    if args.json:
        emit_json(t)
        return 0
    fields: list[tuple[str, object]] = [
        ("ID", t["id"]), ("NAME", t["name"]), ("USER", t["user"]), ("GROUP", t["group"]),
        ("REGISTER TIME", date(t["regtime"])),
    ]
    emit((section(f"TEMPLATE {t['id']} INFORMATION", fields) + "\n\nTEMPLATE CONTENTS\n"
          + template_text(t["template"])).rstrip())
    return 0


def delete(client: Client, args: argparse.Namespace) -> int:
    return for_each(client, "template", args.templates,
                    lambda i: client.call("one.template.delete", i))


def instantiate(client: Client, args: argparse.Namespace) -> int:
    check_wait(args)
    template_id = resolve(client, "template", args.template)
    vm_id = int(client.call("one.template.instantiate", template_id, args.name or "", args.hold))
    return created(client, vm_id, args)


def register(sub: Subparsers) -> None:
    verbs = group(sub, "template", "manage VM templates")
    p = command(verbs, "create", "register a VM template; prints its ID", create)
    p.add_argument("file", metavar="FILE|-", help="template file, - for standard input")
    command(verbs, "list", "list the templates you may use", list_templates)
    p = command(verbs, "show", "show a template", show)
    p.add_argument("template", metavar="ID|NAME")
    p = command(verbs, "delete", "delete templates", delete)
    p.add_argument("templates", nargs="+", metavar="ID|NAME")
    p = command(verbs, "instantiate", "create a VM from a template; prints its ID", instantiate)
    p.add_argument("template", metavar="ID|NAME")
    p.add_argument("--name", help="name of the new VM")
    add_wait_options(p)
