"""SSH key pairs: generated (the private half is returned once, never stored) or imported."""

from __future__ import annotations

import base64
import binascii
import hashlib

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from sqlmodel import col, select

from core.errors import Conflict, InvalidRequest, NotFound
from core.models import KeyPair
from core.service.access import fetch
from core.service.context import Caller, Cloud

KEY_TYPES = ("ssh-rsa", "ssh-ed25519", "ecdsa-sha2-nistp256", "ecdsa-sha2-nistp384",
             "ecdsa-sha2-nistp521")


def fingerprint(public_key: str) -> str:
    """MD5 of the key blob in colon-separated hex (`ssh-keygen -E md5 -l`)."""
    blob = base64.b64decode(public_key.split()[1])
    digest = hashlib.md5(blob, usedforsecurity=False).hexdigest()
    return ":".join(digest[i:i + 2] for i in range(0, len(digest), 2))


def parse_public_key(text: str) -> str:
    """`type base64 [comment]` normalised, or InvalidRequest."""
    parts = text.strip().split()
    if len(parts) < 2 or parts[0] not in KEY_TYPES:
        raise InvalidRequest(f"not an OpenSSH public key; expected one of {', '.join(KEY_TYPES)}")
    try:
        blob = base64.b64decode(parts[1], validate=True)
    except (binascii.Error, ValueError):
        raise InvalidRequest("the public key's base64 body is invalid") from None
    if not blob[4:].startswith(parts[0].encode()):
        raise InvalidRequest("the public key's body does not match its type")
    return " ".join(parts[:3])


def _validate_name(name: str) -> str:
    if not name or len(name) > 255 or any(ord(c) < 32 for c in name):
        raise InvalidRequest(f"invalid key pair name {name!r}")
    return name


def _store(cloud: Cloud, caller: Caller, name: str, public_key: str) -> KeyPair:
    with cloud.session() as s:
        if s.exec(select(KeyPair).where(KeyPair.uid == caller.uid,
                                        KeyPair.name == name)).first() is not None:
            raise Conflict(f"the key pair {name!r} already exists")
        row = KeyPair(uid=caller.uid, gid=caller.gid, name=name,
                      fingerprint=fingerprint(public_key), public_key=public_key)
        s.add(row)
        s.flush()
        return row


def create(cloud: Cloud, caller: Caller, *, name: str) -> tuple[KeyPair, str]:
    """A new RSA key pair; returns the row and the private key (PEM), shown only now."""
    _validate_name(name)
    private = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    pem = private.private_bytes(serialization.Encoding.PEM,
                                serialization.PrivateFormat.TraditionalOpenSSL,
                                serialization.NoEncryption()).decode()
    public = private.public_key().public_bytes(serialization.Encoding.OpenSSH,
                                               serialization.PublicFormat.OpenSSH).decode()
    return _store(cloud, caller, name, f"{public} {name}"), pem


def import_key(cloud: Cloud, caller: Caller, *, name: str, public_key: str) -> KeyPair:
    return _store(cloud, caller, _validate_name(name), parse_public_key(public_key))


def list_keys(cloud: Cloud, caller: Caller) -> list[KeyPair]:
    with cloud.session() as s:
        query = select(KeyPair).order_by(col(KeyPair.name))
        if not caller.admin:
            query = query.where(KeyPair.uid == caller.uid)
        return list(s.exec(query))


def find(cloud: Cloud, caller: Caller, *, name: str) -> KeyPair:
    """The caller's own key pair of that name."""
    with cloud.session() as s:
        row = s.exec(select(KeyPair).where(KeyPair.uid == caller.uid,
                                           KeyPair.name == name)).first()
        if row is None:
            raise NotFound("key pair", name)
        return row


def delete_key(cloud: Cloud, caller: Caller, *, key_id: int) -> None:
    with cloud.session() as s:
        s.delete(fetch(s, KeyPair, key_id, caller, "key pair"))
