"""A small OCCI client for the tests, speaking one rendering (text/plain, text/occi or
application/occi+json) the way real clients do (rOCCI, IM, pOCCI): it writes requests by
hand and reads answers with its own minimal parser, independent of apis.occi."""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from typing import Any

import httpx

INFRA = "http://schemas.ogf.org/occi/infrastructure#"
ACTION = {"compute": "http://schemas.ogf.org/occi/infrastructure/compute/action#",
          "storage": "http://schemas.ogf.org/occi/infrastructure/storage/action#",
          "network": "http://schemas.ogf.org/occi/infrastructure/network/action#"}
RENDERINGS = ("text/plain", "text/occi", "application/occi+json")


@dataclass
class Seen:
    """An entity as read back: kind and mixin type ids, attributes, links, actions."""

    kind: str
    mixins: list[str] = field(default_factory=list)
    attributes: dict[str, Any] = field(default_factory=dict)
    links: list[dict[str, Any]] = field(default_factory=list)
    actions: list[str] = field(default_factory=list)


def _split(text: str, sep: str) -> list[str]:
    out, cur, quoted, escaped = [], "", False, False
    for ch in text:
        if escaped:
            cur, escaped = cur + ch, False
        elif ch == "\\":
            cur, escaped = cur + ch, True
        elif ch == '"':
            cur, quoted = cur + ch, not quoted
        elif ch == sep and not quoted:
            out.append(cur.strip())
            cur = ""
        else:
            cur += ch
    out.append(cur.strip())
    return [o for o in out if o]


def _value(raw: str) -> Any:
    raw = raw.strip()
    if raw.startswith('"'):
        return re.sub(r"\\(.)", r"\1", raw[1:-1])
    if raw in ("true", "false"):
        return raw == "true"
    try:
        return int(raw)
    except ValueError:
        return float(raw)


def _params(parts: list[str]) -> dict[str, Any]:
    found = {}
    for part in parts:
        name, _, value = part.partition("=")
        found[name.strip()] = _value(value)
    return found


def category_line(term: str, scheme: str, cls: str, **extra: str) -> str:
    line = f'{term}; scheme="{scheme}"; class="{cls}"'
    return line + "".join(f'; {k}="{v}"' for k, v in extra.items())


def attribute_line(name: str, value: Any) -> str:
    if isinstance(value, bool):
        return f"{name}={'true' if value else 'false'}"
    if isinstance(value, int | float):
        return f"{name}={value}"
    escaped = str(value).replace("\\", "\\\\").replace('"', '\\"')
    return f'{name}="{escaped}"'


class Occi:
    def __init__(self, base: str, rendering: str, auth: Any = None,
                 headers: dict[str, str] | None = None) -> None:
        self.base = base.rstrip("/") + "/"
        self.rendering = rendering
        self.http = httpx.Client(base_url=self.base, auth=auth, headers=headers or {},
                                 timeout=30)

    def close(self) -> None:
        self.http.close()

    def url(self, location: str) -> str:
        return location if "://" in location else self.base + location.lstrip("/")

    # --- requests ---

    def send(self, method: str, location: str, *, categories: list[str] = (),  # type: ignore[assignment]
             attributes: dict[str, Any] | None = None, links: list[str] = (),  # type: ignore[assignment]
             locations: list[str] = (), json_body: Any = None,  # type: ignore[assignment]
             params: dict[str, str] | None = None, accept: str | None = None) -> httpx.Response:
        headers = {"Accept": accept or self.rendering}
        content: str | bytes = b""
        attrs = [attribute_line(k, v) for k, v in (attributes or {}).items()]
        if self.rendering == "application/occi+json":
            headers["Content-Type"] = "application/occi+json"
            content = json.dumps(json_body) if json_body is not None else b""
        elif self.rendering == "text/occi":
            headers["Content-Type"] = "text/occi"
            for name, values in (("Category", categories), ("Link", links),
                                 ("X-OCCI-Attribute", attrs), ("X-OCCI-Location", locations)):
                if values:
                    headers[name] = ", ".join(values)
        else:
            headers["Content-Type"] = "text/plain"
            lines = [f"Category: {c}" for c in categories] + [f"Link: {x}" for x in links]
            lines += [f"X-OCCI-Attribute: {a}" for a in attrs]
            lines += [f"X-OCCI-Location: {loc}" for loc in locations]
            content = "\r\n".join(lines) + ("\r\n" if lines else "")
        return self.http.request(method, self.url(location), headers=headers, content=content,
                                 params=params)

    # --- reading answers ---

    def fields(self, response: httpx.Response) -> list[tuple[str, str]]:
        if self.rendering == "text/occi":
            return [(k, v) for k, v in response.headers.multi_items()
                    if k.lower() in ("category", "link", "x-occi-attribute",
                                     "x-occi-location")]
        out = []
        for line in response.text.splitlines():
            name, sep, value = line.partition(":")
            if sep:
                out.append((name.strip(), value.strip()))
        return out

    def read(self, response: httpx.Response) -> Seen:
        if self.rendering == "application/occi+json":
            doc = response.json()
            links = [{"target": link["target"]["location"], "kind": link["kind"],
                      "self": link["location"], "attributes": link["attributes"]}
                     for link in doc.get("links", [])]
            return Seen(doc["kind"], doc["mixins"], doc["attributes"], links, doc["actions"])
        seen = Seen("")
        for name, value in self.fields(response):
            for item in _split(value, ","):
                if name.lower() == "category":
                    parts = _split(item, ";")
                    params = _params(parts[1:])
                    type_id = params["scheme"] + parts[0]
                    if params.get("class") == "kind":
                        seen.kind = type_id
                    else:
                        seen.mixins.append(type_id)
                elif name.lower() == "link":
                    parts = _split(item, ";")
                    params = _params(parts[1:])
                    target = parts[0].strip("<>")
                    if "?action=" in target:
                        seen.actions.append(params["rel"])
                    else:
                        seen.links.append({"target": target, "kind": params["category"].split()[0],
                                           "self": params.get("self", ""), "attributes": {
                                               k: v for k, v in params.items()
                                               if k not in ("rel", "self", "category")}})
                elif name.lower() == "x-occi-attribute":
                    key, _, raw = item.partition("=")
                    seen.attributes[key.strip()] = _value(raw)
        return seen

    def locations(self, response: httpx.Response) -> list[str]:
        if self.rendering == "application/occi+json":
            doc = response.json()
            if "locations" in doc:
                return list(doc["locations"])
            return [e["location"] for e in doc.get("resources", doc.get("links", []))]
        return [v for name, value in self.fields(response) if name.lower() == "x-occi-location"
                for v in _split(value, ",")]

    # --- the operations tests use ---

    def create(self, kind: str, *, mixins: list[tuple[str, str]] = (),  # type: ignore[assignment]
               attributes: dict[str, Any] | None = None,
               links: list[tuple[str, str, dict[str, Any]]] = ()  # type: ignore[assignment]
               ) -> httpx.Response:
        """POST /<kind>/; links are (target, link kind term, attributes)."""
        cats = [category_line(kind, INFRA, "kind")]
        cats += [category_line(term, scheme, "mixin") for scheme, term in mixins]
        link_lines = [f'<{t}>; rel="{INFRA}{"storage" if k == "storagelink" else "network"}"; '
                      f'category="{INFRA}{k}"' + "".join(f"; {attribute_line(n, v)}"
                                                         for n, v in a.items())
                      for t, k, a in links]
        body = {"kind": INFRA + kind, "mixins": [s + t for s, t in mixins],
                "attributes": attributes or {},
                "links": [{"kind": INFRA + k, "target": {"location": t, "kind": INFRA + (
                    "storage" if k == "storagelink" else "network")}, "attributes": a}
                          for t, k, a in links]}
        return self.send("POST", f"{kind}/", categories=cats, attributes=attributes,
                         links=link_lines, json_body=body)

    def action(self, location: str, kind: str, term: str,
               attributes: dict[str, Any] | None = None) -> httpx.Response:
        return self.send("POST", location, params={"action": term},
                         categories=[category_line(term, ACTION[kind], "action")],
                         attributes=attributes,
                         json_body={"action": ACTION[kind] + term,
                                    "attributes": attributes or {}})
