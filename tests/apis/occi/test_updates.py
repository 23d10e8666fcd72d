"""OCCI updates, collection operations, pagination, the OGF quote-escaping case and
1.1-era JSON, against a live daemon (raw HTTP and our client)."""

from __future__ import annotations

import json
import time
import xml.etree.ElementTree as ET
from collections.abc import Callable, Iterator
from typing import Any

import httpx
import pytest

from tests.apis.occi.client import INFRA, Occi, category_line
from tests.live import LiveNubo

pytestmark = pytest.mark.slow
PROVIDER = "http://schemas.nubo.cloud/occi/"
ACTION = "http://schemas.ogf.org/occi/infrastructure/compute/action#"


@pytest.fixture(scope="module")
def env(nubo: LiveNubo) -> dict[str, Any]:
    rpc = nubo.rpc()
    ok, uid, _ = rpc.one.user.allocate(nubo.session, "wendy", "wendy-pw", "core")
    assert ok, uid
    ok, image, _ = rpc.one.image.allocate("wendy:wendy-pw", 'NAME = "os"\nPATH = "/o.img"\n', 1)
    assert ok, image
    return {"os_tpl": (PROVIDER + "os_tpl#", f"os_{image}"), "base": f"http://127.0.0.1:{nubo.port}/"}


@pytest.fixture
def clients(env: dict[str, Any]) -> Iterator[Callable[[str], Occi]]:
    made: list[Occi] = []

    def make(rendering: str = "text/plain") -> Occi:
        made.append(Occi(env["base"], rendering, auth=("wendy", "wendy-pw")))
        return made[-1]

    yield make
    for occi in made:
        occi.close()


def wait(occi: Occi, location: str, state: str, action: str = "") -> None:
    deadline = time.monotonic() + 30
    while True:
        seen = occi.read(occi.send("GET", location))
        if seen.attributes["occi.compute.state"] == state and \
                (not action or ACTION + action in seen.actions):
            return
        assert time.monotonic() < deadline, seen
        time.sleep(0.2)


def new_compute(occi: Occi, env: dict[str, Any], **attrs: Any) -> str:
    answer = occi.create("compute", mixins=[env["os_tpl"]], attributes=attrs or None)
    assert answer.status_code == 201, answer.text
    return str(answer.headers["location"])


def test_resize_through_resource_tpl_and_attributes(
        nubo: LiveNubo, env: dict[str, Any], clients: Callable[[str], Occi]) -> None:
    occi = clients("text/plain")
    location = new_compute(occi, env)
    wait(occi, location, "active")
    resize = occi.send("POST", location, categories=[
        category_line("t2.medium", PROVIDER + "resource_tpl#", "mixin")])
    assert resize.status_code == 409 and "stop the compute" in resize.text
    occi.action(location, "compute", "stop")
    wait(occi, location, "inactive", "start")
    resized = occi.send("POST", location, categories=[
        category_line("t2.medium", PROVIDER + "resource_tpl#", "mixin")])
    assert resized.status_code == 200, resized.text
    seen = occi.read(resized)
    assert (seen.attributes["occi.compute.cores"], seen.attributes["occi.compute.memory"]) == (2, 4.0)
    assert PROVIDER + "resource_tpl#t2.medium" in seen.mixins
    ok, doc, _ = nubo.rpc().one.vm.info(nubo.session, int(location.rsplit("/", 1)[1]))
    assert ET.fromstring(doc).findtext("TEMPLATE/INSTANCE_TYPE") == "t2.medium"
    put = occi.send("PUT", location, categories=[category_line("compute", INFRA, "kind")],
                    attributes={"occi.compute.cores": 3, "occi.compute.memory": 2.5})
    assert put.status_code == 200
    assert occi.read(put).attributes["occi.compute.cores"] == 3
    assert occi.send("PUT", location, links=[f'</network/1>; rel="{INFRA}network"']
                     ).status_code == 400
    renamed = occi.send("POST", location, attributes={"occi.core.title": "other"})
    assert renamed.status_code == 400
    occi.send("DELETE", location)


def test_storage_update(env: dict[str, Any], clients: Callable[[str], Occi]) -> None:
    occi = clients("application/occi+json")
    answer = occi.send("POST", "storage/", json_body={
        "kind": INFRA + "storage", "attributes": {"occi": {"storage": {"size": 2},
                                                          "core": {"title": "nested"}}}})
    assert answer.status_code == 201, answer.text  # 1.1-era nested attributes, flattened
    location = answer.headers["location"]
    updated = occi.send("POST", location, json_body={
        "kind": INFRA + "storage", "attributes": {"occi.core.title": "renamed",
                                                  "occi.storage.size": 3,
                                                  "occi.core.summary": "scratch"}})
    assert updated.status_code == 200, updated.text
    attrs = updated.json()["attributes"]
    assert (attrs["occi.core.title"], attrs["occi.storage.size"], attrs["occi.core.summary"]) == \
        ("renamed", 3.0, "scratch")
    resized = occi.send("POST", location, params={"action": "resize"},
                        json_body={"action": "http://schemas.ogf.org/occi/infrastructure/"
                                             "storage/action#resize", "attributes": {"size": 4}})
    assert resized.status_code == 200
    assert occi.read(occi.send("GET", location)).attributes["occi.storage.size"] == 4.0
    occi.send("DELETE", location)


def test_collection_actions_delete_all_and_pages(env: dict[str, Any], clients: Callable[[str], Occi]) -> None:
    occi = clients("text/occi")
    made = [new_compute(occi, env, **{"occi.core.title": f"batch-{i}"}) for i in range(3)]
    for location in made:
        wait(occi, location, "active")
    stop = occi.send("POST", "compute/", params={"action": "stop"},
                     categories=[category_line("stop", ACTION, "action")])
    assert stop.status_code == 200, stop.text
    for location in made:
        wait(occi, location, "inactive", "start")
    again = occi.send("POST", "compute/", params={"action": "suspend"},
                      categories=[category_line("suspend", ACTION, "action")])
    assert again.status_code == 409  # none is running: all or nothing
    first = occi.locations(occi.send("GET", "compute/", params={"page": "1", "number": "2"}))
    second = occi.locations(occi.send("GET", "compute/", params={"page": "2", "number": "2"}))
    assert len(first) == 2 and first + second == occi.locations(occi.send("GET", "compute/"))
    assert occi.send("GET", "compute/", params={"number": "5000"}).status_code == 413
    filtered = httpx.get(env["base"] + "compute/", auth=("wendy", "wendy-pw"), headers={
        "Accept": "text/plain", "X-OCCI-Attribute": 'occi.core.title="batch-1"'})
    assert [line for line in filtered.text.splitlines() if line] == [f"X-OCCI-Location: {made[1]}"]
    assert occi.send("DELETE", "compute/").status_code == 200
    assert occi.locations(occi.send("GET", "compute/")) == []
    for location in made:
        assert occi.send("GET", location).status_code == 404


def test_the_ogf_quote_escaping_case(env: dict[str, Any], clients: Callable[[str], Occi]) -> None:
    """A title holding an escaped quote, a comma and `occi.compute.memory=1.0` must not
    change the memory sent next to it (the OGF 1.1 compliance test)."""
    title = 'my "web", occi.compute.memory=1.0'
    answer = httpx.post(env["base"] + "compute/", auth=("wendy", "wendy-pw"), headers={
        "Accept": "text/occi", "Content-Type": "text/occi",
        "Category": f'compute; scheme="{INFRA}"; class="kind", '
                    f'{env["os_tpl"][1]}; scheme="{env["os_tpl"][0]}"; class="mixin"',
        "X-OCCI-Attribute": 'occi.core.title="my \\"web\\", occi.compute.memory=1.0", '
                            "occi.compute.memory=3.6"})
    assert answer.status_code == 201, answer.text
    assert answer.text == "OK"
    occi = clients("text/occi")
    seen = occi.read(occi.send("GET", answer.headers["location"]))
    assert seen.attributes["occi.core.title"] == title
    assert seen.attributes["occi.compute.memory"] == 3.6
    occi.send("DELETE", answer.headers["location"])


def test_json_entity_rendering(env: dict[str, Any], clients: Callable[[str], Occi]) -> None:
    occi = clients("application/occi+json")
    location = new_compute(occi, env)
    doc = occi.send("GET", location).json()
    assert doc["kind"] == INFRA + "compute" and doc["id"] == location.rsplit("/", 1)[1]
    assert doc["location"] == location and "".join(env["os_tpl"]) in doc["mixins"]
    assert isinstance(doc["attributes"]["occi.compute.cores"], int)
    listing = occi.send("GET", "compute/").json()
    assert [r["location"] for r in listing["resources"]] == [location]
    query = occi.send("GET", "-/").json()
    compute = next(k for k in query["kinds"] if k["term"] == "compute")
    assert compute["parent"] == "http://schemas.ogf.org/occi/core#resource"
    assert compute["attributes"]["occi.compute.state"] == {"mutable": False, "required": False,
                                                           "type": "string"}
    assert json.dumps(doc)  # plain JSON
    occi.send("DELETE", location)


def test_network_interfaces_on_a_stopped_compute(env: dict[str, Any],
                                                 clients: Callable[[str], Occi]) -> None:
    occi = clients("text/plain")
    net = occi.create("network", attributes={"occi.core.title": "nics",
                                             "occi.network.address": "10.50.0.0/29"})
    assert net.status_code == 201, net.text
    network = net.headers["location"]
    compute = new_compute(occi, env)
    wait(occi, compute, "active")

    def attach() -> httpx.Response:
        return occi.send("POST", "networkinterface/", categories=[
            category_line("networkinterface", INFRA, "kind")], attributes={
            "occi.core.source": compute, "occi.core.target": network,
            "occi.networkinterface.address": "10.50.0.3"})

    refused = attach()
    assert refused.status_code == 409 and "stop it first" in refused.text
    occi.action(compute, "compute", "stop")
    wait(occi, compute, "inactive", "start")
    created = attach()
    assert created.status_code == 201, created.text
    link = created.headers["location"]
    (nic,) = occi.read(occi.send("GET", compute)).links
    assert nic["self"] == link and nic["attributes"]["occi.networkinterface.address"] == "10.50.0.3"
    assert occi.send("DELETE", link).status_code == 200
    assert occi.read(occi.send("GET", compute)).links == []
    assert occi.send("GET", link).status_code == 404
    for location in (compute, network):
        assert occi.send("DELETE", location).status_code == 200
