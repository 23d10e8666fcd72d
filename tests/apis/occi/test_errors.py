"""OCCI refusals, raw HTTP as odd clients send it: each gets the right status, in the
negotiated rendering, with the Server header, never a 500; and one user never reaches
another's entities. Also the request shapes real clients use (reference §4.7)."""

from __future__ import annotations

from typing import Any

import httpx
import pytest

from tests.apis.occi.client import INFRA
from tests.live import LiveNubo

pytestmark = pytest.mark.slow
PROVIDER = "http://schemas.nubo.cloud/occi/"
COMPUTE = f'compute; scheme="{INFRA}"; class="kind"'


@pytest.fixture(scope="module")
def env(nubo: LiveNubo) -> dict[str, Any]:
    rpc = nubo.rpc()
    for name in ("ursula", "victor"):
        ok, uid, _ = rpc.one.user.allocate(nubo.session, name, name + "-pw", "core")
        assert ok, uid
    ok, image, _ = rpc.one.image.allocate("ursula:ursula-pw", 'NAME = "base"\nPATH = "/b.img"\n', 1)
    assert ok, image
    return {"base": f"http://127.0.0.1:{nubo.port}/", "os_tpl": f"base_{image}"}


def call(env: dict[str, Any], method: str, path: str, *, user: str = "ursula",
         headers: dict[str, str] | None = None, body: str = "",
         auth: Any = "default") -> httpx.Response:
    credentials = (user, user + "-pw") if auth == "default" else auth
    response = httpx.request(method, env["base"] + path, headers=headers or {}, content=body,
                             auth=credentials, timeout=30)
    assert "OCCI/1.1 OCCI/1.2" in response.headers.get("server", ""), response.headers
    assert response.status_code != 500, response.text
    return response


def os_line(env: dict[str, Any]) -> str:
    return f'Category: {env["os_tpl"]}; scheme="{PROVIDER}os_tpl#"; class="mixin"'


def create(env: dict[str, Any], user: str = "ursula") -> str:
    answer = call(env, "POST", "compute/", user=user, headers={"Content-Type": "text/plain"},
                  body=f"Category: {COMPUTE}\n{os_line(env)}\n")
    assert answer.status_code == 201, answer.text
    return answer.headers["location"]


@pytest.mark.parametrize(("headers", "body", "status", "why"), [
    ({"Accept": "application/xml"}, "", 406, "cannot answer"),
    ({"Accept": "text/uri-list"}, "", 200, ""),
    ({"Content-Type": "text/plain"}, "Category: compute\n", 400, "scheme is missing"),
    ({"Content-Type": "text/plain"}, "Hello: there\n", 400, "expected Category"),
    ({"Content-Type": "text/plain"}, f"Category: {COMPUTE}\n", 400, "os_tpl"),
    ({"Content-Type": "application/occi+json"}, "{not json", 400, "does not parse"),
    ({"Content-Type": "application/pdf"}, "%PDF", 406, "cannot read"),
    ({"Content-Type": "text/plain"}, f'Category: {COMPUTE}\nX-OCCI-Attribute: occi.core.title="open\n',
     400, "unterminated"),
    ({"Content-Type": "text/plain"}, f"Category: {COMPUTE}\nCategory: nope; "
     'scheme="http://x.org/y#"; class="mixin"\n', 400, "unknown mixin"),
    ({"Content-Type": "text/plain"}, f"Category: {COMPUTE}\nX-OCCI-Attribute: "
     "occi.compute.state=\"active\"\n", 400, "cannot be set"),
    ({"User-Agent": "rocci-cli OCCI/2.0"}, "", 501, "not 2.0"),
])
def test_bad_requests(env: dict[str, Any], headers: dict[str, str], body: str, status: int,
                      why: str) -> None:
    method = "POST" if body else "GET"
    answer = call(env, method, "compute/", headers=headers, body=body)
    assert answer.status_code == status, answer.text
    assert why in answer.text


def test_authentication(env: dict[str, Any], nubo: LiveNubo) -> None:
    for auth in (None, ("ursula", "wrong")):
        answer = call(env, "GET", "-/", auth=auth)
        assert answer.status_code == 401
        assert answer.headers["www-authenticate"].startswith("Basic realm=")
    ok, token, _ = nubo.rpc().one.user.login("ursula:ursula-pw", "ursula", "", 600, -1)
    assert ok, token
    answer = call(env, "GET", "compute/", auth=None, headers={"X-Auth-Token": token})
    assert answer.status_code == 200
    assert call(env, "GET", "-/", auth=None, headers={"X-Auth-Token": "made-up"}).status_code == 401
    nubo.rpc().one.user.login("ursula:ursula-pw", "ursula", "", 0, -1)  # revoke
    assert call(env, "GET", "compute/", auth=None,
                headers={"X-Auth-Token": token}).status_code == 401


def test_tenants_are_isolated(env: dict[str, Any]) -> None:
    mine = create(env)
    path = mine.removeprefix(env["base"])
    for method in ("GET", "DELETE", "PUT"):
        assert call(env, method, path, user="victor").status_code in (404, 400), method
    assert call(env, "GET", path, user="victor").status_code == 404
    answer = call(env, "POST", path + "?action=stop", user="victor",
                  headers={"Category": 'stop; scheme="http://schemas.ogf.org/occi/'
                                       'infrastructure/compute/action#"; class="action"'})
    assert answer.status_code == 404
    assert mine not in call(env, "GET", "compute/", user="victor").text
    assert env["os_tpl"] not in call(env, "GET", "-/", user="victor").text
    assert call(env, "GET", path).status_code == 200
    assert call(env, "DELETE", path).status_code == 200


def test_entity_errors(env: dict[str, Any]) -> None:
    location = create(env)
    path = location.removeprefix(env["base"])
    assert call(env, "GET", "compute/999999").status_code == 404
    assert call(env, "GET", "compute/abc").status_code == 404
    assert call(env, "GET", "nowhere/at/all/").status_code == 404
    assert call(env, "GET", path, headers={"Accept": "text/uri-list"}).status_code == 400
    assert call(env, "PUT", "compute/424242", headers={"Content-Type": "text/plain"},
                body=f"Category: {COMPUTE}\n").status_code == 400
    assert call(env, "PUT", "-/").status_code == 405
    assert call(env, "PUT", "compute/").status_code == 405
    mismatch = call(env, "POST", path + "?action=stop", headers={
        "Category": 'start; scheme="http://schemas.ogf.org/occi/infrastructure/compute/'
                    'action#"; class="action"'})
    assert mismatch.status_code == 400 and "?action=stop" in mismatch.text
    assert call(env, "POST", path + "?action=fly").status_code == 400
    occi_error = call(env, "GET", "compute/999999", headers={"Accept": "text/occi"})
    assert occi_error.headers["x-occi-error"]
    json_error = call(env, "GET", "compute/999999", headers={"Accept": "application/occi+json"})
    assert json_error.json()["code"] == 404
    assert call(env, "DELETE", path).status_code == 200


def test_real_client_shapes(env: dict[str, Any], nubo: LiveNubo) -> None:
    """IM's odd Content-Type, LFCR line ends, legacy OpenStack context mixins, an
    occi.core.id the server ignores, a Category header with no class."""
    body = "\n\r".join([
        f"Category: compute; scheme=\"{INFRA}\"",
        os_line(env),
        'Category: user_data; scheme="http://schemas.openstack.org/compute/instance#"; '
        'class="mixin"',
        'Category: public_key; scheme="http://schemas.openstack.org/instance/credentials#"; '
        'class="mixin"',
        'X-OCCI-Attribute: occi.core.id="im-1234"',
        'X-OCCI-Attribute: occi.core.title="legacy", occi.compute.memory=3.6',
        'X-OCCI-Attribute: org.openstack.compute.user_data="I2Nsb3VkLWNvbmZpZw=="',
        'X-OCCI-Attribute: org.openstack.credentials.publickey.data="ssh-rsa AAAA im@x"',
    ]) + "\n\r"
    answer = call(env, "POST", "compute/", body=body,
                  headers={"Content-Type": "text/plain,text/occi", "Accept": "text/plain"})
    assert answer.status_code == 201, answer.text
    path = answer.headers["location"].removeprefix(env["base"])
    shown = call(env, "GET", path).text
    assert "occi.compute.memory=3.6" in shown and 'occi.core.title="legacy"' in shown
    ok, doc, _ = nubo.rpc().one.vm.info(nubo.session, int(path.rsplit("/", 1)[1]))
    assert "I2Nsb3VkLWNvbmZpZw==" in doc and "ssh-rsa AAAA im@x" in doc
    both = body.replace("legacy", "both") + \
        'X-OCCI-Attribute: occi.compute.userdata="ZGlmZmVyZW50"\n'
    conflict = call(env, "POST", "compute/", body=both, headers={"Content-Type": "text/plain"})
    assert conflict.status_code == 409
    root = call(env, "GET", "", headers={"Accept": "text/uri-list"})
    assert root.status_code == 200 and answer.headers["location"] in root.text
    assert call(env, "DELETE", path).status_code == 200


def test_ooi_context_spellings(env: dict[str, Any], nubo: LiveNubo) -> None:
    """ooi's typo'd key attribute and its user_data spelling reach the context too."""
    body = "\n".join([
        f"Category: {COMPUTE}", os_line(env),
        'X-OCCI-Attribute: occi.crendentials.ssh.publickey="ssh-ed25519 AAAA ooi@x"',
        'X-OCCI-Attribute: occi.compute.user_data="b29pLWRhdGE="',
    ])
    answer = call(env, "POST", "compute/", body=body, headers={"Content-Type": "text/plain"})
    assert answer.status_code == 201, answer.text
    path = answer.headers["location"].removeprefix(env["base"])
    ok, doc, _ = nubo.rpc().one.vm.info(nubo.session, int(path.rsplit("/", 1)[1]))
    assert "ssh-ed25519 AAAA ooi@x" in doc and "b29pLWRhdGE=" in doc
    assert call(env, "DELETE", path).status_code == 200


def test_a_user_mixin_cannot_take_a_service_location(env: dict[str, Any]) -> None:
    answer = call(env, "POST", "-/", headers={"Content-Type": "text/plain"},
                  body='Category: c; scheme="http://x.org/t#"; class="mixin"; location="/compute/"\n')
    assert answer.status_code == 400 and "taken by the service" in answer.text
