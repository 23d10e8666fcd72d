"""`nubo vnet ...`: onevnet's verbs."""

from __future__ import annotations

import argparse
import xml.etree.ElementTree as ET
from typing import Any

from core import template
from core.cli import views
from core.cli.client import Client, CliError, resolve
from core.cli.commands import Subparsers, command, for_each, group, parse_template, read_source
from core.cli.output import (
    Column,
    emit,
    emit_id,
    emit_json,
    emit_rows,
    section,
    table,
    template_text,
)

COLUMNS = [
    Column("ID", lambda v: str(v["id"]), right=True),
    Column("USER", lambda v: v["user"]),
    Column("GROUP", lambda v: v["group"]),
    Column("NAME", lambda v: v["name"]),
    Column("TYPE", lambda v: v["type"]),
    Column("BRIDGE", lambda v: v["bridge"]),
    Column("LEASES", lambda v: str(v["used_leases"]), right=True),
]
LEASE_COLUMNS = [
    Column("IP", lambda lease: lease["ip"]),
    Column("MAC", lambda lease: lease["mac"]),
    Column("USED", lambda lease: "held" if lease["vm"] == -1 else
           "yes" if lease["used"] else "no"),
    Column("VM", lambda lease: str(lease["vm"]) if lease["vm"] >= 0 else "-", right=True),
]


def vnet(el: ET.Element) -> dict[str, Any]:
    leases = [{"ip": views.text(lease, "IP"), "mac": views.text(lease, "MAC"),
               "used": views.text(lease, "USED") == "1", "vm": views.integer(lease, "VID")}
              for lease in el.findall("LEASES/LEASE")]
    return {
        "id": views.integer(el, "ID"), "name": views.text(el, "NAME"),
        "user": views.text(el, "UNAME"), "group": views.text(el, "GNAME"),
        "type": "RANGED" if views.text(el, "TYPE") == "0" else "FIXED",
        "bridge": views.text(el, "BRIDGE"), "phydev": views.text(el, "PHYDEV"),
        "vlan": views.text(el, "VLAN") == "1", "vlan_id": views.text(el, "VLAN_ID"),
        "used_leases": sum(1 for lease in leases if lease["used"]),
        "leases": leases, "template": views.attributes(el.find("TEMPLATE")),
    }


def build_template(args: argparse.Namespace) -> str:
    if args.file:
        source = "standard input" if args.file == "-" else args.file
        return parse_template(read_source(args.file), source).dumps()
    if not args.name:
        raise CliError("give a template FILE (- for standard input), or --name with "
                       "--address or --lease")
    tmpl = template.Template([("NAME", args.name)])
    if args.lease:
        tmpl.set("TYPE", "FIXED")
        for ip in args.lease:
            tmpl.add("LEASES", {"IP": ip})
    elif args.address:
        tmpl.set("TYPE", "RANGED")
        tmpl.set("NETWORK_ADDRESS", args.address)
    else:
        raise CliError("give --address for a RANGED network or --lease for a FIXED one")
    for option, name in (("bridge", "BRIDGE"), ("phydev", "PHYDEV"), ("vlan_id", "VLAN_ID"),
                         ("gateway", "GATEWAY"), ("dns", "DNS")):
        if getattr(args, option):
            tmpl.set(name, getattr(args, option))
    return tmpl.dumps()


def create(client: Client, args: argparse.Namespace) -> int:
    return emit_id(int(client.call("one.vn.allocate", build_template(args))), args.json)


def list_vnets(client: Client, args: argparse.Namespace) -> int:
    found = views.pool(client.document("one.vnpool.info", -2, -1, -1), "VNET", vnet)
    return emit_rows(COLUMNS, found, args.json)


def show(client: Client, args: argparse.Namespace) -> int:
    net = vnet(client.document("one.vn.info", resolve(client, "vnet", args.vnet)))
    if args.json:
        emit_json(net)
        return 0
    fields: list[tuple[str, object]] = [
        ("ID", net["id"]), ("NAME", net["name"]), ("USER", net["user"]),
        ("GROUP", net["group"]), ("TYPE", net["type"]), ("BRIDGE", net["bridge"]),
        ("PHYDEV", net["phydev"] or "-"), ("VLAN", "Yes" if net["vlan"] else "No"),
        ("VLAN ID", net["vlan_id"] or "-"), ("USED LEASES", net["used_leases"]),
    ]
    pages = [section(f"VIRTUAL NETWORK {net['id']} INFORMATION", fields),
             "VIRTUAL NETWORK TEMPLATE\n" + template_text(net["template"])]
    if net["leases"]:
        pages.append("LEASES\n" + table(LEASE_COLUMNS, net["leases"]))
    emit("\n\n".join(p.rstrip() for p in pages))
    return 0


def delete(client: Client, args: argparse.Namespace) -> int:
    return for_each(client, "vnet", args.vnets, lambda v: client.call("one.vn.delete", v))


def leases(method: str) -> Any:
    def run(client: Client, args: argparse.Namespace) -> int:
        vnet_id = resolve(client, "vnet", args.vnet)
        for spec in args.leases:
            ip, _, mac = spec.partition(",")
            lease = {"IP": ip} | ({"MAC": mac} if mac else {})
            client.call(method, vnet_id, template.Template([("LEASES", lease)]).dumps())
        return 0

    return run


def register(sub: Subparsers) -> None:
    verbs = group(sub, "vnet", "manage virtual networks and their leases")
    p = command(verbs, "create", "create a virtual network; prints its ID", create, description=(
        "Create a network from a template FILE (- reads standard input) or from options.\n\n"
        "  nubo vnet create --name red --address 10.0.1.0/24\n"
        "  nubo vnet create --name blue --lease 10.0.2.5 --lease 10.0.2.6 --bridge br1"))
    p.add_argument("file", nargs="?", metavar="FILE|-", help="network template file")
    p.add_argument("--name", help="network name")
    p.add_argument("--address", metavar="CIDR", help="RANGED: its address range, e.g. "
                   "10.0.0.0/24")
    p.add_argument("--lease", action="append", default=[], metavar="IP",
                   help="FIXED: a lease (repeatable)")
    p.add_argument("--bridge", help="bridge on the hosts (default onebr<id>)")
    p.add_argument("--phydev", help="physical device for VLAN drivers")
    p.add_argument("--vlan-id", dest="vlan_id", metavar="N", help="VLAN id")
    p.add_argument("--gateway", help="gateway given to the guests")
    p.add_argument("--dns", help="DNS server given to the guests")
    command(verbs, "list", "list the networks you may use", list_vnets)
    p = command(verbs, "show", "show a network and its leases", show)
    p.add_argument("vnet", metavar="ID|NAME")
    p = command(verbs, "delete", "delete networks with no lease in use", delete)
    p.add_argument("vnets", nargs="+", metavar="ID|NAME")
    for verb, method, what in (
            ("addleases", "one.vn.addleases", "add leases to a FIXED network"),
            ("rmleases", "one.vn.rmleases", "remove unused leases from a FIXED network"),
            ("hold", "one.vn.hold", "put leases on hold: no VM gets them"),
            ("release", "one.vn.release", "release held leases")):
        p = command(verbs, verb, what, leases(method))
        p.add_argument("vnet", metavar="ID|NAME")
        p.add_argument("leases", nargs="+", metavar="IP[,MAC]")
