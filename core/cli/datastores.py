"""`nubo datastore ...`: onedatastore's verbs (list, show, update)."""

from __future__ import annotations

import argparse

from core import template
from core.cli import views
from core.cli.client import Client, CliError, resolve
from core.cli.commands import Subparsers, command, group, parse_template, read_source
from core.cli.output import Column, emit, emit_json, emit_rows, section, template_text

COLUMNS = [
    Column("ID", lambda d: str(d["id"]), right=True),
    Column("NAME", lambda d: d["name"]),
    Column("TYPE", lambda d: d["type"]),
    Column("TM", lambda d: d["tm_mad"]),
    Column("DS", lambda d: d["ds_mad"]),
    Column("IMAGES", lambda d: str(len(d["images"])), right=True),
    Column("BASE PATH", lambda d: d["base_path"]),
]


def list_datastores(client: Client, args: argparse.Namespace) -> int:
    found = views.pool(client.document("one.datastorepool.info"), "DATASTORE", views.datastore)
    return emit_rows(COLUMNS, found, args.json)


def show(client: Client, args: argparse.Namespace) -> int:
    found = views.datastore(client.document("one.datastore.info",
                                 resolve(client, "datastore", args.datastore)))
    if args.json:
        emit_json(found)
        return 0
    fields: list[tuple[str, object]] = [
        ("ID", found["id"]), ("NAME", found["name"]), ("TYPE", found["type"]),
        ("TM_MAD", found["tm_mad"]), ("DS_MAD", found["ds_mad"]),
        ("BASE PATH", found["base_path"]),
        ("IMAGES", " ".join(str(i) for i in found["images"]) or "-")]
    emit(section(f"DATASTORE {found['id']} INFORMATION", fields).rstrip() + "\n\n"
         "DATASTORE TEMPLATE\n" + template_text(found["template"]))
    return 0


def update(client: Client, args: argparse.Namespace) -> int:
    """Replace the template (FILE), or change TM_MAD/DS_MAD in the current one."""
    ds_id = resolve(client, "datastore", args.datastore)
    if args.file:
        if args.tm or args.ds:
            raise CliError("give either a template FILE or --tm/--ds, not both")
        source = "standard input" if args.file == "-" else args.file
        text = parse_template(read_source(args.file), source).dumps()
    elif args.tm or args.ds:  # merged into the current template
        changes = template.Template()
        if args.tm:
            changes.set("TM_MAD", args.tm)
        if args.ds:
            changes.set("DS_MAD", args.ds)
        client.call("one.datastore.update", ds_id, changes.dumps(), 1)
        return 0
    else:
        raise CliError("give a template FILE (- for standard input), or --tm and/or --ds")
    client.call("one.datastore.update", ds_id, text)
    return 0


def register(sub: Subparsers) -> None:
    verbs = group(sub, "datastore", "list datastores and choose their drivers")
    command(verbs, "list", "list the datastores", list_datastores)
    p = command(verbs, "show", "show a datastore: drivers, base path, images, template", show)
    p.add_argument("datastore", metavar="ID|NAME")
    p = command(verbs, "update", "choose a datastore's drivers, or replace its template",
                update, description=(
                    "Replace a datastore's template with FILE (- reads standard input), or\n"
                    "set its transfer-manager or datastore driver in the current one.\n\n"
                    "  nubo datastore update system --tm ssh\n"
                    "  nubo datastore update default --tm qcow2"))
    p.add_argument("datastore", metavar="ID|NAME")
    p.add_argument("file", nargs="?", metavar="FILE|-", help="new template")
    p.add_argument("--tm", metavar="DRIVER", help="transfer manager: ssh, shared, qcow2, dummy")
    p.add_argument("--ds", metavar="DRIVER", help="datastore driver (fs)")
