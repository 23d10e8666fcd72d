"""Opt-in, never in CI: one VM bursts to real AWS and is terminated.

Runs only with NUBO_AWS_TEST=1 and AWS credentials in the environment, as boto3 finds them
(AWS_PROFILE, or AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY; AWS_REGION or us-east-1).
It launches one t3.micro of the newest Amazon Linux 2023 image (a few cents), waits until
it runs, and terminates it, whatever happens in between.

    NUBO_AWS_TEST=1 AWS_PROFILE=sandbox .venv/bin/python -m pytest tests/hybrid/test_aws.py -s
"""

from __future__ import annotations

import os
import xml.etree.ElementTree as ET
from collections.abc import Iterator
from typing import Any

import boto3
import pytest

from tests.live import FAST_CONF, LiveNubo, call, wait_until

pytestmark = [pytest.mark.slow, pytest.mark.skipif(
    os.environ.get("NUBO_AWS_TEST") != "1",
    reason="opt-in: NUBO_AWS_TEST=1 and AWS credentials (it spends money); never in CI")]
REGION = os.environ.get("AWS_REGION", "us-east-1")


@pytest.fixture(scope="module")
def aws() -> Any:
    return boto3.client("ec2", region_name=REGION)


@pytest.fixture(scope="module")
def nubo(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveNubo]:
    live = LiveNubo(tmp_path_factory.mktemp("aws"), conf=(
        FAST_CONF + "REGISTER_LOCALHOST = NO\nVM_POLLING_INTERVAL = 10\n"
        f'HYBRID_REGION = [ HOST = "aws", REGION_NAME = "{REGION}", '
        'CAPACITY = "t3.micro=1" ]\n'))
    live.start()
    try:
        live.cli("host", "create", "aws", "--im", "ec2", "--vmm", "ec2")
        yield live
    finally:
        live.stop()


def test_one_vm_runs_in_aws_and_is_terminated(nubo: LiveNubo, aws: Any) -> None:
    images = aws.describe_images(Owners=["amazon"], Filters=[
        {"Name": "name", "Values": ["al2023-ami-2023.*-x86_64"]},
        {"Name": "state", "Values": ["available"]}])["Images"]
    ami = max(images, key=lambda i: i["CreationDate"])["ImageId"]
    vm_id = int(call(nubo, "one.vm.allocate", 'NAME = "nubo-aws-test"\nCPU = 1\nMEMORY = 512\n'
                     f'EC2 = [ AMI = "{ami}", INSTANCETYPE = "t3.micro" ]\n'))
    instance_id = ""
    try:
        nubo.wait_vm(vm_id, "RUNNING", timeout=300)
        instance_id = ET.fromstring(call(nubo, "one.vm.info", vm_id)).findtext("DEPLOY_ID") or ""
        assert instance_id.startswith("i-")
        wait_until("the instance running", lambda: aws.describe_instances(
            InstanceIds=[instance_id])["Reservations"][0]["Instances"][0]["State"]["Name"]
            == "running", 300)
        call(nubo, "one.vm.action", "shutdown", vm_id)
        nubo.wait_vm(vm_id, "DONE", timeout=300)
        state = aws.describe_instances(InstanceIds=[instance_id])["Reservations"][0][
            "Instances"][0]["State"]["Name"]
        assert state in ("shutting-down", "terminated")
    finally:
        if instance_id:
            aws.terminate_instances(InstanceIds=[instance_id])
