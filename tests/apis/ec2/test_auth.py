"""EC2 signatures, as real clients make them: boto3, aws-cli, libcloud and botocore's signers.

A capture server (Starlette under uvicorn on loopback) builds a SignedRequest from each raw
request, verifies it and answers minimal EC2 XML, or the EC2 error envelope: a client call
that succeeds proves the signature was accepted. Negative cases replay captured requests
with one thing changed, or send requests signed by botocore's signers with a flaw.
"""

from __future__ import annotations

import base64
import dataclasses
import hashlib
import hmac
import json
import os
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl, urlencode
from xml.sax.saxutils import escape

import boto3
import httpx
import pytest
import uvicorn
from botocore.auth import S3SigV4QueryAuth, SigV2Auth, SigV4Auth, SigV4QueryAuth
from botocore.awsrequest import AWSRequest
from botocore.config import Config
from botocore.credentials import Credentials
from botocore.exceptions import ClientError
from libcloud.common.types import InvalidCredsError
from libcloud.compute.providers import Provider, get_driver
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from apis.ec2.auth import SignedRequest, access_key, v2_string_to_sign, verify
from apis.ec2.errors import Ec2Error

KEY = "AKIDNUBOTEST"
SECRET = "nubo/Secret+Key=42"  # '/', '+' and '=' as real AWS secrets have
SECRETS = {KEY: SECRET}
NS = "http://ec2.amazonaws.com/doc/2016-11-15/"
BODIES = {
    "DescribeRegions": "<regionInfo/>",
    "DescribeAvailabilityZones": "<availabilityZoneInfo/>",
    "DescribeImages": "<imagesSet/>",
}


# The capture server

def signed_request(request: Request, body: bytes) -> SignedRequest:
    """What the front door must hand to the verifier: everything as received."""
    query = request.scope["query_string"].decode("latin-1")
    raw_path = request.scope.get("raw_path") or request.scope["path"].encode()
    form = body.decode("utf-8", "replace") if request.method == "POST" else query
    return SignedRequest(method=request.method, host=request.headers.get("host", ""),
                         path=raw_path.decode("latin-1"), query=query,
                         headers=dict(request.headers.items()), body=body,
                         params=parse_qsl(form, keep_blank_values=True))


def error_xml(exc: Ec2Error) -> Response:
    xml = (f"<Response><Errors><Error><Code>{exc.code}</Code><Message>{escape(exc.message)}"
           "</Message></Error></Errors><RequestID>1</RequestID></Response>")
    return Response(xml, status_code=exc.status, media_type="text/xml")


class CaptureServer:
    def __init__(self) -> None:
        self.seen: list[SignedRequest] = []
        app = Starlette(routes=[Route("/{rest:path}", self.endpoint, methods=["GET", "POST"])])
        config = uvicorn.Config(app, host="127.0.0.1", port=0, log_level="warning",
                                lifespan="off", access_log=False)
        self.server = uvicorn.Server(config)
        self.thread = threading.Thread(target=self.server.run, daemon=True)

    async def endpoint(self, request: Request) -> Response:
        signed = signed_request(request, await request.body())
        self.seen.append(signed)
        try:
            secret = SECRETS.get(access_key(signed))
            if secret is None:
                raise Ec2Error("AuthFailure", "unknown access key", 401)
            verify(signed, secret)
        except Ec2Error as exc:
            return error_xml(exc)
        pairs = dict(signed.params) | dict(parse_qsl(signed.query))
        action = pairs.get("Action", "DescribeRegions")
        xml = (f'<{action}Response xmlns="{NS}"><requestId>1</requestId>'
               f"{BODIES.get(action, '')}</{action}Response>")
        return Response(xml, media_type="text/xml")

    def start(self) -> None:
        self.thread.start()
        deadline = time.monotonic() + 10
        while not self.server.started:
            if time.monotonic() > deadline or not self.thread.is_alive():
                raise RuntimeError("capture server did not start")
            time.sleep(0.01)
        self.port = int(self.server.servers[0].sockets[0].getsockname()[1])
        self.url = f"http://127.0.0.1:{self.port}"

    def stop(self) -> None:
        self.server.should_exit = True
        self.thread.join(timeout=10)

    def last(self) -> SignedRequest:
        return self.seen[-1]


@pytest.fixture(scope="module")
def capture() -> Iterator[CaptureServer]:
    server = CaptureServer()
    server.start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture(autouse=True)
def no_aws_config(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    for name in [n for n in os.environ if n.startswith("AWS_")]:
        monkeypatch.delenv(name)
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "absent-config"))
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(tmp_path / "absent-credentials"))


# Clients

def ec2(endpoint: str, region: str = "us-east-1", secret: str = SECRET,
        signature_version: str | None = None) -> Any:
    config = Config(retries={"max_attempts": 1}, signature_version=signature_version)
    return boto3.session.Session().client(
        "ec2", endpoint_url=endpoint, region_name=region, aws_access_key_id=KEY,
        aws_secret_access_key=secret, config=config)


def boto3_call(endpoint: str, **kwargs: Any) -> None:
    client = ec2(endpoint, **kwargs)
    try:
        client.describe_regions()
    finally:
        client.close()


def libcloud_call(capture: CaptureServer, version: str, secret: str = SECRET,
                  image_filter: str | None = None) -> None:
    driver_class: Any = get_driver(Provider.EC2)
    driver = driver_class(KEY, secret, secure=False, host="127.0.0.1", port=capture.port,
                          region="us-east-1", signature_version=version)
    try:
        if image_filter is None:
            assert driver.list_locations() == []
        else:
            assert driver.list_images(ex_filters={"name": image_filter}) == []
    finally:
        driver.connection.connection.session.close()


def send(capture: CaptureServer, request: AWSRequest) -> httpx.Response:
    """Send a request signed by a botocore signer exactly as it stands."""
    prepared = request.prepare()
    headers = {k: v for k, v in prepared.headers.items() if k.lower() != "host"}
    with httpx.Client() as client:
        return client.request(prepared.method, prepared.url, headers=headers,
                              content=prepared.body or b"")


def error_code(response: httpx.Response) -> str:
    body = response.text
    return body.split("<Code>")[1].split("</Code>")[0] if "<Code>" in body else ""


def ec2_request(capture: CaptureServer, method: str = "POST") -> AWSRequest:
    form = {"Action": "DescribeRegions", "Version": "2016-11-15"}
    if method == "GET":
        return AWSRequest(method="GET", url=capture.url + "/", params=form)
    return AWSRequest(method="POST", url=capture.url + "/", data=form, headers={
        "Content-Type": "application/x-www-form-urlencoded; charset=utf-8"})


def creds(secret: str = SECRET) -> Credentials:
    return Credentials(KEY, secret)


def v2_by_hand(capture: CaptureServer, method: str, **extra: str) -> dict[str, str]:
    """SigV2 params signed with HmacSHA1 from the verifier's one string-to-sign function."""
    params = {"Action": "DescribeRegions", "Version": "2016-11-15", "AWSAccessKeyId": KEY,
              "SignatureVersion": "2", "SignatureMethod": "HmacSHA1", **extra}
    if "Expires" not in params:
        params.setdefault("Timestamp", time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()))
    string_to_sign = v2_string_to_sign(method, f"127.0.0.1:{capture.port}", "/", params)
    digest = hmac.new(SECRET.encode(), string_to_sign.encode(), hashlib.sha1).digest()
    params["Signature"] = base64.b64encode(digest).decode()
    return params


def send_v2(capture: CaptureServer, method: str, params: dict[str, str]) -> httpx.Response:
    with httpx.Client() as client:
        if method == "GET":
            return client.get(capture.url + "/", params=params)
        return client.post(capture.url + "/", data=params)


def expect(code: str, req: SignedRequest, secret: str = SECRET, **kwargs: Any) -> Ec2Error:
    with pytest.raises(Ec2Error) as info:
        verify(req, secret, **kwargs)
    assert info.value.code == code, info.value.message
    assert SECRET not in info.value.message
    return info.value


def amz_time(req: SignedRequest) -> datetime:
    return datetime.strptime(req.headers["x-amz-date"], "%Y%m%dT%H%M%SZ").replace(tzinfo=UTC)


# Captured requests from each client, for replays

@pytest.fixture(scope="module")
def boto3_v4(capture: CaptureServer) -> SignedRequest:
    boto3_call(capture.url + "/ec2/", region="nubo")
    return capture.last()


@pytest.fixture(scope="module")
def libcloud_v2(capture: CaptureServer) -> SignedRequest:
    libcloud_call(capture, "2")
    return capture.last()


@pytest.fixture(scope="module")
def libcloud_v4(capture: CaptureServer) -> SignedRequest:
    libcloud_call(capture, "4")
    return capture.last()


# SigV4, header form

@pytest.mark.parametrize("region", ["us-east-1", "nubo", "undefined-123"])
@pytest.mark.parametrize("prefix", ["", "/", "/ec2", "/ec2/", "/nubo/api/ec2"])
def test_boto3_sigv4_any_region_and_prefix(capture: CaptureServer, region: str,
                                           prefix: str) -> None:
    boto3_call(capture.url + prefix, region=region)
    req = capture.last()
    assert req.method == "POST"
    assert req.path == (prefix or "/")
    assert f"/{region}/ec2/aws4_request" in req.headers["authorization"]
    assert access_key(req) == KEY


def test_boto3_sigv4_wrong_secret(capture: CaptureServer) -> None:
    with pytest.raises(ClientError) as info:
        boto3_call(capture.url + "/ec2/", secret="not-the-secret")
    assert info.value.response["Error"]["Code"] == "AuthFailure"
    assert info.value.response["ResponseMetadata"]["HTTPStatusCode"] == 401


def test_libcloud_sigv4_get_signs_user_agent(capture: CaptureServer,
                                             libcloud_v4: SignedRequest) -> None:
    assert libcloud_v4.method == "GET"
    assert "user-agent" in libcloud_v4.headers["authorization"]
    assert "x-amz-content-sha256" in libcloud_v4.headers["authorization"]
    with pytest.raises(InvalidCredsError):
        libcloud_call(capture, "4", secret="not-the-secret")


def test_botocore_signed_content_sha256(capture: CaptureServer) -> None:
    request = ec2_request(capture)
    body = request.prepare().body
    request.headers["X-Amz-Content-SHA256"] = hashlib.sha256(body.encode()).hexdigest()
    SigV4Auth(creds(), "ec2", "eu-west-1").add_auth(request)
    assert send(capture, request).status_code == 200
    assert "x-amz-content-sha256" in capture.last().headers["authorization"]


def test_botocore_signed_date_header_instead_of_x_amz_date(capture: CaptureServer) -> None:
    request = ec2_request(capture)
    request.headers["Date"] = "set by the signer"
    SigV4Auth(creds(), "ec2", "us-east-1").add_auth(request)
    response = send(capture, request)
    assert response.status_code == 200, response.text
    assert "x-amz-date" not in capture.last().headers


def test_signed_content_sha256_not_matching_body(capture: CaptureServer,
                                                 libcloud_v4: SignedRequest) -> None:
    request = ec2_request(capture)
    request.headers["X-Amz-Content-SHA256"] = hashlib.sha256(b"Action=RunInstances").hexdigest()
    SigV4Auth(creds(), "ec2", "us-east-1").add_auth(request)  # valid for the declared hash
    response = send(capture, request)
    assert (response.status_code, error_code(response)) == (401, "AuthFailure")
    assert "X-Amz-Content-SHA256" in response.text
    expect("AuthFailure", dataclasses.replace(libcloud_v4, body=b"Action=RunInstances"))


def test_tampered_body(boto3_v4: SignedRequest) -> None:
    verify(boto3_v4, SECRET, now=amz_time(boto3_v4))
    tampered = boto3_v4.body.replace(b"DescribeRegions", b"DescribeImages")
    error = expect("AuthFailure", dataclasses.replace(boto3_v4, body=tampered))
    assert error.status == 401
    assert "does not match" in error.message and "'/ec2/'" in error.message


def test_tampered_path_host_and_query(boto3_v4: SignedRequest,
                                      libcloud_v4: SignedRequest) -> None:
    expect("AuthFailure", dataclasses.replace(boto3_v4, path="/other/"))
    headers = dict(boto3_v4.headers, host="127.0.0.1:1")
    expect("AuthFailure", dataclasses.replace(boto3_v4, headers=headers))
    query = libcloud_v4.query.replace("DescribeAvailabilityZones", "DescribeImages")
    expect("AuthFailure", dataclasses.replace(libcloud_v4, query=query))


def test_other_service_scope(capture: CaptureServer) -> None:
    request = ec2_request(capture)
    SigV4Auth(creds(), "sqs", "us-east-1").add_auth(request)
    response = send(capture, request)
    assert (response.status_code, error_code(response)) == (401, "AuthFailure")
    assert "'ec2'" in response.text


def test_unsigned_request(capture: CaptureServer) -> None:
    with httpx.Client() as client:
        response = client.post(capture.url + "/", data={"Action": "DescribeRegions",
                                                          "Version": "2016-11-15"})
    assert (response.status_code, error_code(response)) == (403, "MissingAuthenticationToken")


@pytest.mark.parametrize("authorization", [
    "AWS4-HMAC-SHA256",
    "AWS4-HMAC-SHA256 garbage",
    "AWS4-HMAC-SHA256 Credential=AKIDNUBOTEST/20240101/us-east-1/ec2/aws4_request, "
    "SignedHeaders=host;x-amz-date",
    "AWS4-HMAC-SHA256 Credential=AKIDNUBOTEST/us-east-1/ec2/aws4_request, "
    "SignedHeaders=host;x-amz-date, Signature=00",
    "AWS4-HMAC-SHA256 Credential=AKIDNUBOTEST/2024-01-01/us-east-1/ec2/aws4_request, "
    "SignedHeaders=host;x-amz-date, Signature=00",
    "AWS4-HMAC-SHA256 Credential=AKIDNUBOTEST/20240101/us-east-1/ec2/aws4, "
    "SignedHeaders=host;x-amz-date, Signature=00",
    "AWS4-HMAC-SHA256 Credential=AKIDNUBOTEST/20240101/us-east-1/ec2/aws4_request, "
    "SignedHeaders=x-amz-date, Signature=00",
    "AWS AKIDNUBOTEST:c2lnbmF0dXJl",
    "Bearer token",
])
def test_malformed_authorization(boto3_v4: SignedRequest, authorization: str) -> None:
    req = dataclasses.replace(boto3_v4, headers=dict(boto3_v4.headers, authorization=authorization))
    with pytest.raises(Ec2Error) as info:
        access_key(req)
    assert (info.value.code, info.value.status) == ("AuthFailure", 401)
    expect("AuthFailure", req)


def test_missing_signed_header_and_bad_dates(boto3_v4: SignedRequest) -> None:
    headers = {k: v for k, v in boto3_v4.headers.items() if k != "content-type"}
    assert "content-type" in expect("AuthFailure", dataclasses.replace(
        boto3_v4, headers=headers)).message
    stamp = boto3_v4.headers["x-amz-date"]
    next_day = (amz_time(boto3_v4) + timedelta(days=1)).strftime("%Y%m%dT%H%M%SZ")
    for bad in ["yesterday", stamp.replace("T", " "), stamp[:4] + "13" + stamp[6:], next_day]:
        req = dataclasses.replace(boto3_v4, headers=dict(boto3_v4.headers, **{"x-amz-date": bad}))
        expect("AuthFailure", req, now=amz_time(boto3_v4))


@pytest.mark.parametrize("minutes", [16, -16])
def test_sigv4_clock_skew(boto3_v4: SignedRequest, minutes: int) -> None:
    signed_at = amz_time(boto3_v4)
    verify(boto3_v4, SECRET, now=signed_at + timedelta(minutes=minutes * 14 / 16))
    error = expect("RequestExpired", boto3_v4, now=signed_at + timedelta(minutes=minutes))
    assert error.status == 400


@pytest.mark.parametrize("version", ["2", "4"])
def test_libcloud_query_needing_reencoding(capture: CaptureServer, version: str) -> None:
    """libcloud sends a space as '+' but signs it as %20: the verifier re-encodes the pairs."""
    libcloud_call(capture, version, image_filter="web server*~(1)")
    assert "web+server" in capture.last().query


# SigV4, query form (presigned)

@pytest.mark.parametrize("method", ["GET", "POST"])
def test_presigned_sigv4_query(capture: CaptureServer, method: str) -> None:
    request = ec2_request(capture, method)
    SigV4QueryAuth(creds(), "ec2", "nubo", expires=60).add_auth(request)
    response = send(capture, request)
    assert response.status_code == 200, response.text
    req = capture.last()
    assert "X-Amz-Signature=" in req.query and "authorization" not in req.headers
    assert access_key(req) == KEY
    signed_at = datetime.strptime(dict(parse_qsl(req.query))["X-Amz-Date"],
                                  "%Y%m%dT%H%M%SZ").replace(tzinfo=UTC)
    verify(req, SECRET, now=signed_at + timedelta(seconds=60))
    expect("RequestExpired", req, now=signed_at + timedelta(seconds=61))
    expect("RequestExpired", req, now=signed_at - timedelta(minutes=16))
    expect("AuthFailure", req, secret="not-the-secret")
    expect("AuthFailure", dataclasses.replace(req, query=req.query.replace("Regions", "Images")))


def test_presigned_unsigned_payload_covers_no_body(capture: CaptureServer) -> None:
    request = ec2_request(capture, "GET")
    S3SigV4QueryAuth(creds(), "ec2", "us-east-1", expires=60).add_auth(request)
    assert send(capture, request).status_code == 200
    assert "UNSIGNED-PAYLOAD" not in capture.last().query  # only inside the canonical request
    expect("AuthFailure", dataclasses.replace(capture.last(), body=b"Action=RunInstances"))


def test_presigned_bad_expires(capture: CaptureServer) -> None:
    request = ec2_request(capture, "GET")
    SigV4QueryAuth(creds(), "ec2", "us-east-1", expires=8 * 24 * 3600).add_auth(request)
    response = send(capture, request)
    assert (response.status_code, error_code(response)) == (400, "InvalidParameterValue")


# SigV2

@pytest.mark.parametrize("prefix", ["/", "/ec2", "/ec2/"])
def test_boto3_sigv2_post(capture: CaptureServer, prefix: str) -> None:
    boto3_call(capture.url + prefix, signature_version="v2", region="nubo")
    req = capture.last()
    assert (req.method, req.path) == ("POST", prefix)
    assert dict(req.params)["SignatureMethod"] == "HmacSHA256"
    with pytest.raises(ClientError) as info:
        boto3_call(capture.url + prefix, signature_version="v2", secret="not-the-secret")
    assert info.value.response["Error"]["Code"] == "AuthFailure"


def test_libcloud_sigv2_get(capture: CaptureServer, libcloud_v2: SignedRequest) -> None:
    assert libcloud_v2.method == "GET" and "Signature=" in libcloud_v2.query
    assert access_key(libcloud_v2) == KEY
    with pytest.raises(InvalidCredsError):
        libcloud_call(capture, "2", secret="not-the-secret")


@pytest.mark.parametrize("method", ["GET", "POST"])
def test_sigv2_hmac_sha1(capture: CaptureServer, method: str) -> None:
    response = send_v2(capture, method, v2_by_hand(capture, method))
    assert response.status_code == 200, response.text
    wrong = v2_by_hand(capture, method, Action="DescribeImages")
    wrong["Action"] = "DescribeRegions"
    assert error_code(send_v2(capture, method, wrong)) == "AuthFailure"


def test_sigv2_string_to_sign_is_botocores(capture: CaptureServer) -> None:
    params = {"Action": "DescribeImages", "Filter.1.Value.1": "a b*c:~é", "Owner.1": "self",
              "Timestamp": "2016-11-15T12:00:00Z", "Signature": "ignored"}
    url = f"http://127.0.0.1:{capture.port}/ec2/"
    _, theirs = SigV2Auth(creds()).calc_signature(AWSRequest(method="POST", url=url), params)
    ours = v2_string_to_sign("POST", f"127.0.0.1:{capture.port}", "/ec2/", params)
    digest = hmac.new(SECRET.encode(), ours.encode(), hashlib.sha256).digest()
    assert base64.b64encode(digest).decode() == theirs


def test_sigv2_host_without_port(capture: CaptureServer) -> None:
    """A client on a default port signs the bare host; a proxy may add the port back."""
    params = {"Action": "DescribeRegions", "Version": "2016-11-15", "AWSAccessKeyId": KEY,
              "SignatureVersion": "2", "SignatureMethod": "HmacSHA256",
              "Timestamp": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}
    _, params["Signature"] = SigV2Auth(creds()).calc_signature(
        AWSRequest(method="GET", url="http://127.0.0.1/"), params)
    assert send_v2(capture, "GET", params).status_code == 200


def test_sigv2_tampered_and_duplicated_params(libcloud_v2: SignedRequest) -> None:
    params = [(k, "DescribeImages" if k == "Action" else v) for k, v in libcloud_v2.params]
    expect("AuthFailure", dataclasses.replace(libcloud_v2, params=params))
    twice = [("Action", "RunInstances"), *libcloud_v2.params]
    assert "Action" in expect("AuthFailure", dataclasses.replace(libcloud_v2, params=twice)).message


def test_sigv2_timestamp_window(libcloud_v2: SignedRequest) -> None:
    signed_at = datetime.fromisoformat(dict(libcloud_v2.params)["Timestamp"])
    verify(libcloud_v2, SECRET, now=signed_at + timedelta(minutes=14))
    expect("RequestExpired", libcloud_v2, now=signed_at + timedelta(minutes=16))
    expect("RequestExpired", libcloud_v2, now=signed_at - timedelta(minutes=16))


def test_sigv2_expires(capture: CaptureServer) -> None:
    def at(delta: timedelta) -> str:
        return (datetime.now(UTC) + delta).strftime("%Y-%m-%dT%H:%M:%SZ")

    ok = send_v2(capture, "GET", v2_by_hand(capture, "GET", Expires=at(timedelta(hours=1))))
    assert ok.status_code == 200, ok.text
    past = send_v2(capture, "GET", v2_by_hand(capture, "GET", Expires=at(timedelta(seconds=-5))))
    assert (past.status_code, error_code(past)) == (400, "RequestExpired")


@pytest.mark.parametrize(("change", "code"), [
    ({"Timestamp": "last tuesday"}, "InvalidParameterValue"),
    ({"Expires": "2016-11-15T12:00:00Z"}, "InvalidParameterCombination"),
    ({"SignatureVersion": "1"}, "AuthFailure"),
    ({"SignatureMethod": "HmacMD5"}, "AuthFailure"),
    ({"Signature": ""}, "AuthFailure"),
])
def test_sigv2_bad_parameters(libcloud_v2: SignedRequest, change: dict[str, str],
                              code: str) -> None:
    params = dict(libcloud_v2.params) | change
    expect(code, dataclasses.replace(libcloud_v2, params=list(params.items())))


# aws-cli v1, a separate process

def run_cli(capture: CaptureServer, tmp_path: Path, region: str, *, config: str = "",
            secret: str = SECRET) -> subprocess.CompletedProcess[str]:
    home = tmp_path / "home"
    home.mkdir(exist_ok=True)
    config_file = tmp_path / "config"
    config_file.write_text(config)
    env = {k: v for k, v in os.environ.items() if not k.startswith("AWS_")}
    env |= {"HOME": str(home), "AWS_CONFIG_FILE": str(config_file),
            "AWS_SHARED_CREDENTIALS_FILE": str(home / "credentials"),
            "AWS_ACCESS_KEY_ID": KEY, "AWS_SECRET_ACCESS_KEY": secret}
    argv = [sys.executable, "-m", "awscli", "ec2", "describe-regions", "--output", "json",
            "--endpoint-url", capture.url + "/ec2/", "--region", region]
    return subprocess.run(argv, env=env, capture_output=True, text=True, timeout=120,
                          check=False)


@pytest.mark.slow
def test_aws_cli_sigv4(capture: CaptureServer, tmp_path: Path) -> None:
    done = run_cli(capture, tmp_path, "undefined-123")
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout) == {"Regions": []}
    assert "/undefined-123/ec2/" in capture.last().headers["authorization"]
    failed = run_cli(capture, tmp_path, "nubo", secret="not-the-secret")
    assert failed.returncode != 0 and "AuthFailure" in failed.stderr


@pytest.mark.slow
def test_aws_cli_sigv2_from_config(capture: CaptureServer, tmp_path: Path) -> None:
    done = run_cli(capture, tmp_path, "nubo",
                   config="[default]\nec2 =\n    signature_version = v2\n")
    assert done.returncode == 0, done.stderr
    assert dict(capture.last().params)["SignatureVersion"] == "2"


def test_capture_request_shape(capture: CaptureServer) -> None:
    """The raw query string reaches the verifier as sent (no re-encoding by the server)."""
    with httpx.Client() as client:
        client.get(capture.url + "/ec2/?" + urlencode({"A": "b c"}) + "&X=%7E")
    req = capture.last()
    assert (req.path, req.query) == ("/ec2/", "A=b+c&X=%7E")
