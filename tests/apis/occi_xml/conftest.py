"""A live daemon for the OCCI-XML tests, two users with an image and a network each, and
libcloud OpenNebula drivers for them.

The daemon's instance-type table also has `small`, `medium` and `large`: the sizes the
2.0/2.2 driver offers without asking the server (an operator whose users run that driver
defines them the same way in nubo.conf).
"""

from __future__ import annotations

import time
import xml.etree.ElementTree as ET
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import httpx
import pytest
from libcloud.compute.base import NodeDriver
from libcloud.compute.providers import get_driver
from libcloud.compute.types import Provider

from tests.live import FAST_CONF, LiveNubo

SIZES_22 = """
INSTANCE_TYPE = [ NAME = small, CPU = 1, VCPU = 1, MEMORY = 1024 ]
INSTANCE_TYPE = [ NAME = medium, CPU = 4, VCPU = 4, MEMORY = 4096 ]
INSTANCE_TYPE = [ NAME = large, CPU = 8, VCPU = 8, MEMORY = 8192 ]
"""


@dataclass(frozen=True)
class User:
    name: str
    password: str
    image: int  # an OS image of the user's
    network: int  # a RANGED network of the user's

    @property
    def session(self) -> str:
        return f"{self.name}:{self.password}"


@pytest.fixture(scope="module")
def nubo(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveNubo]:
    live = LiveNubo(tmp_path_factory.mktemp("nubo"), conf=FAST_CONF + SIZES_22)
    try:
        live.start()
        yield live
    finally:
        live.stop()


def _user(nubo: LiveNubo, name: str, subnet: int) -> User:
    rpc = nubo.rpc()
    ok, uid, _ = rpc.one.user.allocate(nubo.session, name, f"{name}-pw", "core")
    assert ok, uid
    session = f"{name}:{name}-pw"
    ok, image, _ = rpc.one.image.allocate(
        session, f'NAME = "debian"\nPATH = "/var/tmp/{name}-debian.img"\n', 1)
    assert ok, image
    ok, network, _ = rpc.one.vn.allocate(
        session, f'NAME = "lan"\nTYPE = RANGED\nNETWORK_ADDRESS = "10.{subnet}.0.0"\n'
                 'NETWORK_SIZE = C\n')
    assert ok, network
    return User(name, f"{name}-pw", image, network)


@pytest.fixture(scope="module")
def alice(nubo: LiveNubo) -> User:
    return _user(nubo, "alice", 1)


@pytest.fixture(scope="module")
def bob(nubo: LiveNubo) -> User:
    return _user(nubo, "bob", 2)


@pytest.fixture(scope="module")
def connect(nubo: LiveNubo) -> Iterator[Callable[..., NodeDriver]]:
    """Makes OpenNebula drivers for the test daemon; closes their HTTP sessions at the end."""
    made: list[NodeDriver] = []

    def make(user: User, version: str = "3.8", **kwargs: object) -> NodeDriver:
        secret = kwargs.pop("password", user.password)
        if version == "3.8":  # the driver keeps a plain_auth it was given in its class
            kwargs.setdefault("plain_auth", False)
        driver = get_driver(Provider.OPENNEBULA)(user.name, secret, secure=False,
                                                 host="127.0.0.1", port=nubo.occi_xml_port,
                                                 api_version=version, **kwargs)
        made.append(driver)
        return driver

    yield make
    for driver in made:
        http = getattr(driver.connection, "connection", None)
        if http is not None:
            http.session.close()


@pytest.fixture(scope="module")
def http(nubo: LiveNubo) -> Iterator[Callable[[User], httpx.Client]]:
    """Raw HTTP clients, authenticated as a user with the password itself."""
    clients: list[httpx.Client] = []

    def make(user: User) -> httpx.Client:
        client = httpx.Client(base_url=f"http://127.0.0.1:{nubo.occi_xml_port}",
                              auth=(user.name, user.password), timeout=30)
        clients.append(client)
        return client

    yield make
    for client in clients:
        client.close()


def state(driver: NodeDriver, node_id: str) -> str:
    """The compute's STATE as the server writes it (libcloud folds several into one)."""
    return str(driver.connection.request(f"/compute/{node_id}").object.findtext("STATE"))


def wait_state(driver: NodeDriver, node_id: str, wanted: str, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    seen = ""
    while time.monotonic() < deadline:
        seen = state(driver, node_id)
        if seen == wanted:
            return
        time.sleep(0.1)
    raise AssertionError(f"compute {node_id} did not reach {wanted}: {seen}")


def element(response: httpx.Response) -> ET.Element:
    assert response.headers["content-type"].startswith("application/xml"), response.text
    return ET.fromstring(response.content)

