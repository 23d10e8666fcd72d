"""Who an OCCI request acts as: HTTP Basic with the user's password, or X-Auth-Token with
a login token (`nubo user token`). A 401 always says how to authenticate."""

from __future__ import annotations

import base64
import binascii

from starlette.datastructures import Headers

from apis.occi.media import OcciError
from core.errors import Unauthorized
from core.service import identity, logins
from core.service.context import Caller, Cloud

CHALLENGE = {"WWW-Authenticate": 'Basic realm="Nubo OCCI", charset="UTF-8"'}


def caller(cloud: Cloud, headers: Headers) -> Caller:
    token = headers.get("x-auth-token", "").strip()
    authorization = headers.get("authorization", "")
    try:
        if token:
            return logins.caller_by_token(cloud, token)
        scheme, _, value = authorization.partition(" ")
        if scheme.lower() == "basic" and value.strip():
            try:
                pair = base64.b64decode(value.strip(), validate=True).decode("utf-8")
            except (binascii.Error, UnicodeDecodeError):
                raise OcciError(401, "the Basic credentials are not base64 of user:password",
                                CHALLENGE) from None
            name, sep, password = pair.partition(":")
            if not sep:
                raise OcciError(401, "the Basic credentials must be user:password", CHALLENGE)
            return identity.check_password(cloud, name=name, password=password)
    except Unauthorized as exc:
        raise OcciError(401, str(exc), CHALLENGE) from None
    raise OcciError(401, "authentication required: HTTP Basic with your Nubo user and "
                    "password, or X-Auth-Token with a token from `nubo user token`", CHALLENGE)
