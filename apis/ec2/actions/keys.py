"""Key pairs: the public half reaches instances through their context."""

from __future__ import annotations

import base64
import binascii
from typing import Any

from apis.ec2 import filters, ids, views
from apis.ec2.actions import Context, action
from apis.ec2.errors import Ec2Error, invalid_value
from core.errors import Conflict, InvalidRequest
from core.models import KeyPair
from core.service import keypairs, tags

KEY_FILTERS = {
    "key-name": filters.field("KeyName"),
    "fingerprint": filters.field("KeyFingerprint"),
    "key-pair-id": filters.field("KeyPairId"),
}


def _duplicate(name: str) -> Ec2Error:
    return Ec2Error("InvalidKeyPair.Duplicate", f"The keypair '{name}' already exists.")


@action("CreateKeyPair")
def create_key_pair(ctx: Context, p: dict[str, Any]) -> dict[str, Any]:
    ctx.commit_point()
    try:
        row, private = keypairs.create(ctx.cloud, ctx.caller, name=p["KeyName"])
    except Conflict:
        raise _duplicate(p["KeyName"]) from None
    assert row.id is not None
    return {"KeyName": row.name, "KeyFingerprint": row.fingerprint, "KeyMaterial": private,
            "KeyPairId": ids.public("keypair", row.id), "Tags": []}


@action("ImportKeyPair")
def import_key_pair(ctx: Context, p: dict[str, Any]) -> dict[str, Any]:
    material = p["PublicKeyMaterial"]
    text = material.decode() if isinstance(material, bytes) else str(material)
    try:  # the wire carries base64; some clients encode the key text twice
        text = base64.b64decode(text, validate=True).decode()
    except (binascii.Error, ValueError, UnicodeDecodeError):
        pass
    ctx.commit_point()
    try:
        row = keypairs.import_key(ctx.cloud, ctx.caller, name=p["KeyName"], public_key=text)
    except Conflict:
        raise _duplicate(p["KeyName"]) from None
    except InvalidRequest as exc:
        raise invalid_value("PublicKeyMaterial", "...", str(exc)) from None
    assert row.id is not None
    return {"KeyName": row.name, "KeyFingerprint": row.fingerprint,
            "KeyPairId": ids.public("keypair", row.id), "Tags": []}


def _own(ctx: Context) -> list[KeyPair]:
    return [k for k in keypairs.list_keys(ctx.cloud, ctx.caller) if k.uid == ctx.caller.uid]


@action("DescribeKeyPairs")
def describe_key_pairs(ctx: Context, p: dict[str, Any]) -> dict[str, Any]:
    rows = _own(ctx)
    with ctx.cloud.session() as s:
        found = tags.tags_of(s, "keypair", [r.id for r in rows if r.id is not None])
    items = [views.key_pair(r, found.get(r.id or 0, {})) for r in rows]
    if not p.get("IncludePublicKey"):
        for item in items:
            item.pop("PublicKey")
    for name in p.get("KeyNames", []):
        if name not in {i["KeyName"] for i in items}:
            raise Ec2Error("InvalidKeyPair.NotFound", f"The key pair '{name}' does not exist")
    if p.get("KeyNames"):
        items = [i for i in items if i["KeyName"] in p["KeyNames"]]
    if p.get("KeyPairIds"):
        wanted = set(p["KeyPairIds"])
        items = [i for i in items if i["KeyPairId"] in wanted]
    matches = filters.compile_filters(p.get("Filters", []), KEY_FILTERS)
    return {"KeyPairs": [i for i in items if matches(i)]}


@action("DeleteKeyPair")
def delete_key_pair(ctx: Context, p: dict[str, Any]) -> dict[str, Any]:
    rows = _own(ctx)
    target = [r for r in rows if r.name == p.get("KeyName")
              or (p.get("KeyPairId") and ids.public("keypair", r.id or 0) == p["KeyPairId"])]
    ctx.commit_point()
    for row in target:  # deleting a key that does not exist succeeds, as on AWS
        assert row.id is not None
        keypairs.delete_key(ctx.cloud, ctx.caller, key_id=row.id)
    return {"Return": True, **({"KeyPairId": ids.public("keypair", target[0].id or 0)}
                               if target else {})}
