"""Cloud-to-cloud: a second Nubo daemon is the first one's region, through its own EC2
front door. A VM of the first cloud with an EC2 section runs as an instance of the
second (owned by the user whose keys the region holds), and stopping, starting and
terminating it in the first cloud does the same in the second. Wrong keys put the region
host in ERROR with EC2's own reason. What the second cloud holds is read through its
XML-RPC API."""

from __future__ import annotations

import xml.etree.ElementTree as ET
from collections.abc import Iterator
from dataclasses import dataclass

import boto3
import pytest
from botocore.config import Config

from tests.live import FAST_CONF, LiveNubo, call, wait_until

pytestmark = pytest.mark.slow


@dataclass
class Clouds:
    first: LiveNubo
    second: LiveNubo
    ami: str  # the second cloud's image, as its EC2 front door names it
    burster: int  # the second cloud's user whose keys the first holds

    def host_doc(self, name: str) -> ET.Element:
        for host in ET.fromstring(call(self.first, "one.hostpool.info")).findall("HOST"):
            if host.findtext("NAME") == name:
                return host
        raise AssertionError(name)

    def remote(self, vm_id: int) -> ET.Element:
        """The second cloud's VM that runs the first cloud's VM `vm_id`, found by the tag
        the first cloud gave the instance."""
        ok, pair, _ = self.second.rpc().one.user.ec2keys(self.second.session, self.burster)
        assert ok, pair
        ec2 = boto3.client("ec2", endpoint_url=f"http://127.0.0.1:{self.second.port}",
                           region_name="us-east-1", aws_access_key_id=pair[0],
                           aws_secret_access_key=pair[1],
                           config=Config(retries={"max_attempts": 1}))
        found = ec2.describe_instances(Filters=[{"Name": "tag:nubo-vm",
                                                 "Values": [str(vm_id)]}])
        ids = [i["InstanceId"] for r in found["Reservations"] for i in r["Instances"]]
        assert len(ids) == 1, ids
        return ET.fromstring(call(self.second, "one.vm.info", int(ids[0][2:], 16)))


@pytest.fixture(scope="module")
def clouds(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Clouds]:
    second = LiveNubo(tmp_path_factory.mktemp("fed-second"),
                      conf=FAST_CONF + "REGISTER_LOCALHOST = NO\n")
    first: LiveNubo | None = None
    try:
        second.start()
        second.cli("host", "create", "metal", "--im", "dummy", "--vmm", "dummy")
        burster = int(call(second, "one.user.allocate", "burster", "burster-pw", ""))
        ok, image, _ = second.rpc().one.image.allocate(  # burster's own image
            "burster:burster-pw", 'NAME = "debian"\nPATH = "/var/tmp/debian.img"\n', 1)
        assert ok, image
        ok, pair, _ = second.rpc().one.user.ec2keys(second.session, burster)
        assert ok, pair
        endpoint = f"http://127.0.0.1:{second.port}"
        first = LiveNubo(tmp_path_factory.mktemp("fed-first"), conf=(
            FAST_CONF + "REGISTER_LOCALHOST = NO\n"
            f'HYBRID_REGION = [ HOST = "peer", ENDPOINT = "{endpoint}", '
            f'ACCESS_KEY_ID = "{pair[0]}", SECRET_ACCESS_KEY = "{pair[1]}", '
            'CAPACITY = "m1.small=2" ]\n'
            f'HYBRID_REGION = [ HOST = "impostor", ENDPOINT = "{endpoint}", '
            f'ACCESS_KEY_ID = "{pair[0]}", SECRET_ACCESS_KEY = "not-the-secret", '
            'CAPACITY = "m1.small=2" ]\n'))
        first.start()
        first.cli("host", "create", "peer", "--im", "ec2", "--vmm", "ec2")
        made = Clouds(first, second, f"ami-{image:08x}", burster)
        wait_until("peer monitored", lambda: made.host_doc("peer").findtext("STATE") == "2")
        yield made
    finally:
        if first is not None:
            first.stop()
        second.stop()


def state(nubo: LiveNubo, vm_id: int) -> tuple[str, str]:
    doc = ET.fromstring(call(nubo, "one.vm.info", vm_id))
    return doc.findtext("STATE") or "", doc.findtext("LCM_STATE") or ""


def test_a_vm_of_the_first_cloud_runs_in_the_second(clouds: Clouds) -> None:
    vm_id = int(call(clouds.first, "one.vm.allocate",
                     'NAME = "fed"\nCPU = 1\nMEMORY = 256\n'
                     f'EC2 = [ AMI = "{clouds.ami}", INSTANCETYPE = "m1.small" ]\n'))
    clouds.first.wait_vm(vm_id, "RUNNING")
    remote = clouds.remote(vm_id)
    remote_id = int(remote.findtext("ID") or -1)
    assert remote.findtext("UID") == str(clouds.burster)
    assert ET.fromstring(call(clouds.first, "one.vm.info", vm_id)).findtext(
        "DEPLOY_ID") == f"i-{remote_id:08x}"
    clouds.second.wait_vm(remote_id, "RUNNING")

    call(clouds.first, "one.vm.action", "stop", vm_id)
    clouds.first.wait_vm(vm_id, "STOPPED", timeout=60)
    assert state(clouds.second, remote_id) == ("4", "0")  # STOPPED there too
    call(clouds.first, "one.vm.action", "resume", vm_id)
    clouds.first.wait_vm(vm_id, "RUNNING", timeout=60)
    clouds.second.wait_vm(remote_id, "RUNNING")
    assert clouds.remote(vm_id).findtext("ID") == str(remote_id)  # the same instance

    call(clouds.first, "one.vm.action", "shutdown", vm_id)
    clouds.first.wait_vm(vm_id, "DONE", timeout=60)
    clouds.second.wait_vm(remote_id, "DONE")


def test_wrong_keys_put_the_region_in_error_with_ec2s_reason(clouds: Clouds) -> None:
    clouds.first.cli("host", "create", "impostor", "--im", "ec2", "--vmm", "ec2")
    wait_until("impostor in ERROR", lambda: clouds.host_doc("impostor").findtext("STATE") == "3")
    error = clouds.host_doc("impostor").findtext("TEMPLATE/ERROR") or ""
    assert error.startswith(f"EC2 us-east-1 (http://127.0.0.1:{clouds.second.port}): "
                            "AuthFailure"), error
    assert "not-the-secret" not in error
