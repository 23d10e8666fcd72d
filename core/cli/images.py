"""`nubo image ...`: oneimage's verbs."""

from __future__ import annotations

import argparse

from core import template
from core.cli import views
from core.cli.client import Client, CliError, resolve
from core.cli.commands import (
    Run,
    Subparsers,
    command,
    for_each,
    group,
    parse_template,
    read_source,
)
from core.cli.output import (
    Column,
    date,
    emit,
    emit_id,
    emit_json,
    emit_rows,
    human_mb,
    section,
    template_text,
)

DEFAULT_DATASTORE = "1"

COLUMNS = [
    Column("ID", lambda i: str(i["id"]), right=True),
    Column("USER", lambda i: i["user"]),
    Column("GROUP", lambda i: i["group"]),
    Column("NAME", lambda i: i["name"]),
    Column("DATASTORE", lambda i: i["datastore"]),
    Column("SIZE", lambda i: human_mb(i["size_mb"]), right=True),
    Column("TYPE", lambda i: i["type"]),
    Column("PER", lambda i: "Yes" if i["persistent"] else "No"),
    Column("STAT", lambda i: i["short_state"]),
    Column("RVMS", lambda i: str(i["running_vms"]), right=True),
]


def build_template(args: argparse.Namespace) -> str:
    if args.file:
        if args.name or args.path:
            raise CliError("give either a template FILE or --name/--path, not both")
        source = "standard input" if args.file == "-" else args.file
        return parse_template(read_source(args.file), source).dumps()
    if not args.name:
        raise CliError("give a template FILE (- for standard input), or --name and --path")
    tmpl = template.Template([("NAME", args.name), ("TYPE", args.type)])
    if args.path:
        tmpl.set("PATH", args.path)
    if args.size is not None:
        tmpl.set("SIZE", str(args.size))
    if args.persistent:
        tmpl.set("PERSISTENT", "YES")
    return tmpl.dumps()


def create(client: Client, args: argparse.Namespace) -> int:
    text = build_template(args)
    datastore = resolve(client, "datastore", args.datastore)
    image_id = int(client.call("one.image.allocate", text, datastore))
    return emit_id(image_id, args.json)


def list_images(client: Client, args: argparse.Namespace) -> int:
    images = views.pool(client.document("one.imagepool.info", -2, -1, -1), "IMAGE", views.image)
    return emit_rows(COLUMNS, images, args.json)


def show(client: Client, args: argparse.Namespace) -> int:
    image = views.image(client.document("one.image.info", resolve(client, "image", args.image)))
    if args.json:
        emit_json(image)
        return 0
    fields: list[tuple[str, object]] = [
        ("ID", image["id"]), ("NAME", image["name"]), ("USER", image["user"]),
        ("GROUP", image["group"]), ("DATASTORE", image["datastore"]), ("TYPE", image["type"]),
        ("REGISTER TIME", date(image["regtime"])),
        ("PERSISTENT", "Yes" if image["persistent"] else "No"),
        ("SOURCE", image["source"] or "-"), ("PATH", image["path"] or "-"),
        ("SIZE", human_mb(image["size_mb"])), ("STATE", image["state"]),
        ("RUNNING_VMS", image["running_vms"]),
    ]
    pages = [section(f"IMAGE {image['id']} INFORMATION", fields),
             "IMAGE TEMPLATE\n" + template_text(image["template"])]
    emit("\n\n".join(p.rstrip() for p in pages))
    return 0


def delete(client: Client, args: argparse.Namespace) -> int:
    return for_each(client, "image", args.images,
                    lambda i: client.call("one.image.delete", i))


def publish(public: bool) -> Run:
    def run(client: Client, args: argparse.Namespace) -> int:
        return for_each(client, "image", args.images,
                        lambda i: client.call("one.image.publish", i, public))

    return run


def register(sub: Subparsers) -> None:
    verbs = group(sub, "image", "manage disk images")
    p = command(verbs, "create", "register an image; prints its ID", create, description=(
        "Register an image from a template FILE (- reads standard input) or from options.\n\n"
        "  nubo image create --name ttylinux --path /srv/ttylinux.img\n"
        "  nubo image create --name scratch --type DATABLOCK --size 1024"))
    p.add_argument("file", nargs="?", metavar="FILE|-", help="image template file")
    p.add_argument("--name", help="image name")
    p.add_argument("--path", help="file (or URL) to copy into the datastore")
    p.add_argument("--type", default="OS", type=str.upper, choices=["OS", "CDROM", "DATABLOCK"])
    p.add_argument("--size", type=int, metavar="MB", help="size in MB (empty DATABLOCKs)")
    p.add_argument("--persistent", action="store_true",
                   help="changes are kept; one VM at a time may use it")
    p.add_argument("--datastore", default=DEFAULT_DATASTORE, metavar="ID|NAME",
                   help="datastore to register it in (default 1)")
    command(verbs, "list", "list the images you may use", list_images)
    p = command(verbs, "show", "show an image", show)
    p.add_argument("image", metavar="ID|NAME")
    p = command(verbs, "delete", "delete images no VM uses", delete)
    p.add_argument("images", nargs="+", metavar="ID|NAME")
    p = command(verbs, "publish", "let every user see and use images (only you change them)",
                publish(True))
    p.add_argument("images", nargs="+", metavar="ID|NAME")
    p = command(verbs, "unpublish", "make images yours alone again", publish(False))
    p.add_argument("images", nargs="+", metavar="ID|NAME")
