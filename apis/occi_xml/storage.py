"""`/storage`: images. A STORAGE document registers one (NAME, TYPE OS/CDROM/DATABLOCK,
SIZE in MB, PERSISTENT, FSTYPE, DESCRIPTION, PATH or URL or SOURCE); libcloud's volumes
are persistent DATABLOCKs made this way. DELETE removes an image no VM uses."""

from __future__ import annotations

import xml.etree.ElementTree as ET

from apis.occi_xml import render
from apis.occi_xml.calls import Call, Reply, hidden
from apis.occi_xml.documents import ident, occixml, only, parse, private, text
from core import template
from core.service import images

CREATE = ("NAME", "TYPE", "DESCRIPTION", "SIZE", "FSTYPE", "PERSISTENT", "PUBLIC", "PATH", "URL",
          "SOURCE")
COPIED = ("NAME", "TYPE", "DESCRIPTION", "SIZE", "FSTYPE", "PERSISTENT", "SOURCE")


def index(call: Call) -> Reply:
    found = images.list_images(call.cloud, call.caller)
    return Reply(200, render.dump(render.storages(call.base, found)))


def show(call: Call) -> Reply:
    return Reply(200, _document(call, ident("storage", call.ident)))


def _document(call: Call, image_id: int) -> bytes:
    with hidden("storage", image_id):
        image = images.get_image(call.cloud, call.caller, image_id=image_id)
    return render.dump(render.storage(call.base, image))


def create(call: Call) -> Reply:
    doc = parse(occixml(call.query, call.content_type, call.body), "STORAGE")
    only(doc, CREATE)
    image_id = images.create_image(call.cloud, call.caller, text=_template(doc).dumps())
    return Reply(201, _document(call, image_id), location=f"{call.base}/storage/{image_id}")


def _template(doc: ET.Element) -> template.Template:
    private(doc)
    tmpl = template.Template((tag, text(doc, tag)) for tag in COPIED if text(doc, tag))
    path = text(doc, "PATH") or text(doc, "URL")
    if path:
        tmpl.set("PATH", path)
    return tmpl


def delete(call: Call) -> Reply:
    image_id = ident("storage", call.ident)
    with hidden("storage", image_id):
        images.delete_image(call.cloud, call.caller, image_id=image_id)
    return Reply(204)
