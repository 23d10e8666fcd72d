"""EC2 request authentication: Signature Version 4 (header and query forms) and 2.

The expected signature comes from botocore's own client signers run server-side
(reference/ec2.md §2.5–2.7), so the canonical forms are exactly the ones boto3 and
aws-cli build; libcloud and presigned requests agree with them.

    access_key(req)          the key the request claims; the caller looks up its secret
    verify(req, secret)      the time window, then the signature; Ec2Error on failure

Neither logs anything, and no message carries the secret or the expected signature.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from email.utils import parsedate_to_datetime
from urllib.parse import parse_qsl

from botocore.auth import UNSIGNED_PAYLOAD, SigV2Auth, SigV4Auth
from botocore.awsrequest import AWSRequest, HTTPHeaders
from botocore.credentials import Credentials

from apis.ec2.errors import Ec2Error, auth_failure, invalid_value

SKEW = timedelta(minutes=15)  # AWS's window for X-Amz-Date and Timestamp, both ways
MAX_EXPIRES = 7 * 24 * 3600  # the longest X-Amz-Expires AWS accepts
V4_ALGORITHM = "AWS4-HMAC-SHA256"
V2_DIGESTS = {"HmacSHA256": hashlib.sha256, "HmacSHA1": hashlib.sha1}

_AMZ_DATE = re.compile(r"\d{8}T\d{6}Z")
_SCOPE_DATE = re.compile(r"\d{8}")
_PRESIGNED = frozenset({"X-Amz-Algorithm", "X-Amz-Credential", "X-Amz-Signature"})
_ANY_URL = "http://nubo.invalid"  # v4 takes the host from the signed headers, never the URL
_MISMATCH = ("The request signature we calculated does not match the signature you provided. "
             "Check your secret access key and signing method")


@dataclass(frozen=True)
class SignedRequest:
    """One request as received, before any parsing that could change what was signed."""

    method: str  # "GET" / "POST"
    host: str  # the Host header exactly as received (may include :port)
    path: str  # raw request path as received, including any mount prefix
    query: str  # raw query string (no '?')
    headers: Mapping[str, str]  # lower-case names
    body: bytes  # raw body bytes, before any form parsing
    # every decoded pair the app will act on: the query string, plus the form body for POST
    # (SigV2 signs exactly these, so nothing unsigned can slip in beside them)
    params: Sequence[tuple[str, str]]


@dataclass(frozen=True)
class _V4:
    access_key: str
    date: str  # yyyymmdd of the credential scope
    region: str
    signed_headers: tuple[str, ...]
    signature: str
    timestamp: str  # yyyymmddTHHMMSSZ
    query: list[tuple[str, str]]  # canonical query pairs (X-Amz-Signature removed)
    expires: str | None  # X-Amz-Expires (query form only)
    presigned: bool


@dataclass(frozen=True)
class _V2:
    params: dict[str, str]


def access_key(req: SignedRequest) -> str:
    """The access key id the request claims; raises Ec2Error when it carries no signature."""
    claim = _claim(req)
    return claim.access_key if isinstance(claim, _V4) else claim.params["AWSAccessKeyId"]


def verify(req: SignedRequest, secret: str, *, now: datetime | None = None) -> None:
    """Accept the request signed with `secret`, or raise Ec2Error (AuthFailure, RequestExpired…)."""
    now = datetime.now(UTC) if now is None else now
    if now.tzinfo is None:
        now = now.replace(tzinfo=UTC)
    claim = _claim(req)
    if isinstance(claim, _V4):
        _verify_v4(req, claim, secret, now)
    else:
        _verify_v2(req, claim.params, secret, now)


# Which signature the request carries

def _claim(req: SignedRequest) -> _V4 | _V2:
    authorization = req.headers.get("authorization")
    if authorization is not None:
        return _v4_from_header(req, authorization)
    query = parse_qsl(req.query, keep_blank_values=True) if req.query else []
    if any(name in _PRESIGNED for name, _ in query):
        return _v4_from_query(query)
    if any(name in ("AWSAccessKeyId", "Signature") for name, _ in req.params):
        return _v2_claim(req.params)
    raise Ec2Error("MissingAuthenticationToken",
                   "The request must contain either a valid (registered) AWS access key ID "
                   "or X.509 certificate (no SigV4 or SigV2 signature found)", 403)


def _v4_from_header(req: SignedRequest, value: str) -> _V4:
    algorithm, _, rest = value.strip().partition(" ")
    if algorithm != V4_ALGORITHM:
        raise auth_failure(f"Unsupported Authorization type {algorithm[:40]!r}: "
                           f"only {V4_ALGORITHM} (or SigV2 parameters) is accepted")
    fields: dict[str, str] = {}
    for part in rest.split(","):
        name, sep, field = part.strip().partition("=")
        if not sep:
            raise auth_failure(f"Authorization header is malformed: {part.strip()[:40]!r} "
                               "is not a name=value pair")
        fields[name] = field
    missing = [n for n in ("Credential", "SignedHeaders", "Signature") if not fields.get(n)]
    if missing:
        raise auth_failure(f"Authorization header is malformed: missing {', '.join(missing)}")
    timestamp = req.headers.get("x-amz-date") or _from_http_date(req.headers.get("date"))
    query = parse_qsl(req.query, keep_blank_values=True) if req.query else []
    return _v4_claim(fields["Credential"], fields["SignedHeaders"], fields["Signature"],
                     timestamp, query, None, presigned=False)


def _v4_from_query(query: list[tuple[str, str]]) -> _V4:
    fields = dict(query)
    if fields.get("X-Amz-Algorithm") != V4_ALGORITHM:
        raise auth_failure(f"X-Amz-Algorithm must be {V4_ALGORITHM}")
    missing = [n for n in ("X-Amz-Credential", "X-Amz-SignedHeaders", "X-Amz-Signature",
                           "X-Amz-Date") if not fields.get(n)]
    if missing:
        raise auth_failure(f"Presigned request is missing {', '.join(missing)}")
    canonical = [(name, value) for name, value in query if name != "X-Amz-Signature"]
    return _v4_claim(fields["X-Amz-Credential"], fields["X-Amz-SignedHeaders"],
                     fields["X-Amz-Signature"], fields["X-Amz-Date"], canonical,
                     fields.get("X-Amz-Expires"), presigned=True)


def _v4_claim(credential: str, signed: str, signature: str, timestamp: str | None,
              query: list[tuple[str, str]], expires: str | None, *, presigned: bool) -> _V4:
    parts = credential.split("/")
    if len(parts) != 5 or not parts[0] or not parts[2] or parts[4] != "aws4_request":
        raise auth_failure("Credential is malformed: expected "
                           "<access key>/<yyyymmdd>/<region>/ec2/aws4_request")
    key, date, region, service, _ = parts
    if service != "ec2":
        raise auth_failure(f"Credential should be scoped to the service 'ec2', not {service[:40]!r}")
    if not _SCOPE_DATE.fullmatch(date):
        raise auth_failure(f"Credential scope date {date[:20]!r} is not yyyymmdd")
    if timestamp is None:
        raise auth_failure("The request must carry X-Amz-Date (or a signed Date header)")
    headers = tuple(name.strip().lower() for name in signed.split(";"))
    if "host" not in headers:
        raise auth_failure("SignedHeaders must include host")
    return _V4(key, date, region, headers, signature, timestamp, query, expires, presigned)


def _v2_claim(params: Sequence[tuple[str, str]]) -> _V2:
    fields = dict(params)
    if len(fields) != len(params):  # the app might read another copy than the one signed
        names = [name for name, _ in params]
        twice = next(name for name in fields if names.count(name) > 1)
        raise auth_failure(f"Parameter {twice[:40]!r} appears more than once in a SigV2 request")
    missing = [n for n in ("AWSAccessKeyId", "SignatureVersion", "SignatureMethod", "Signature")
               if not fields.get(n)]
    if missing:
        raise auth_failure(f"SigV2 request is missing {', '.join(missing)}")
    if fields["SignatureVersion"] != "2":
        raise auth_failure(f"SignatureVersion {fields['SignatureVersion'][:10]!r} is not "
                           "supported: use 2 or SigV4")
    if fields["SignatureMethod"] not in V2_DIGESTS:
        raise auth_failure(f"SignatureMethod {fields['SignatureMethod'][:20]!r} is not supported: "
                           f"use {' or '.join(V2_DIGESTS)}")
    return _V2(fields)


# Signature Version 4

class _ServerSigV4(SigV4Auth):  # type: ignore[misc]  # botocore is untyped
    """botocore's signer, told exactly which headers the client signed and the payload hash.

    Its own `headers_to_sign` drops `user-agent`, which libcloud signs.
    """

    def __init__(self, secret: str, region: str, headers: HTTPHeaders, payload: str) -> None:
        super().__init__(Credentials("", secret), "ec2", region)
        self._headers = headers
        self._payload = payload

    def headers_to_sign(self, request: AWSRequest) -> HTTPHeaders:
        return self._headers

    def payload(self, request: AWSRequest) -> str:
        return self._payload


def _verify_v4(req: SignedRequest, claim: _V4, secret: str, now: datetime) -> None:
    signed_at = _amz_date(claim.timestamp)
    if claim.timestamp[:8] != claim.date:
        raise auth_failure(f"Credential scope date {claim.date} does not match the request "
                           f"date {claim.timestamp[:8]}")
    if claim.expires is None:
        _within_skew(signed_at, now, "X-Amz-Date")
    else:
        _before_expiry(signed_at, now, _expires_seconds(claim.expires))
    headers = HTTPHeaders()
    for name in claim.signed_headers:
        value = req.headers.get(name)
        if value is None:
            raise auth_failure(f"Signed header {name!r} is missing from the request")
        headers[name] = value
    body_hash = hashlib.sha256(req.body).hexdigest()
    accepted = [body_hash]
    if claim.presigned and not req.body:
        accepted.append(UNSIGNED_PAYLOAD)  # S3-style presigners; nothing unsigned can follow
    declared = headers.get("x-amz-content-sha256")
    if declared is not None:
        if declared not in accepted:
            raise auth_failure("X-Amz-Content-SHA256 does not match the SHA-256 of the request body")
        accepted = [declared]
    request = AWSRequest(method=req.method, url=_ANY_URL + req.path, params=claim.query)
    request.context["timestamp"] = claim.timestamp
    for payload in accepted:
        signer = _ServerSigV4(secret, claim.region, headers, payload)
        canonical = signer.canonical_request(request)
        expected: str = signer.signature(signer.string_to_sign(request, canonical), request)
        if _same(expected, claim.signature):
            return
    raise auth_failure(f"{_MISMATCH} (SigV4 over {req.method} {req.path[:200]!r}, host "
                       f"{headers['host'][:100]!r}, signed headers "
                       f"{';'.join(claim.signed_headers)[:300]})")


def _amz_date(value: str) -> datetime:
    if _AMZ_DATE.fullmatch(value):
        try:  # by hand: strptime alone costs more than a quarter of a verification
            return datetime(int(value[0:4]), int(value[4:6]), int(value[6:8]), int(value[9:11]),
                            int(value[11:13]), int(value[13:15]), tzinfo=UTC)
        except ValueError:
            pass
    raise auth_failure(f"X-Amz-Date {value[:40]!r} is not in the form yyyymmddTHHMMSSZ")


def _from_http_date(value: str | None) -> str | None:
    if value is None:
        return None
    try:
        parsed = parsedate_to_datetime(value)
    except (TypeError, ValueError):
        raise auth_failure(f"Date header {value[:40]!r} is not an HTTP date") from None
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=UTC)
    return parsed.astimezone(UTC).strftime("%Y%m%dT%H%M%SZ")


def _expires_seconds(value: str) -> int:
    if not value.isdigit() or not 0 < int(value) <= MAX_EXPIRES:
        raise invalid_value("X-Amz-Expires", value[:20],
                            f"must be a number of seconds from 1 to {MAX_EXPIRES}")
    return int(value)


# Signature Version 2

_NO_SECRET = Credentials("", "")  # calc_signature's own HMAC is discarded


def v2_string_to_sign(method: str, host: str, path: str, params: Mapping[str, str]) -> str:
    """The SigV2 string to sign; the parameter part is botocore's (SigV2Auth.calc_signature)."""
    query, _ = SigV2Auth(_NO_SECRET).calc_signature(AWSRequest(method=method, url=_ANY_URL),
                                                    params)
    return f"{method}\n{host}\n{path or '/'}\n{query}"


def v2_signature(string_to_sign: str, secret: str, method: str) -> str:
    """Base64 HMAC of the string to sign with the SignatureMethod's digest."""
    digest = hmac.new(secret.encode(), string_to_sign.encode(), V2_DIGESTS[method]).digest()
    return base64.b64encode(digest).decode()


def _verify_v2(req: SignedRequest, params: dict[str, str], secret: str, now: datetime) -> None:
    timestamp, expires = params.get("Timestamp"), params.get("Expires")
    if timestamp is not None and expires is not None:
        raise Ec2Error("InvalidParameterCombination",
                       "Parameters Timestamp and Expires cannot be used together")
    if expires is not None:
        if now > _iso_time("Expires", expires):
            raise Ec2Error("RequestExpired", f"Request has expired: Expires {expires[:40]} is past")
    elif timestamp is not None:
        _within_skew(_iso_time("Timestamp", timestamp), now, "Timestamp")
    else:
        raise auth_failure("SigV2 request must carry Timestamp or Expires")
    # libcloud leaves out a default port, botocore keeps what the URL had
    hosts = [req.host]
    bare, colon, port = req.host.rpartition(":")
    if colon and port.isdigit() and not bare.endswith(":"):
        hosts.append(bare)
    method = params["SignatureMethod"]
    for host in hosts:
        expected = v2_signature(v2_string_to_sign(req.method, host, req.path, params), secret, method)
        if _same(expected, params["Signature"]):
            return
    raise auth_failure(f"{_MISMATCH} (SigV2 {method} over {req.method} {req.path[:200]!r}, host "
                       f"{' or '.join(repr(h[:100]) for h in hosts)})")


def _iso_time(name: str, value: str) -> datetime:
    try:
        parsed = datetime.fromisoformat(value)
    except ValueError:
        raise invalid_value(name, value[:40], "must be an ISO 8601 time such as "
                            "2016-11-15T12:00:00Z") from None
    return parsed if parsed.tzinfo is not None else parsed.replace(tzinfo=UTC)


# Shared

def _within_skew(signed_at: datetime, now: datetime, name: str) -> None:
    if abs(now - signed_at) > SKEW:
        stamp, server = (t.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ") for t in (signed_at, now))
        raise Ec2Error("RequestExpired", f"Request has expired: {name} {stamp} is more than "
                       f"15 minutes from the server time {server}")


def _before_expiry(signed_at: datetime, now: datetime, seconds: int) -> None:
    if signed_at - now > SKEW:
        raise Ec2Error("RequestExpired",
                       f"Request is signed for {signed_at:%Y-%m-%dT%H:%M:%SZ}, more than 15 minutes "
                       "in the future")
    if now > signed_at + timedelta(seconds=seconds):
        raise Ec2Error("RequestExpired",
                       f"Request has expired: signed {signed_at:%Y-%m-%dT%H:%M:%SZ}, valid "
                       f"for {seconds} seconds")


def _same(expected: str, given: str) -> bool:
    return hmac.compare_digest(expected.encode(), given.encode("utf-8", "replace"))

