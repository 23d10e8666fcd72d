"""Bursting through a live daemon to moto's EC2 server on loopback: the local host fills up,
the next VMs with an EC2 section run in the region, every front door of the first cloud
drives them, the region's capacity is counted from the instances that really exist, EC2's
errors reach the VM readably, and a daemon killed between asking for an instance and
hearing of it launches it only once. What exists in the region is read from moto with
boto3 on the side, never from Nubo.

Tests run in file order on one daemon and one moto server.
"""

from __future__ import annotations

import base64
import xml.etree.ElementTree as ET
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import boto3
import httpx
import pytest

from tests.apis.ec2.test_boto3 import client, keys
from tests.hybrid.proxy import HoldingProxy
from tests.live import FAST_CONF, LiveNubo, call, wait_until
from tests.moto import MotoServer

pytestmark = pytest.mark.slow

SECRET = "moto-secret-never-shown"
OCCI_ACTION = 'scheme="http://schemas.ogf.org/occi/infrastructure/compute/action#"; class="action"'


class Region:
    """The daemon, moto, and what both say."""

    def __init__(self, nubo: LiveNubo, moto: MotoServer, ami: str, proxy: HoldingProxy) -> None:
        self.nubo, self.moto, self.ami, self.proxy = nubo, moto, ami, proxy

    def call(self, method: str, *args: object) -> Any:
        return call(self.nubo, method, *args)

    def host_state(self, name: str) -> str:
        for host in ET.fromstring(self.call("one.hostpool.info")).findall("HOST"):
            if host.findtext("NAME") == name:
                return host.findtext("STATE") or ""
        return ""

    def vm(self, vm_id: int) -> ET.Element:
        return ET.fromstring(self.call("one.vm.info", vm_id))

    def where(self, vm_id: int) -> str:
        records = self.vm(vm_id).findall("HISTORY_RECORDS/HISTORY")
        return records[-1].findtext("HOSTNAME") or "" if records else ""

    def moto_ec2(self) -> Any:
        return boto3.client("ec2", region_name="us-east-1", endpoint_url=self.moto.url,
                            aws_access_key_id="testing", aws_secret_access_key=SECRET)

    def instances(self, vm_id: int) -> list[dict[str, Any]]:
        """The region's instances tagged with this VM, whatever their state."""
        pages = self.moto_ec2().describe_instances(Filters=[
            {"Name": "tag:nubo-vm", "Values": [str(vm_id)]}])
        return [i for r in pages["Reservations"] for i in r["Instances"]]

    def instance_state(self, vm_id: int) -> str:
        [instance] = self.instances(vm_id)
        return str(instance["State"]["Name"])

    def create(self, name: str, *, ec2: bool = True, extra: str = "") -> int:
        text = f'NAME = "{name}"\nCPU = 1\nMEMORY = 256\n' + extra
        if ec2:
            text += f'EC2 = [ AMI = "{self.ami}", INSTANCETYPE = "t3.micro" ]\n'
        return int(self.call("one.vm.allocate", text))

    def nubo_ec2(self) -> Any:
        return client(self.nubo, keys(self.nubo, 0))


@pytest.fixture(scope="module")
def region(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Region]:
    moto = MotoServer(tmp_path_factory.mktemp("moto"))
    moto.start()
    proxy = HoldingProxy(moto.port, hold=15.0)
    nubo: LiveNubo | None = None
    try:
        conf = (FAST_CONF + "REGISTER_LOCALHOST = NO\n"
                f'HYBRID_REGION = [ HOST = "aws", ENDPOINT = "{moto.url}", '
                f'ACCESS_KEY_ID = "testing", SECRET_ACCESS_KEY = "{SECRET}", '
                'CAPACITY = "t3.micro=3" ]\n'
                f'HYBRID_REGION = [ HOST = "slow", ENDPOINT = "{proxy.url}", '
                f'ACCESS_KEY_ID = "testing", SECRET_ACCESS_KEY = "{SECRET}", '
                'CAPACITY = "t3.micro=5" ]\n')
        nubo = LiveNubo(tmp_path_factory.mktemp("burst-nubo"), conf=conf)
        nubo.start()
        nubo.cli("host", "create", "local", "--im", "dummy", "--vmm", "dummy",
                 "--attr", "DUMMY_TOTALCPU=200")
        nubo.cli("host", "create", "aws", "--im", "ec2", "--vmm", "ec2")
        images = boto3.client("ec2", region_name="us-east-1", endpoint_url=moto.url,
                              aws_access_key_id="testing", aws_secret_access_key=SECRET
                              ).describe_images(Owners=["amazon"])["Images"]
        made = Region(nubo, moto, sorted(i["ImageId"] for i in images)[0], proxy)
        for name in ("local", "aws"):
            wait_until(f"{name} monitored", lambda n=name: made.host_state(n) == "2")
        yield made
    finally:
        if nubo is not None:
            nubo.stop()
        proxy.close()
        moto.stop()


def test_what_the_local_host_cannot_take_bursts_to_the_region(region: Region) -> None:
    first = [region.create(f"web{i}") for i in range(2)]
    for vm_id in first:
        region.nubo.wait_vm(vm_id, "RUNNING")
        assert region.where(vm_id) == "local" and region.instances(vm_id) == []
    burst = region.create("web2", extra='CONTEXT = [ SSH_PUBLIC_KEY = "ssh-ed25519 AAAA u" ]\n')
    region.nubo.wait_vm(burst, "RUNNING")
    assert region.where(burst) == "aws"
    [instance] = region.instances(burst)
    doc = region.vm(burst)
    assert doc.findtext("DEPLOY_ID") == instance["InstanceId"]
    assert instance["InstanceType"] == "t3.micro" and instance["ImageId"] == region.ami
    data = region.moto_ec2().describe_instance_attribute(InstanceId=instance["InstanceId"],
                                                         Attribute="userData")
    assert b"ssh-ed25519 AAAA u" in base64.b64decode(data["UserData"]["Value"])
    wait_until("the poll's addresses on the VM", lambda: region.vm(burst).findtext(
        "MONITORING/AWS_PRIVATE_IP") == instance["PrivateIpAddress"])
    [seen] = [i for r in region.nubo_ec2().describe_instances(
        InstanceIds=[f"i-{burst:08x}"])["Reservations"] for i in r["Instances"]]
    assert seen["PrivateIpAddress"] == instance["PrivateIpAddress"]  # the region's address
    local_only = region.create("no-ec2", ec2=False)
    wait_until("the VM without EC2 section to wait", lambda: "room" in (
        region.vm(local_only).findtext("USER_TEMPLATE/SCHED_MESSAGE") or ""))
    message = region.vm(local_only).findtext("USER_TEMPLATE/SCHED_MESSAGE") or ""
    assert "public clouds" not in message and region.instances(local_only) == []
    region.call("one.vm.action", "finalize", local_only)
    wait_until("aws's probe to count it", lambda: "t3.micro=1" in region.nubo.cli(
        "host", "show", "aws").stdout)
    shown = region.nubo.cli("host", "show", "aws").stdout
    assert "EC2_CAPACITY" in shown and "EC2_FREE" in shown and "PUBLIC_CLOUD" in shown
    for text in (shown, region.call("one.host.info", 1), region.call("one.hostpool.info"),
                 region.nubo.log_path.read_text()):
        assert SECRET not in text


def test_every_front_door_drives_a_vm_in_the_region(region: Region) -> None:
    vm_id = region.create("driven", extra='REQUIREMENTS = "PUBLIC_CLOUD = YES"\n')
    region.nubo.wait_vm(vm_id, "RUNNING")
    assert region.where(vm_id) == "aws"
    instance_id = region.vm(vm_id).findtext("DEPLOY_ID")
    ec2 = region.nubo_ec2()
    mine = f"i-{vm_id:08x}"  # the first cloud's own name for it
    ec2.stop_instances(InstanceIds=[mine])
    region.nubo.wait_vm(vm_id, "STOPPED")
    assert region.instance_state(vm_id) == "stopped"
    ec2.start_instances(InstanceIds=[mine])
    region.nubo.wait_vm(vm_id, "RUNNING")
    assert region.where(vm_id) == "aws" and region.vm(vm_id).findtext("DEPLOY_ID") == instance_id
    assert region.instance_state(vm_id) == "running" and len(region.instances(vm_id)) == 1

    region.call("one.vm.action", "suspend", vm_id)  # XML-RPC
    region.nubo.wait_vm(vm_id, "SUSPENDED")
    assert region.instance_state(vm_id) == "stopped"
    region.call("one.vm.action", "resume", vm_id)
    region.nubo.wait_vm(vm_id, "RUNNING")
    assert region.instance_state(vm_id) == "running"

    occi(region, vm_id, "stop")
    region.nubo.wait_vm(vm_id, "STOPPED")
    assert region.instance_state(vm_id) == "stopped"
    occi(region, vm_id, "start")
    region.nubo.wait_vm(vm_id, "RUNNING")
    assert region.instance_state(vm_id) == "running" and len(region.instances(vm_id)) == 1
    occi(region, vm_id, "restart")
    wait_until("the reboot logged", lambda: "ec2/reboot succeeded" in region.nubo.cli(
        "vm", "log", str(vm_id)).stdout)

    local_id = next(int(h.findtext("ID") or -1) for h in ET.fromstring(
        region.call("one.hostpool.info")).findall("HOST") if h.findtext("NAME") == "local")
    ok, message, _ = region.nubo.rpc().one.vm.migrate(region.nubo.session, vm_id, local_id,
                                                      False)[:3]
    assert not ok and "host aws is a public cloud: its instances cannot migrate" in message
    image = region.call("one.image.allocate", 'NAME = "data"\nPATH = "/var/tmp/data.img"\n', 1)
    attach = region.nubo.cli("vm", "disk-attach", str(vm_id), str(image), check=False)
    assert attach.returncode == 1 and f"VM {vm_id} runs in public cloud host aws" in attach.stderr

    ec2.terminate_instances(InstanceIds=[mine])
    region.nubo.wait_vm(vm_id, "DONE")
    assert region.instance_state(vm_id) in ("shutting-down", "terminated")


def occi(region: Region, vm_id: int, action: str) -> None:
    answer = httpx.post(
        f"http://127.0.0.1:{region.nubo.port}/compute/{vm_id}?action={action}",
        auth=("oneadmin", region.nubo.password),
        headers={"Content-Type": "text/plain", "Category": f"{action}; {OCCI_ACTION}"})
    assert answer.status_code == 200, answer.text


def test_the_regions_capacity_counts_vms_and_what_exists_there(region: Region) -> None:
    # the region may hold 3 t3.micro: one runs (web2); two more fit, the next one waits
    more = [region.create(f"more{i}") for i in range(3)]
    for vm_id in more[:2]:
        region.nubo.wait_vm(vm_id, "RUNNING")
        assert region.where(vm_id) == "aws"
    wait_until("the third to wait for room", lambda: "aws: no room for t3.micro" in (
        region.vm(more[2]).findtext("USER_TEMPLATE/SCHED_MESSAGE") or ""))
    deleted = httpx.delete(f"http://127.0.0.1:{region.nubo.port}/compute/{more[0]}",
                           auth=("oneadmin", region.nubo.password))  # OCCI
    assert deleted.status_code == 200, deleted.text  # its instance goes: room for one
    region.nubo.wait_vm(more[2], "RUNNING")
    assert region.where(more[2]) == "aws"
    assert region.instance_state(more[0]) in ("shutting-down", "terminated")
    # an instance of this cloud that Nubo does not know of (a launch whose VM was deleted
    # since, say) holds room too, as the probe finds it
    region.call("one.vm.action", "finalize", more[1])
    wait_until("more1's instance to go", lambda: region.instance_state(more[1]) in (
        "shutting-down", "terminated"))
    cloud = next(t["Value"] for t in region.instances(more[2])[0]["Tags"]
                 if t["Key"] == "nubo-cloud")
    region.moto_ec2().run_instances(
        ImageId=region.ami, InstanceType="t3.micro", MinCount=1, MaxCount=1,
        TagSpecifications=[{"ResourceType": "instance", "Tags": [
            {"Key": "nubo-cloud", "Value": cloud}, {"Key": "nubo-vm", "Value": "9999"}]}])
    wait_until("the probe to count it", lambda: "EC2_USED=t3.micro=3" in region.nubo.cli(
        "host", "show", "aws").stdout.replace('"', "").replace(" ", ""))
    late = region.create("late")
    wait_until("the late VM to wait for room", lambda: "aws: no room for t3.micro" in (
        region.vm(late).findtext("USER_TEMPLATE/SCHED_MESSAGE") or ""))
    for vm_id in (more[2], late):
        region.call("one.vm.action", "finalize", vm_id)


def test_ec2_errors_are_the_vms_readable_failure(region: Region) -> None:
    vm_id = int(region.call("one.vm.allocate", 'NAME = "bad-subnet"\nCPU = 1\nMEMORY = 256\n'
                            'REQUIREMENTS = "PUBLIC_CLOUD = YES"\n'
                            f'EC2 = [ AMI = "{region.ami}", SUBNETID = "subnet-0000" ]\n'))
    wait_until("the VM FAILED", lambda: region.vm(vm_id).findtext("STATE") == "7")
    error = region.vm(vm_id).findtext("USER_TEMPLATE/ERROR") or ""
    assert "InvalidSubnetID.NotFound: The subnet ID 'subnet-0000' does not exist" in error
    assert region.instances(vm_id) == []


def test_a_daemon_killed_mid_launch_launches_only_once(region: Region) -> None:
    region.nubo.cli("host", "create", "slow", "--im", "ec2", "--vmm", "ec2")
    vm_id = region.create("crashy", extra='REQUIREMENTS = "NAME = \\"slow\\""\n')
    wait_until("the launch to be held back", region.proxy.held.is_set, 30)
    wait_until("the instance to exist", lambda: len(region.instances(vm_id)) == 1)
    region.nubo.kill()  # it asked for the instance; it never heard of it
    region.nubo.start()
    region.nubo.wait_vm(vm_id, "RUNNING", timeout=60)
    [instance] = region.instances(vm_id)
    assert region.vm(vm_id).findtext("DEPLOY_ID") == instance["InstanceId"]
    assert "was launched for this placement before a restart" in region.nubo.cli(
        "vm", "log", str(vm_id)).stdout
    region.call("one.vm.action", "finalize", vm_id)


def test_nothing_in_the_logs_shows_the_secret(region: Region) -> None:
    assert SECRET not in region.nubo.log_path.read_text()
    for path in Path(region.nubo.var).rglob("*.log"):
        assert SECRET not in path.read_text(errors="replace"), path
