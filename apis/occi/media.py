"""Renderings: which one a request asked for (Accept), how its body is read (Content-Type),
and how entities, collections, categories and errors are written in each.

text/plain (the default) puts the OCCI lines in the body; text/occi puts them in headers
and answers `OK`; text/uri-list is for collections only; application/occi+json is OCCI
1.2's JSON (application/json is taken as its alias; 1.1-era nested JSON is flattened).
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from typing import Any

from starlette.datastructures import Headers
from starlette.responses import Response

from apis.occi import text
from apis.occi.categories import Cat
from apis.occi.entities import Entity
from apis.occi.text import Category, Link, Message, OcciSyntaxError, Value

PLAIN, OCCI, URI_LIST, JSON = "text/plain", "text/occi", "text/uri-list", "application/occi+json"
ALIASES = {"text/occi+plain": PLAIN, "application/json": JSON, "*/*": PLAIN, "text/*": PLAIN,
           "application/*": JSON}
KNOWN = (PLAIN, OCCI, URI_LIST, JSON)
SERVER = "Nubo/0.1 OCCI/1.1 OCCI/1.2"
ACCEPTS = "text/plain, text/occi, text/uri-list, application/occi+json, application/json"


class OcciError(Exception):
    """An answer other than success: status and a message, rendered as negotiated."""

    def __init__(self, status: int, message: str, headers: Mapping[str, str] | None = None):
        super().__init__(message)
        self.status = status
        self.message = message
        self.headers = dict(headers or {})


def _types(header: str) -> list[tuple[str, float]]:
    found = []
    for part in header.split(","):
        fields = [f.strip() for f in part.split(";")]
        name = fields[0].lower()
        q = 1.0
        for f in fields[1:]:
            if f.startswith("q="):
                try:
                    q = float(f[2:])
                except ValueError:
                    q = 0.0
        if name:
            found.append((ALIASES.get(name, name), q))
    return found


def negotiate(headers: Headers, *, listing: bool) -> str:
    """The rendering to answer in: 406 when the Accept header names none we write."""
    accept = headers.get("accept", "").strip()
    if not accept:
        return PLAIN
    ranked = sorted((t for t in _types(accept) if t[1] > 0), key=lambda t: -t[1])
    for name, _ in ranked:
        if name in KNOWN and (name != URI_LIST or listing):
            return name
    if any(name == URI_LIST for name, _ in ranked):
        raise OcciError(400, "text/uri-list renders collections only")
    raise OcciError(406, f"cannot answer in {accept!r}; this service speaks {ACCEPTS}")


def body_type(headers: Headers, body: bytes) -> str:
    """The request body's rendering, from a Content-Type read leniently (IM sends
    `text/plain,text/occi`); sniffed when missing."""
    declared = headers.get("content-type", "")
    for name, _ in _types(declared):
        if name in KNOWN:
            return name
    if declared.strip() and body.strip():
        raise OcciError(406, f"cannot read a {declared!r} body; send one of {ACCEPTS}")
    return JSON if body.lstrip().startswith((b"{", b"[")) else PLAIN


# --- reading ---

def read(headers: Headers, body: bytes) -> Message:
    """The OCCI content of a request: its OCCI headers plus its body."""
    fields = [(k, v) for k, v in headers.items() if k.lower() in text.FIELDS]
    kind = body_type(headers, body)
    try:
        raw = body.decode("utf-8")
    except UnicodeDecodeError:
        raise OcciError(400, "the body is not UTF-8") from None
    message = text.parse(fields)
    if not raw.strip():
        return message
    if kind == JSON:
        extra = read_json(raw)
    elif kind == URI_LIST:
        extra = Message(locations=[line.strip() for line in raw.splitlines()
                                   if line.strip() and not line.startswith("#")])
    else:
        extra = text.parse(text.body_fields(raw))
    message.categories += extra.categories
    message.links += extra.links
    message.attributes.update(extra.attributes)
    message.locations += extra.locations
    return message


def _category(type_id: str, cls: str = "") -> Category:
    scheme, sep, term = type_id.rpartition("#")
    if not sep or not term:
        raise OcciSyntaxError(f"{type_id!r} is not a category type identifier (scheme#term)")
    return Category(term, scheme + "#", cls)


def flatten(attrs: Mapping[str, Any], prefix: str = "") -> dict[str, Value]:
    """1.2's flat dotted keys; 1.1-era nested objects are flattened."""
    flat: dict[str, Value] = {}
    for key, value in attrs.items():
        name = f"{prefix}.{key}" if prefix else str(key)
        if isinstance(value, Mapping):
            flat.update(flatten(value, name))
        elif isinstance(value, str | int | float | bool):
            flat[name] = value
        elif value is not None:
            raise OcciSyntaxError(f"attribute {name}: a string, number or boolean, please")
    return flat


def _location(value: Any) -> str:
    if isinstance(value, Mapping):
        return str(value.get("location", ""))
    return str(value or "")


def read_json(raw: str) -> Message:
    try:
        doc = json.loads(raw)
    except json.JSONDecodeError as exc:
        raise OcciSyntaxError(f"the JSON body does not parse: {exc}") from None
    message = Message()
    if isinstance(doc, list):  # a list of locations
        message.locations = [_location(v) for v in doc]
        return message
    if not isinstance(doc, Mapping):
        raise OcciSyntaxError("the JSON body must be an object")
    for key in ("resources", "links"):
        items = doc.get(key)
        if isinstance(items, list) and items and not doc.get("kind"):
            if all(isinstance(i, str) for i in items):
                message.locations = list(items)
                return message
            doc = items[0]  # 1.1-era wrapper around one resource
            break
    if not isinstance(doc, Mapping):
        raise OcciSyntaxError("the JSON body must hold an object")
    if "action" in doc:
        message.categories.append(_category(str(doc["action"]), "action"))
    if "kind" in doc:
        message.categories.append(_category(str(doc["kind"]), "kind"))
    for mixin in doc.get("mixins") or []:
        if isinstance(mixin, Mapping):  # a mixin definition (POST /-/)
            message.categories.append(Category(
                str(mixin.get("term", "")), str(mixin.get("scheme", "")), "mixin",
                str(mixin.get("title", "")), location=str(mixin.get("location", ""))))
        else:
            message.categories.append(_category(str(mixin), "mixin"))
    attrs = doc.get("attributes") or {}
    if not isinstance(attrs, Mapping):
        raise OcciSyntaxError("attributes must be an object")
    message.attributes = flatten(attrs)
    for key, name in (("title", "occi.core.title"), ("summary", "occi.core.summary")):
        if isinstance(doc.get(key), str):
            message.attributes.setdefault(name, doc[key])
    if "source" in doc:
        message.attributes.setdefault("occi.core.source", _location(doc["source"]))
    if "target" in doc:
        message.attributes.setdefault("occi.core.target", _location(doc["target"]))
    for link in doc.get("links") or []:
        if not isinstance(link, Mapping):
            raise OcciSyntaxError("each link must be an object")
        target = _location(link.get("target")) or str(
            flatten(link.get("attributes") or {}).get("occi.core.target", ""))
        message.links.append(Link(target, str((link.get("target") or {}).get("kind", ""))
                                  if isinstance(link.get("target"), Mapping) else "",
                                  categories=[str(link.get("kind", ""))] + [
                                      str(m) for m in link.get("mixins") or []],
                                  attributes=flatten(link.get("attributes") or {})))
    message.locations += [_location(v) for v in doc.get("locations") or []]
    return message


# --- writing ---

class Out:
    """Builds one response in the negotiated rendering."""

    def __init__(self, media: str, base: str) -> None:
        self.media = media
        self.base = base.rstrip("/") + "/"

    def url(self, location: str) -> str:
        return location if "://" in location else self.base + location.lstrip("/")

    def _respond(self, message: Message, status: int = 200,
                 headers: Mapping[str, str] | None = None) -> Response:
        extra = {"Server": SERVER, "Accept": ACCEPTS, **(headers or {})}
        if self.media == OCCI:
            response = Response("OK", status, headers=extra, media_type=OCCI)
            for name, value in text.lines(message):
                response.headers.append(name, value)
            return response
        body = "".join(f"{name}: {value}\n" for name, value in text.lines(message))
        return Response(body, status, headers=extra, media_type=PLAIN)

    def _json(self, doc: object, status: int = 200,
              headers: Mapping[str, str] | None = None) -> Response:
        return Response(json.dumps(doc, indent=1), status, media_type=JSON,
                        headers={"Server": SERVER, "Accept": ACCEPTS, **(headers or {})})

    def category(self, cat: Cat, *, full: bool) -> Category:
        return Category(cat.term, cat.scheme, cat.cls, cat.title, cat.rel,
                        self.url(cat.location) if cat.location else "",
                        " ".join(a.spec() for a in cat.attrs) if full else "",
                        " ".join(cat.actions) if full else "")

    def entity(self, entity: Entity, status: int = 200,
               headers: Mapping[str, str] | None = None) -> Response:
        if self.media == JSON:
            return self._json(self.entity_json(entity), status, headers)
        if self.media == URI_LIST:
            raise OcciError(400, "text/uri-list renders collections only")
        return self._respond(self.entity_message(entity), status, headers)

    def entity_message(self, entity: Entity) -> Message:
        message = Message([self.category(entity.kind, full=False)])
        message.categories += [self.category(m, full=False) for m in entity.mixins]
        for link in entity.links:
            attrs = {"occi.core.source": self.url(link.source),
                     "occi.core.target": self.url(link.target), **link.attributes}
            message.links.append(Link(self.url(link.target), link.target_kind,
                                      self.url(link.location),
                                      [link.kind.type_id, *(m.type_id for m in link.mixins)],
                                      attrs))
        for action in entity.actions:
            message.links.append(Link(f"{self.url(entity.location)}?action={action.term}",
                                      action.type_id))
        message.attributes = dict(entity.attributes)
        if entity.source:
            message.attributes["occi.core.source"] = self.url(entity.source)
            message.attributes["occi.core.target"] = self.url(entity.target)
        return message

    def entity_json(self, entity: Entity) -> dict[str, Any]:
        doc: dict[str, Any] = {
            "kind": entity.kind.type_id, "mixins": [m.type_id for m in entity.mixins],
            "attributes": dict(entity.attributes),
            "actions": [a.type_id for a in entity.actions],
            "id": str(entity.attributes.get("occi.core.id", "")),
            "location": self.url(entity.location),
        }
        if "occi.core.title" in entity.attributes:
            doc["title"] = entity.attributes["occi.core.title"]
        if entity.source:
            doc["source"] = {"location": self.url(entity.source),
                             "kind": "http://schemas.ogf.org/occi/infrastructure#compute"}
            doc["target"] = {"location": self.url(entity.target), "kind": entity.target_kind}
        else:
            doc["links"] = [self.entity_json(link) for link in entity.links]
        return doc

    def collection(self, entities: Sequence[Entity], *, links: bool = False) -> Response:
        if self.media == JSON:
            return self._json({"links" if links else "resources":
                               [self.entity_json(e) for e in entities]})
        return self.locations([e.location for e in entities])

    def locations(self, locations: Sequence[str], status: int = 200,
                  headers: Mapping[str, str] | None = None) -> Response:
        urls = [self.url(loc) for loc in locations]
        if self.media == URI_LIST:
            return Response("".join(u + "\n" for u in urls), status, media_type=URI_LIST,
                            headers={"Server": SERVER, **(headers or {})})
        if self.media == JSON:
            return self._json({"locations": urls}, status, headers)
        return self._respond(Message(locations=urls), status, headers)

    def categories(self, found: Sequence[Cat]) -> Response:
        if self.media == JSON:
            return self._json(categories_json(found, self))
        return self._respond(Message([self.category(c, full=True) for c in found]))

    def ok(self, status: int = 200) -> Response:
        if self.media == JSON:
            return self._json({}, status)
        return self._respond(Message(), status)

    def error(self, exc: OcciError) -> Response:
        headers = {"Server": SERVER, **exc.headers}
        if self.media == JSON:
            return Response(json.dumps({"code": exc.status, "message": exc.message}),
                            exc.status, media_type=JSON, headers=headers)
        if self.media == OCCI:
            headers["X-OCCI-Error"] = exc.message.replace("\n", " ")
        return Response(exc.message + "\n", exc.status, media_type=PLAIN, headers=headers)


def categories_json(found: Sequence[Cat], out: Out) -> dict[str, list[dict[str, Any]]]:
    doc: dict[str, list[dict[str, Any]]] = {"kinds": [], "mixins": [], "actions": []}
    for cat in found:
        item: dict[str, Any] = {"term": cat.term, "scheme": cat.scheme, "title": cat.title,
                                "attributes": {a.name: {"mutable": a.mutable,
                                                        "required": a.required, "type": a.type,
                                                        **({"default": a.default}
                                                           if a.default is not None else {})}
                                               for a in cat.attrs}}
        if cat.cls != "action":
            item["actions"] = list(cat.actions)
            if cat.location:
                item["location"] = out.url(cat.location)
        if cat.cls == "kind" and cat.rel:
            item["parent"] = cat.rel
        if cat.cls == "mixin":
            item["depends"] = [cat.rel] if cat.rel else []
            item["applies"] = list(cat.applies)
        doc[cat.cls + "s"].append(item)
    return doc
