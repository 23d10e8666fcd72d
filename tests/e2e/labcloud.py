"""A live daemon with lab hosts, as the e2e tests on real SSH hosts see it."""

from __future__ import annotations

import time
import xml.etree.ElementTree as ET
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from drivers.lab import Lab
from tests.live import LiveNubo


@dataclass
class Cloud:
    nubo: LiveNubo
    lab: Lab

    def call(self, method: str, *args: object) -> Any:
        """One XML-RPC call as admin: the payload of its `[true, payload, 0]` reply."""
        ok, payload, _ = getattr(self.nubo.rpc(), method)(self.nubo.session, *args)
        assert ok, payload
        return payload

    def host_id(self, name: str) -> int:
        for host in ET.fromstring(self.call("one.hostpool.info")).findall("HOST"):
            if host.findtext("NAME") == name:
                return int(host.findtext("ID") or -1)
        raise AssertionError(f"no host {name}")

    def host_doc(self, name: str) -> ET.Element:
        return ET.fromstring(self.call("one.host.info", self.host_id(name)))

    def vm_doc(self, vm_id: int) -> ET.Element:
        return ET.fromstring(self.call("one.vm.info", vm_id))


def wait_until(what: str, probe: Callable[[], object], timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while not probe():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.1)
