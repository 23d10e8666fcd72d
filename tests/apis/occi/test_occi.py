"""OCCI 1.1/1.2 against a live daemon: one scenario, asserted in each rendering
(text/plain, text/occi, application/occi+json), through a client of our own
(tests/apis/occi/client.py: no OGF OCCI client installs on Python 3.11, reference §4.6)."""

from __future__ import annotations

import time
import xml.etree.ElementTree as ET
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from tests.apis.occi.client import INFRA, RENDERINGS, Occi, Seen
from tests.live import LiveNubo

pytestmark = pytest.mark.slow
PROVIDER = "http://schemas.nubo.cloud/occi/"
KEY = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIOCCItestkey occi@test"


@pytest.fixture(scope="module")
def setup(nubo: LiveNubo) -> dict[str, Any]:
    rpc = nubo.rpc()
    ok, uid, _ = rpc.one.user.allocate(nubo.session, "olivia", "olivia-pw", "core")
    assert ok, uid
    ok, image, _ = rpc.one.image.allocate("olivia:olivia-pw",
                                          'NAME = "debian 12"\nPATH = "/var/tmp/d.img"\n', 1)
    assert ok, image
    return {"image": image, "os_tpl": (PROVIDER + "os_tpl#", f"debian_12_{image}")}


@pytest.fixture(params=RENDERINGS)
def occi(request: pytest.FixtureRequest, nubo: LiveNubo, setup: dict[str, Any]
         ) -> Iterator[Occi]:
    client = Occi(f"http://127.0.0.1:{nubo.port}/", request.param,
                  auth=("olivia", "olivia-pw"))
    yield client
    client.close()


def vm_template(nubo: LiveNubo, location: str) -> ET.Element:
    ok, doc, _ = nubo.rpc().one.vm.info(nubo.session, int(location.rsplit("/", 1)[1]))
    assert ok, doc
    return ET.fromstring(doc).find("TEMPLATE")  # type: ignore[return-value]


def wait_state(occi: Occi, location: str, name: str, state: str, timeout: float = 30,
               action: str = "") -> Seen:
    """Until the entity is in `state` (and offers `action`, when given: a compute is
    `inactive` while it stops, too)."""
    deadline = time.monotonic() + timeout
    while True:
        seen = occi.read(occi.send("GET", location))
        if seen.attributes.get(f"occi.{name}.state") == state and \
                (not action or any(a.endswith("#" + action) for a in seen.actions)):
            return seen
        assert time.monotonic() < deadline, f"{location} stayed {seen.attributes}"
        time.sleep(0.2)


def created(occi: Occi, response: httpx.Response) -> str:
    assert response.status_code == 201, response.text
    location = response.headers["location"]
    assert location.startswith(occi.base)
    assert location in occi.locations(response) or \
        response.headers.get("x-occi-location") == location
    return location


def test_query_interface(occi: Occi, setup: dict[str, Any]) -> None:
    answer = occi.send("GET", "-/")
    assert answer.status_code == 200
    assert "OCCI/1.1" in answer.headers["server"] and "OCCI/1.2" in answer.headers["server"]
    assert answer.headers["content-type"].split(";")[0] == occi.rendering
    well_known = occi.send("GET", ".well-known/org/ogf/occi/-/")
    assert well_known.status_code == 200
    if occi.rendering == "application/occi+json":
        doc = answer.json()
        kinds = {k["scheme"] + k["term"]: k for k in doc["kinds"]}
        assert kinds[INFRA + "compute"]["location"] == occi.base + "compute/"
        assert INFRA + "compute" in kinds and "http://schemas.ogf.org/occi/core#link" in kinds
        mixins = {m["scheme"] + m["term"] for m in doc["mixins"]}
        assert "".join(setup["os_tpl"]) in mixins
        assert PROVIDER + "resource_tpl#t2.micro" in mixins
        assert len(doc["actions"]) == 12
        assert well_known.json() == doc
    else:
        lines = [v for n, v in occi.fields(answer) if n.lower() == "category"]
        text = "\n".join(lines)
        assert f'compute; scheme="{INFRA}"; class="kind"; title="Compute Resource"; ' \
            f'rel="http://schemas.ogf.org/occi/core#resource"; location="{occi.base}compute/"' \
            in text
        assert f'{setup["os_tpl"][1]}; scheme="{setup["os_tpl"][0]}"; class="mixin"' in text
        assert 'stop; scheme="http://schemas.ogf.org/occi/infrastructure/compute/action#"; ' \
            'class="action"; title="Stop the compute"; attributes="method"' in text
        assert occi.fields(well_known) == occi.fields(answer)
    head = occi.http.head(occi.url("-/"), headers={"Accept": occi.rendering})
    assert head.status_code == 200 and head.content == b""


def test_query_interface_filter(nubo: LiveNubo) -> None:
    answer = httpx.get(f"http://127.0.0.1:{nubo.port}/-/", auth=("olivia", "olivia-pw"),
                       headers={"Accept": "text/occi",
                                "Category": f'compute; scheme="{INFRA}"; class="kind"'})
    assert answer.status_code == 200
    assert len(answer.headers.get_list("category")) == 1


def test_compute_lifecycle(nubo: LiveNubo, occi: Occi, setup: dict[str, Any]) -> None:
    net = created(occi, occi.create("network", mixins=[
        ("http://schemas.ogf.org/occi/infrastructure/network#", "ipnetwork")],
        attributes={"occi.core.title": f"lan-{occi.rendering}",
                    "occi.network.address": "10.30.0.0/24",
                    "occi.network.gateway": "10.30.0.1"}))
    answer = occi.create("compute", mixins=[
        setup["os_tpl"], (PROVIDER + "resource_tpl#", "t2.micro"),
        ("http://schemas.ogf.org/occi/infrastructure/credentials#", "ssh_key"),
        ("http://schemas.ogf.org/occi/infrastructure/compute#", "user_data")],
        attributes={"occi.core.title": "web", "occi.compute.hostname": "web.example",
                    "occi.credentials.ssh.publickey": KEY, "occi.compute.userdata": "IyEvYmluL3No"},
        links=[(net, "networkinterface", {"occi.networkinterface.address": "10.30.0.7"})])
    compute = created(occi, answer)
    seen = occi.read(answer)
    assert seen.kind == INFRA + "compute"
    assert "".join(setup["os_tpl"]) in seen.mixins
    assert PROVIDER + "resource_tpl#t2.micro" in seen.mixins
    assert (seen.attributes["occi.compute.cores"], seen.attributes["occi.compute.memory"]) == (1, 1.0)
    assert seen.attributes["occi.compute.hostname"] == "web.example"
    context = vm_template(nubo, compute).find("CONTEXT")
    assert context is not None
    assert (context.findtext("SSH_PUBLIC_KEY"), context.findtext("USER_DATA"),
            context.findtext("HOSTNAME")) == (KEY, "IyEvYmluL3No", "web.example")

    seen = wait_state(occi, compute, "compute", "active")
    (nic,) = [link for link in seen.links if link["kind"] == INFRA + "networkinterface"]
    assert nic["target"] == net and nic["attributes"]["occi.networkinterface.address"] == "10.30.0.7"
    assert nic["attributes"]["occi.networkinterface.mac"] == "02:00:0a:1e:00:07"
    action = "http://schemas.ogf.org/occi/infrastructure/compute/action#"
    assert sorted(seen.actions) == [action + t for t in ("restart", "stop", "suspend")]

    assert occi.action(compute, "compute", "start").status_code == 200  # active: a no-op
    assert occi.action(compute, "compute", "stop", {"method": "acpioff"}).status_code == 200
    stopped = wait_state(occi, compute, "compute", "inactive", action="start")
    assert action + "start" in stopped.actions and action + "save" in stopped.actions
    saved = occi.action(compute, "compute", "save", {"name": f"golden-{occi.rendering[-4:]}"})
    assert saved.status_code == 200, saved.text
    assert occi.action(compute, "compute", "start").status_code == 200
    wait_state(occi, compute, "compute", "active")
    assert occi.action(compute, "compute", "suspend").status_code == 200
    wait_state(occi, compute, "compute", "suspended")
    assert occi.action(compute, "compute", "start").status_code == 200
    wait_state(occi, compute, "compute", "active")
    assert occi.action(compute, "compute", "restart", {"method": "warm"}).status_code == 200
    bad = occi.action(compute, "compute", "restart", {"method": "sideways"})
    assert bad.status_code == 400 and "method" in bad.text

    listed = occi.locations(occi.send("GET", "compute/"))
    assert compute in listed
    assert occi.send("DELETE", compute).status_code == 200
    assert occi.send("GET", compute).status_code == 404
    assert compute not in occi.locations(occi.send("GET", "compute/"))
    assert occi.send("DELETE", net).status_code == 200


def test_storage_and_storagelinks(nubo: LiveNubo, occi: Occi, setup: dict[str, Any]) -> None:
    storage = created(occi, occi.create("storage", attributes={
        "occi.core.title": f"disk-{occi.rendering}", "occi.storage.size": 1.5}))
    seen = occi.read(occi.send("GET", storage))
    assert seen.attributes["occi.storage.size"] == 1.5
    assert seen.attributes["occi.storage.state"] == "online"
    missing = occi.create("storage", attributes={"occi.core.title": "nosize"})
    assert missing.status_code == 400 and "occi.storage.size" in missing.text
    assert occi.action(storage, "storage", "offline").status_code == 200
    assert occi.read(occi.send("GET", storage)).attributes["occi.storage.state"] == "offline"
    assert occi.action(storage, "storage", "online").status_code == 200
    copy = occi.action(storage, "storage", "snapshot")
    assert copy.status_code == 200
    copy_location = copy.headers["x-occi-location"] if "x-occi-location" in copy.headers else \
        occi.locations(copy)[0]

    compute = created(occi, occi.create("compute", mixins=[setup["os_tpl"]]))
    wait_state(occi, compute, "compute", "active")
    link = occi.send("POST", "storagelink/", categories=[
        f'storagelink; scheme="{INFRA}"; class="kind"'], attributes={
        "occi.core.source": compute, "occi.core.target": storage,
        "occi.storagelink.deviceid": "/dev/vdb"}, json_body={
        "kind": INFRA + "storagelink", "source": {"location": compute},
        "target": {"location": storage}, "attributes": {"occi.storagelink.deviceid": "/dev/vdb"}})
    link_location = created(occi, link)
    deadline = time.monotonic() + 30
    while True:
        links = occi.read(occi.send("GET", compute)).links
        storage_links = [x for x in links if x["kind"] == INFRA + "storagelink"]
        if storage_links and storage_links[0]["attributes"].get("occi.storagelink.state") == \
                "active":
            break
        assert time.monotonic() < deadline, links
        time.sleep(0.2)
    assert storage_links[0]["self"] == link_location
    assert storage_links[0]["attributes"]["occi.storagelink.deviceid"] == "/dev/vdb"
    assert occi.send("GET", link_location).status_code == 200
    assert link_location in occi.locations(occi.send("GET", "storagelink/"))
    in_use = occi.send("DELETE", storage)
    assert in_use.status_code == 409
    assert occi.send("DELETE", link_location).status_code == 200
    deadline = time.monotonic() + 30
    while any(x["kind"] == INFRA + "storagelink" for x in occi.read(
            occi.send("GET", compute)).links):
        assert time.monotonic() < deadline
        time.sleep(0.2)
    for location in (compute, storage, copy_location):
        assert occi.send("DELETE", location).status_code == 200
        assert occi.send("GET", location).status_code == 404


def test_network_up_and_down(occi: Occi, setup: dict[str, Any]) -> None:
    net = created(occi, occi.create("network", attributes={
        "occi.core.title": f"dmz-{occi.rendering}", "occi.network.address": "10.40.0.0/28",
        "occi.network.vlan": 40}))
    seen = occi.read(occi.send("GET", net))
    assert (seen.attributes["occi.network.address"], seen.attributes["occi.network.vlan"],
            seen.attributes["occi.network.state"]) == ("10.40.0.0/28", 40, "active")
    assert occi.action(net, "network", "down").status_code == 200
    assert occi.read(occi.send("GET", net)).attributes["occi.network.state"] == "inactive"
    refused = occi.create("compute", mixins=[setup["os_tpl"]],
                          links=[(net, "networkinterface", {})])
    assert refused.status_code == 409 and "down" in refused.text
    assert occi.action(net, "network", "up").status_code == 200
    assert occi.send("DELETE", net).status_code == 200


def test_user_mixins(occi: Occi, setup: dict[str, Any]) -> None:
    term = "team_" + occi.rendering.replace("/", "_").replace("+", "_").replace(".", "_")
    scheme = "http://example.org/tags#"
    mixin = {"term": term, "scheme": scheme, "location": f"/{term}/", "title": "my team"}
    answer = occi.send("POST", "-/", categories=[
        f'{term}; scheme="{scheme}"; class="mixin"; location="/{term}/"'],
        json_body={"mixins": [mixin]})
    assert answer.status_code == 200, answer.text
    compute = created(occi, occi.create("compute", mixins=[setup["os_tpl"]]))
    other = created(occi, occi.create("compute", mixins=[setup["os_tpl"], (scheme, term)]))
    assert occi.send("POST", f"{term}/", locations=[compute],
                     json_body=[compute]).status_code == 200
    assert scheme + term in occi.read(occi.send("GET", compute)).mixins
    assert sorted(occi.locations(occi.send("GET", f"{term}/"))) == sorted([compute, other])
    assert occi.send("PUT", f"{term}/", locations=[other], json_body=[other]).status_code == 200
    assert occi.locations(occi.send("GET", f"{term}/")) == [other]
    assert occi.send("DELETE", f"{term}/", locations=[other],
                     json_body=[other]).status_code == 200
    assert occi.locations(occi.send("GET", f"{term}/")) == []
    refused = occi.send("DELETE", "-/", categories=[f'compute; scheme="{INFRA}"; class="kind"'],
                        json_body={"mixins": [{"term": "compute", "scheme": INFRA,
                                               "location": "/compute/"}]})
    assert refused.status_code == 403
    assert occi.send("DELETE", "-/", categories=[f'{term}; scheme="{scheme}"; class="mixin"'],
                     json_body={"mixins": [mixin]}).status_code == 200
    assert occi.send("GET", f"{term}/").status_code == 404
    for location in (compute, other):
        occi.send("DELETE", location)
