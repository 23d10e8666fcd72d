"""`/network`: virtual networks. A NETWORK document (NAME, ADDRESS, SIZE, DESCRIPTION)
creates a RANGED network: ADDRESS is its NETWORK_ADDRESS, SIZE its NETWORK_SIZE (a number
of addresses, or A, B, C). DELETE removes a network whose leases are all free."""

from __future__ import annotations

from apis.occi_xml import render
from apis.occi_xml.calls import Call, Reply, hidden
from apis.occi_xml.documents import ident, only, parse, private, text
from core import template
from core.service import vnets

CREATE = ("NAME", "DESCRIPTION", "ADDRESS", "SIZE", "PUBLIC")
# NETWORK child -> template attribute
ATTRIBUTES = {"NAME": "NAME", "DESCRIPTION": "DESCRIPTION", "ADDRESS": "NETWORK_ADDRESS",
              "SIZE": "NETWORK_SIZE"}


def index(call: Call) -> Reply:
    rows = vnets.list_vnets(call.cloud, call.caller)
    return Reply(200, render.dump(render.networks(call.base, rows)))


def show(call: Call) -> Reply:
    return Reply(200, _document(call, ident("network", call.ident)))


def _document(call: Call, vnet_id: int) -> bytes:
    with hidden("network", vnet_id):
        vnet, leases = vnets.get_vnet(call.cloud, call.caller, vnet_id=vnet_id)
    return render.dump(render.network(call.base, vnet, leases))


def create(call: Call) -> Reply:
    doc = parse(call.body, "NETWORK")
    only(doc, CREATE)
    private(doc)
    tmpl = template.Template([("TYPE", "RANGED")])
    for tag, name in ATTRIBUTES.items():
        if text(doc, tag):
            tmpl.set(name, text(doc, tag))
    vnet_id = vnets.create_vnet(call.cloud, call.caller, text=tmpl.dumps())
    return Reply(201, _document(call, vnet_id), location=f"{call.base}/network/{vnet_id}")


def delete(call: Call) -> Reply:
    vnet_id = ident("network", call.ident)
    with hidden("network", vnet_id):
        vnets.delete_vnet(call.cloud, call.caller, vnet_id=vnet_id)
    return Reply(204)
