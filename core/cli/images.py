"""`nubo image ...`: oneimage's verbs."""

from __future__ import annotations

import argparse
import time
from typing import Any

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
    arrow,
    date,
    emit,
    emit_id,
    emit_json,
    emit_rows,
    error,
    human_mb,
    section,
    template_text,
)

DEFAULT_DATASTORE = "1"
POLL_SECONDS = 0.25

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
    if args.fstype:
        tmpl.set("FSTYPE", args.fstype)
    if args.persistent:
        tmpl.set("PERSISTENT", "YES")
    return tmpl.dumps()


def create(client: Client, args: argparse.Namespace) -> int:
    """Register; unless --no-wait, follow the copy into the datastore until READY."""
    text = build_template(args)
    datastore = resolve(client, "datastore", args.datastore)
    image_id = int(client.call("one.image.allocate", text, datastore))
    if args.no_wait:
        return emit_id(image_id, args.json)
    if not args.json:
        emit(f"ID: {image_id}")
    return wait_ready(client, image_id, timeout=args.timeout, as_json=args.json)


def wait_ready(client: Client, image_id: int, *, timeout: float, as_json: bool) -> int:
    """Print each state change and each progress line of the copy until READY (0), ERROR
    or the timeout (1), as `vm create --wait` does."""
    start = time.monotonic()
    changes: list[dict[str, Any]] = []
    last_state = last_progress = ""
    sep = arrow()
    while True:
        image = views.image(client.document("one.image.info", image_id))
        elapsed = round(time.monotonic() - start, 1)
        short, progress = image["short_state"], str(image["template"].get("PROGRESS", ""))
        if short != last_state:
            changes.append({"elapsed": elapsed, "state": image["state"], "short": short})
            if not as_json:
                emit(f"{elapsed:7.1f}s  " + (f"{last_state} {sep} {short}" if last_state else short))
            last_state = short
        if progress and progress != last_progress and image["state"] == "LOCKED":
            changes.append({"elapsed": elapsed, "progress": progress})
            if not as_json:
                emit(f"{elapsed:7.1f}s  {progress}")
            last_progress = progress
        problem = _outcome(image, elapsed, timeout)
        if problem is not None:
            if as_json:
                emit_json({"id": image_id, "state": image["state"], "source": image["source"],
                           "size_mb": image["size_mb"], "elapsed": elapsed, "changes": changes,
                           "error": problem, "ok": problem == ""})
            if problem:
                error(problem)
                return 1
            return 0
        time.sleep(POLL_SECONDS)


def _outcome(image: views.View, elapsed: float, timeout: float) -> str | None:
    """None to keep waiting, "" when READY, else why waiting ends in failure."""
    if image["state"] in ("READY", "USED"):
        return ""
    if image["state"] == "ERROR":
        reason = " ".join(str(image["template"].get("ERROR", "no reason recorded")).split())
        return f"image {image['id']} failed: {reason}"
    if image["state"] != "LOCKED":
        return f"image {image['id']} is {image['state']}"
    if timeout > 0 and elapsed >= timeout:
        return f"image {image['id']} is still LOCKED after {timeout:g}s (the copy goes on)"
    return None


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
    for name in ("PROGRESS", "ERROR"):
        if image["template"].get(name):
            fields.append((name, " ".join(str(image["template"][name]).split())))
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
        "Register an image from a template FILE (- reads standard input) or from options.\n"
        "The datastore copies PATH in (or makes an empty DATABLOCK) while the image is\n"
        "LOCKED; the command follows the copy until the image is READY (exit 0) or ERROR\n"
        "(exit 1, the driver's message on stderr), unless --no-wait.\n\n"
        "  nubo image create --name ttylinux --path /srv/ttylinux.img\n"
        "  nubo image create --name scratch --type DATABLOCK --size 1024 --fstype ext4"))
    p.add_argument("file", nargs="?", metavar="FILE|-", help="image template file")
    p.add_argument("--name", help="image name")
    p.add_argument("--path", help="file (or URL) to copy into the datastore")
    p.add_argument("--type", default="OS", type=str.upper, choices=["OS", "CDROM", "DATABLOCK"])
    p.add_argument("--size", type=int, metavar="MB", help="size in MB (empty DATABLOCKs)")
    p.add_argument("--fstype", metavar="FS",
                   help="filesystem of an empty DATABLOCK: ext4, xfs, swap, qcow2, raw (none)")
    p.add_argument("--persistent", action="store_true",
                   help="changes are kept; one VM at a time may use it")
    p.add_argument("--datastore", default=DEFAULT_DATASTORE, metavar="ID|NAME",
                   help="datastore to register it in (default 1)")
    p.add_argument("--no-wait", action="store_true",
                   help="print the ID at once, the image LOCKED while it is copied")
    p.add_argument("--timeout", type=float, default=0.0, metavar="S",
                   help="give up waiting after S seconds (default 0: until READY or ERROR)")
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
