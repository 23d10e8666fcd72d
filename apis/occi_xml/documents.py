"""Reading request documents safely, and the ids they and the paths carry.

XML is parsed by expat with no DOCTYPE allowed, so no entity can be declared (and none
expanded: only the five predefined ones exist), and with a size limit. Ids are the
integers of the core; `/compute/5`, `/storage/7`, `/network/3` are their public form, and
an href is cut at that segment, as libcloud does.
"""

from __future__ import annotations

import xml.etree.ElementTree as ET
from collections.abc import Iterable, Mapping
from email import policy
from email.message import EmailMessage
from email.parser import BytesParser
from typing import NoReturn
from xml.parsers import expat

from core.errors import InvalidRequest, NotFound

MAX_DOCUMENT = 1024 * 1024
MAX_ID = 2**31 - 1  # the database's integer ids


class XmlRefused(InvalidRequest):
    """A document declaring a DOCTYPE or an entity."""


def _refuse(*_args: object) -> NoReturn:
    raise XmlRefused("DOCTYPE and ENTITY declarations are not accepted")


def parse(data: bytes, root: str) -> ET.Element:
    """The document's root element, which must be `<root>`."""
    if len(data) > MAX_DOCUMENT:
        raise InvalidRequest(f"the document is larger than {MAX_DOCUMENT} bytes")
    if not data.strip():
        raise InvalidRequest(f"the request needs a <{root}> document")
    builder = ET.TreeBuilder()
    parser = expat.ParserCreate()
    parser.StartDoctypeDeclHandler = _refuse
    parser.EntityDeclHandler = _refuse
    parser.StartElementHandler = builder.start
    parser.EndElementHandler = builder.end
    parser.CharacterDataHandler = builder.data
    try:
        parser.Parse(data, True)
    except expat.ExpatError as exc:
        raise InvalidRequest(f"malformed XML: {expat.ErrorString(exc.code)} at line {exc.lineno}, "
                             f"column {exc.offset + 1}") from None
    element = builder.close()
    if element.tag != root:
        raise InvalidRequest(f"the document must be a <{root}>, not a <{element.tag}>")
    return element


def only(element: ET.Element, allowed: Iterable[str]) -> None:
    """Refuse children this dialect does not define for the element."""
    known = set(allowed)
    for child in element:
        if child.tag not in known:
            raise InvalidRequest(f"<{element.tag}> does not take <{child.tag}>; it takes "
                                 f"{', '.join(sorted(known))}")


def text(element: ET.Element, tag: str) -> str:
    return (element.findtext(tag) or "").strip()


def ident(kind: str, raw: str) -> int:
    """A core id from its public form (a path segment); NotFound when it cannot be one."""
    if not raw.isdigit() or int(raw) > MAX_ID:
        raise NotFound(kind, raw)
    return int(raw)


def href_id(element: ET.Element | None, kind: str, where: str) -> int:
    """The id at the end of `<X href=".../<kind>/<id>"/>`."""
    if element is None:
        raise InvalidRequest(f"{where} needs a <{kind.upper()} href=\".../{kind}/<id>\"/>")
    href = element.get("href", "")
    _, sep, tail = href.partition(f"/{kind}/")
    if not sep or not tail.isdigit():
        raise InvalidRequest(f"{where}: href {href!r} does not name a {kind} (.../{kind}/<id>)")
    return ident(kind, tail)


def occixml(query: Mapping[str, str], content_type: str, body: bytes) -> bytes:
    """The document of a POST that may carry it in three places: the `occixml` query
    parameter (libcloud, with an empty body), the `occixml` field of a multipart form (ONE's
    own tools) or the body itself."""
    if "occixml" in query:
        return query["occixml"].encode("utf-8")
    if content_type.lower().startswith("multipart/form-data"):
        return _form_field(content_type, body, "occixml")
    return body


def _form_field(content_type: str, body: bytes, name: str) -> bytes:
    if len(body) > MAX_DOCUMENT:
        raise InvalidRequest(f"the form is larger than {MAX_DOCUMENT} bytes")
    head = f"Content-Type: {content_type}\r\n\r\n".encode("latin-1", "replace")
    message = BytesParser(policy=policy.HTTP).parsebytes(head + body)
    if not isinstance(message, EmailMessage) or not message.is_multipart():
        raise InvalidRequest("malformed multipart/form-data body")
    fields = {part.get_param("name", header="content-disposition"): part
              for part in message.iter_parts()}
    if "file" in fields:
        raise InvalidRequest("uploading an image file is not supported: give the STORAGE a "
                             "PATH (or URL) the front-end can read")
    if name not in fields:
        raise InvalidRequest(f"the form needs an {name!r} field with the XML document")
    payload = fields[name].get_payload(decode=True)
    return payload if isinstance(payload, bytes) else b""


def private(doc: ET.Element) -> None:
    """Nubo has no public objects: each is its owner's (and oneadmin's)."""
    if text(doc, "PUBLIC").upper() in ("YES", "TRUE", "1"):
        raise InvalidRequest(f"PUBLIC {doc.tag} objects are not supported: in Nubo an object "
                             "is visible to its owner and to group oneadmin")
