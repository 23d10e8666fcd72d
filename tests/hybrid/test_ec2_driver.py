"""The ec2 drivers (hybrid.ec2_driver) against moto's EC2 server on loopback: every action
as the daemon calls it, and what really exists in the region afterwards, read with boto3
on the side."""

from __future__ import annotations

import asyncio
import base64
from collections.abc import Iterator
from typing import Any

import boto3
import pytest

from hybrid.ec2_driver import Clients, Ec2Runner
from hybrid.region import Region, parse_capacity
from tests.moto import MotoServer

CAPACITY = "t3.micro=2, m5.large=1"


@pytest.fixture(scope="module")
def moto(tmp_path_factory: pytest.TempPathFactory) -> Iterator[MotoServer]:
    server = MotoServer(tmp_path_factory.mktemp("moto"))
    server.start()
    try:
        yield server
    finally:
        server.stop()


def region(moto: MotoServer, **changes: Any) -> Region:
    settings: dict[str, Any] = dict(host="aws", region_name="us-east-1", endpoint=moto.url,
                                    access_key_id="testing", secret_access_key="testing",
                                    capacity=parse_capacity(CAPACITY))
    settings.update(changes)
    return Region(**settings)


def ec2(moto: MotoServer) -> Any:
    return boto3.client("ec2", region_name="us-east-1", endpoint_url=moto.url,
                        aws_access_key_id="testing", aws_secret_access_key="testing")


def ami(moto: MotoServer) -> str:
    return str(sorted(i["ImageId"] for i in ec2(moto).describe_images(
        Owners=["amazon"])["Images"])[0])


def vm_doc(vm_id: int, sections: str, *, seq: int = 0, context: str = "",
           deploy_id: str = "") -> bytes:
    return (f"<VM><ID>{vm_id}</ID><NAME>burst-{vm_id}</NAME><DEPLOY_ID>{deploy_id}</DEPLOY_ID>"
            f"<TEMPLATE>{sections}{context}</TEMPLATE><HISTORY_RECORDS><HISTORY><SEQ>{seq}"
            "</SEQ></HISTORY></HISTORY_RECORDS></VM>").encode()


def section(image: str, **extra: str) -> str:
    fields = {"AMI": image, **extra}
    return "<EC2>" + "".join(f"<{k}>{v}</{k}>" for k, v in fields.items()) + "</EC2>"


def mine(moto: MotoServer, cloud: str) -> list[dict[str, Any]]:
    pages = ec2(moto).describe_instances(Filters=[{"Name": "tag:nubo-cloud",
                                                   "Values": [cloud]}])
    return [i for r in pages["Reservations"] for i in r["Instances"]]


def run(runner: Ec2Runner, kind: str, action: str, *args: str, doc: bytes = b"") -> Any:
    return asyncio.run(runner.run(kind, "ec2", action, list(args), stdin=doc or None,
                                  timeout=60))


def fields(output: str) -> dict[str, str]:
    return dict(word.split("=", 1) for word in output.split())


def test_a_vm_runs_in_the_region_and_goes(moto: MotoServer) -> None:
    runner = Ec2Runner(region(moto), Clients(), "c-life")
    image = ami(moto)
    doc = vm_doc(7, section(image, INSTANCETYPE="t3.micro", TAGS="team=red, cost=12"),
                 context="<CONTEXT><SSH_PUBLIC_KEY>ssh-ed25519 AAAA me</SSH_PUBLIC_KEY>"
                         "</CONTEXT>")
    deployed = run(runner, "vmm", "deploy", "/x/deployment.0", "aws", "7", "aws", doc=doc)
    assert deployed.ok, deployed.error
    instance_id = deployed.stdout.strip()
    [instance] = mine(moto, "c-life")
    assert instance["InstanceId"] == instance_id and instance["InstanceType"] == "t3.micro"
    tags = {t["Key"]: t["Value"] for t in instance["Tags"]}
    assert tags == {"nubo-cloud": "c-life", "nubo-vm": "7", "nubo-placement": "7.0",
                    "Name": "burst-7", "team": "red", "cost": "12"}
    data = ec2(moto).describe_instance_attribute(InstanceId=instance_id, Attribute="userData")
    assert base64.b64decode(data["UserData"]["Value"]).decode() == (
        "#cloud-config\nssh_authorized_keys:\n  - ssh-ed25519 AAAA me\n")

    polled = fields(run(runner, "vmm", "poll", instance_id, "aws", "7", "aws").stdout)
    assert polled["STATE"] == "a" and polled["AWS_INSTANCE_ID"] == instance_id
    assert polled["AWS_PRIVATE_IP"] and polled["AWS_INSTANCE_TYPE"] == "t3.micro"

    probed = fields(run(runner, "im", "run_probes", "ec2", "3", "aws").stdout)
    assert probed["PUBLIC_CLOUD"] == "YES" and probed["HYPERVISOR"] == "ec2"
    assert probed["EC2_USED"] == "t3.micro=1,m5.large=0"
    assert probed["EC2_FREE"] == "t3.micro=1,m5.large=1"
    assert probed["TOTALCPU"] == str((2 * 2 + 1 * 2) * 100)
    assert probed["USEDMEMORY"] == str(1024 * 1024)

    assert run(runner, "vmm", "save", instance_id, "/x/checkpoint", "aws", "7", "aws").ok
    assert fields(run(runner, "vmm", "poll", instance_id, "aws", "7", "aws").stdout)[
        "STATE"] == "p"
    restored = run(runner, "vmm", "restore", "/x/checkpoint", "aws", "7", "aws",
                   doc=vm_doc(7, section(image), deploy_id=instance_id))
    assert restored.ok, restored.error
    assert run(runner, "vmm", "reboot", instance_id, "aws", "7", "aws").ok
    assert run(runner, "vmm", "shutdown", instance_id, "aws", "7", "aws").ok
    assert mine(moto, "c-life")[0]["State"]["Name"] in ("shutting-down", "terminated")
    assert fields(run(runner, "vmm", "poll", instance_id, "aws", "7", "aws").stdout)[
        "STATE"] == "d"


def test_a_launch_cut_off_by_a_crash_is_found_again_not_repeated(moto: MotoServer) -> None:
    runner = Ec2Runner(region(moto), Clients(), "c-crash")
    doc = vm_doc(8, section(ami(moto)), seq=2)
    first = run(runner, "vmm", "deploy", "/x/deployment.2", "aws", "8", "aws", doc=doc)
    again = Ec2Runner(region(moto), Clients(), "c-crash")  # a restarted daemon
    second = run(again, "vmm", "deploy", "/x/deployment.2", "aws", "8", "aws", doc=doc)
    assert first.ok and second.ok and first.stdout == second.stdout
    assert len(mine(moto, "c-crash")) == 1
    # a new placement (seq 3, after a stop, say) is a new instance
    third = run(again, "vmm", "deploy", "/x/deployment.3", "aws", "8", "aws",
                doc=vm_doc(8, section(ami(moto)), seq=3))
    assert third.ok and third.stdout != first.stdout
    # cancel of a VM whose deploy id was lost finds it by its placement
    gone = run(again, "vmm", "cancel", "one-8", "aws", "8", "aws",
               doc=vm_doc(8, section(ami(moto)), seq=3))
    assert gone.ok
    states = {i["InstanceId"]: i["State"]["Name"] for i in mine(moto, "c-crash")}
    assert states[third.stdout.strip()] in ("shutting-down", "terminated")
    assert states[first.stdout.strip()] == "running"


def test_sections_capacity_and_ec2_errors_are_readable_failures(moto: MotoServer) -> None:
    runner = Ec2Runner(region(moto, capacity=parse_capacity("t3.micro=1")), Clients(), "c-err")
    image = ami(moto)
    other = run(runner, "vmm", "deploy", "d", "aws", "9", "aws",
                doc=vm_doc(9, section(image, HOST="azure-west")))
    assert other.rc == 1 and other.error == (
        'VM 9 has no EC2 section for host aws (add EC2 = [ HOST = "aws", AMI = "ami-..." ] '
        "to run it there)")
    chosen = run(runner, "vmm", "deploy", "d", "aws", "9", "aws",
                 doc=vm_doc(9, section(image, HOST="azure-west", INSTANCETYPE="m5.large")
                            + section(image, HOST="aws")))
    assert chosen.ok, chosen.error  # the section for this host, t3.micro by CAPACITY
    full = run(runner, "vmm", "deploy", "d", "aws", "10", "aws", doc=vm_doc(10, section(image)))
    assert full.rc == 1 and full.error == "host aws is full for t3.micro: 1 of 1 in use"
    kind = run(runner, "vmm", "deploy", "d", "aws", "11", "aws",
               doc=vm_doc(11, section(image, INSTANCETYPE="m5.large")))
    assert kind.error == "host aws may not run m5.large instances (its CAPACITY lists t3.micro)"
    noami = run(runner, "vmm", "deploy", "d", "aws", "12", "aws",
                doc=vm_doc(12, "<EC2><INSTANCETYPE>t3.micro</INSTANCETYPE></EC2>"))
    assert noami.error == "VM 12: its EC2 section for aws has no AMI"
    run(runner, "vmm", "cancel", chosen.stdout.strip(), "aws", "9", "aws")
    bad = run(runner, "vmm", "deploy", "d", "aws", "13", "aws",
              doc=vm_doc(13, section(image, SUBNETID="subnet-0000")))
    assert bad.rc == 1 and bad.error == (
        f"EC2 us-east-1 ({moto.url}): InvalidSubnetID.NotFound: The subnet ID 'subnet-0000' "
        "does not exist"), bad.error
    empty = Ec2Runner(region(moto, capacity=()), Clients(), "c-err")
    probe = run(empty, "im", "run_probes", "ec2", "1", "aws")
    assert probe.rc == 1 and "has no CAPACITY" in probe.error
    nowhere = Ec2Runner(region(moto, endpoint="http://127.0.0.1:9"), Clients(), "c-err")
    unreachable = run(nowhere, "im", "run_probes", "ec2", "1", "aws")
    assert unreachable.rc == 1 and unreachable.error.startswith(
        "cannot reach EC2 us-east-1 (http://127.0.0.1:9)"), unreachable.error
    assert "testing" not in unreachable.error + bad.error  # no secret in any message
    migrate = run(runner, "vmm", "migrate", "i-1", "h2", "aws", "9")
    assert migrate.rc == 1 and "cannot migrate" in migrate.error


def test_polls_of_one_region_share_one_describe(moto: MotoServer) -> None:
    runner = Ec2Runner(region(moto, capacity=parse_capacity("t3.micro=5")), Clients(),
                       "c-poll")
    ids = [run(runner, "vmm", "deploy", "d", "aws", str(v), "aws",
               doc=vm_doc(v, section(ami(moto)))).stdout.strip() for v in (20, 21, 22)]
    calls: list[str] = []
    client = runner._clients.get(runner.region)
    client.meta.events.register("before-call.ec2.DescribeInstances",
                                lambda **kw: calls.append("describe"))

    async def polls() -> list[str]:
        done = await asyncio.gather(*(runner.run("vmm", "ec2", "poll", [i, "aws", "0", "aws"])
                                      for i in ids * 4))
        return [r.stdout for r in done]

    outputs = asyncio.run(polls())
    assert all("STATE=a" in out for out in outputs)
    assert calls == ["describe"]  # 12 polls, one DescribeInstances


def test_user_data_is_the_sections_else_the_contexts(moto: MotoServer) -> None:
    runner = Ec2Runner(region(moto, capacity=parse_capacity("t3.micro=5")), Clients(), "c-ud")
    image = ami(moto)

    def launched(vm_id: int, doc: bytes) -> str:
        done = run(runner, "vmm", "deploy", "d", "aws", str(vm_id), "aws", doc=doc)
        assert done.ok, done.error
        data = ec2(moto).describe_instance_attribute(InstanceId=done.stdout.strip(),
                                                     Attribute="userData")["UserData"]
        return base64.b64decode(data["Value"]).decode() if data else ""

    context = ("<CONTEXT><USER_DATA>#!/bin/sh\necho vm $VMID</USER_DATA>"
               "<SSH_PUBLIC_KEY>ssh-ed25519 K</SSH_PUBLIC_KEY></CONTEXT>")
    assert launched(30, vm_doc(30, section(image, USERDATA="from the section"),
                               context=context)) == "from the section"
    assert launched(31, vm_doc(31, section(image), context=context)) == "#!/bin/sh\necho vm 31"
    assert launched(32, vm_doc(32, section(image))) == ""
