"""aws-cli v1, run as a user runs it, against a live daemon's EC2 Query API.

Every call is an `aws` process (`python -m awscli`) whose HOME holds the `~/.aws` profile
the README documents; nothing of the caller's own AWS environment leaks in. Each call
costs about half a second, so every test keeps to a handful.
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
import re
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import boto3
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from tests.live import ROOT, LiveNubo

pytestmark = pytest.mark.slow

BIN = Path(sys.executable).parent

# The README's profile, with the test daemon's port (and a SigV2 twin of it).
CONFIG = """\
[profile nubo]
region = us-east-1
endpoint_url = http://127.0.0.1:{port}
output = json

[profile nubo-v2]
region = nubo-west
endpoint_url = http://127.0.0.1:{port}
ec2 =
    signature_version = v2

[profile nubo-wrong]
region = us-east-1
endpoint_url = http://127.0.0.1:{port}
"""

CREDENTIALS = """\
[nubo]
aws_access_key_id = {access}
aws_secret_access_key = {secret}

[nubo-v2]
aws_access_key_id = {access}
aws_secret_access_key = {secret}

[nubo-wrong]
aws_access_key_id = {access}
aws_secret_access_key = not-the-secret
"""


def clean_env(home: Path) -> dict[str, str]:
    """The environment of a user whose HOME is `home` and who exported no AWS_* variable."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("AWS_")}
    env.update(HOME=str(home), AWS_CONFIG_FILE=str(home / ".aws" / "config"),
               AWS_SHARED_CREDENTIALS_FILE=str(home / ".aws" / "credentials"))
    return env


class Aws:
    """`aws --profile <profile> ...` for a user whose ~/.aws is `home/.aws`."""

    def __init__(self, home: Path, profile: str = "nubo") -> None:
        self.env = clean_env(home)
        self.env["AWS_PROFILE"] = profile

    def run(self, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        result = subprocess.run([sys.executable, "-m", "awscli", *args], env=self.env,
                                text=True, capture_output=True, timeout=120)
        if check and result.returncode != 0:
            raise AssertionError(f"aws {' '.join(args)} exited {result.returncode}:\n"
                                 f"{result.stdout}\n{result.stderr}")
        return result

    def json(self, *args: str) -> Any:
        return json.loads(self.run(*args).stdout)

    def text(self, *args: str) -> str:
        return self.run(*args).stdout


@pytest.fixture(scope="module")
def home(nubo: LiveNubo, tmp_path_factory: pytest.TempPathFactory) -> Path:
    ok, pair, _ = nubo.rpc().one.user.ec2keys(nubo.session, 0)
    assert ok, pair
    home = tmp_path_factory.mktemp("home")
    (home / ".aws").mkdir()
    (home / ".aws" / "config").write_text(CONFIG.format(port=nubo.port))
    (home / ".aws" / "credentials").write_text(CREDENTIALS.format(access=pair[0], secret=pair[1]))
    return home


@pytest.fixture(scope="module")
def aws(home: Path) -> Aws:
    return Aws(home)


@pytest.fixture(scope="module")
def ami(nubo: LiveNubo) -> str:
    ok, image_id, _ = nubo.rpc().one.image.allocate(
        nubo.session, 'NAME = "debian"\nPATH = "/var/tmp/debian.img"\n', 1)
    assert ok, image_id
    return f"ami-{image_id:08x}"


def test_run_tag_describe(aws: Aws, ami: str) -> None:
    run = aws.json("ec2", "run-instances", "--image-id", ami, "--count", "2",
                   "--instance-type", "t2.micro",
                   "--tag-specifications", "ResourceType=instance,Tags=[{Key=Name,Value=web}]")
    ids = [i["InstanceId"] for i in run["Instances"]]
    assert len(ids) == 2 and run["ReservationId"].startswith("r-")
    assert {(i["State"]["Name"], i["InstanceType"]) for i in run["Instances"]} == \
        {("pending", "t2.micro")}
    assert aws.text("ec2", "create-tags", "--resources", *ids, "--tags", "Key=env,Value=cli") == ""
    found = aws.json("ec2", "describe-instances", "--filters", "Name=tag:env,Values=cli",
                     "--query", "Reservations[].Instances[].InstanceId")
    assert sorted(found) == sorted(ids)
    assert aws.text("ec2", "wait", "instance-running", "--instance-ids", *ids) == ""
    table = aws.text("ec2", "describe-instances", "--instance-ids", *ids, "--output", "table")
    assert "DescribeInstances" in table and all(i in table for i in ids)
    assert table.count("|  running ") == 2 and "|  web " in table and "|  cli " in table
    aws.run("ec2", "terminate-instances", "--instance-ids", *ids)


def test_stop_start_terminate(aws: Aws, ami: str) -> None:
    (iid,) = aws.json("ec2", "run-instances", "--image-id", ami,
                      "--query", "Instances[].InstanceId")
    aws.run("ec2", "wait", "instance-running", "--instance-ids", iid)
    stopping = aws.json("ec2", "stop-instances", "--instance-ids", iid)["StoppingInstances"]
    assert [(s["InstanceId"], s["PreviousState"]["Name"], s["CurrentState"]["Name"])
            for s in stopping] == [(iid, "running", "stopping")]
    aws.run("ec2", "wait", "instance-stopped", "--instance-ids", iid)
    starting = aws.text("ec2", "start-instances", "--instance-ids", iid, "--output", "text")
    assert "PREVIOUSSTATE\t80\tstopped" in starting and "CURRENTSTATE\t0\tpending" in starting
    terminating = aws.json("ec2", "terminate-instances", "--instance-ids", iid,
                           "--query", "TerminatingInstances[].CurrentState.Name")
    assert terminating[0] in ("shutting-down", "terminated")
    aws.run("ec2", "wait", "instance-terminated", "--instance-ids", iid)


def test_launch_options(aws: Aws, ami: str, tmp_path: Path) -> None:
    aws.run("ec2", "create-key-pair", "--key-name", "cli-launch")
    script = tmp_path / "boot.sh"
    script.write_text("#!/bin/sh\necho hello\n")
    run = aws.json("ec2", "run-instances", "--image-id", ami, "--key-name", "cli-launch",
                   "--user-data", f"file://{script}",
                   "--placement", "AvailabilityZone=us-east-1a",
                   "--client-token", "cli-token-1")
    (instance,) = run["Instances"]
    assert instance["KeyName"] == "cli-launch"
    assert instance["Placement"]["AvailabilityZone"] == "us-east-1a"
    assert instance["ClientToken"] == "cli-token-1"
    described = aws.json("ec2", "describe-instances",
                         "--filters", "Name=key-name,Values=cli-launch",
                         "Name=availability-zone,Values=us-east-1a",
                         "--query", "Reservations[].Instances[].[InstanceId,KeyName]")
    assert described == [[instance["InstanceId"], "cli-launch"]]
    aws.run("ec2", "terminate-instances", "--instance-ids", instance["InstanceId"])


def md5_fingerprint(public_openssh: str) -> str:
    digest = hashlib.md5(base64.b64decode(public_openssh.split()[1]),
                         usedforsecurity=False).hexdigest()
    return ":".join(digest[i:i + 2] for i in range(0, len(digest), 2))


def test_key_pairs(aws: Aws, tmp_path: Path) -> None:
    material = aws.text("ec2", "create-key-pair", "--key-name", "cli-made",
                        "--query", "KeyMaterial", "--output", "text")
    assert material.startswith("-----BEGIN RSA PRIVATE KEY-----")
    private = serialization.load_pem_private_key(material.encode(), password=None)
    public = private.public_key().public_bytes(serialization.Encoding.OpenSSH,
                                               serialization.PublicFormat.OpenSSH).decode()
    pub_file = tmp_path / "id_rsa.pub"
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    pub_file.write_bytes(key.public_key().public_bytes(serialization.Encoding.OpenSSH,
                                                       serialization.PublicFormat.OpenSSH)
                         + b" me@laptop\n")
    imported = aws.json("ec2", "import-key-pair", "--key-name", "cli-imported",
                        "--public-key-material", f"fileb://{pub_file}")
    assert imported["KeyFingerprint"] == md5_fingerprint(pub_file.read_text())
    listed = aws.json("ec2", "describe-key-pairs", "--key-names", "cli-made", "cli-imported",
                      "--query", "KeyPairs[].[KeyName,KeyFingerprint]")
    assert sorted(listed) == [["cli-imported", imported["KeyFingerprint"]],
                              ["cli-made", md5_fingerprint(public)]]
    aws.run("ec2", "delete-key-pair", "--key-name", "cli-made")
    aws.run("ec2", "delete-key-pair", "--key-name", "cli-imported")


def test_images_and_instance_types(aws: Aws, ami: str) -> None:
    (image,) = aws.json("ec2", "describe-images", "--owners", "self")["Images"]
    assert (image["ImageId"], image["Name"], image["State"], image["OwnerId"]) == \
        (ami, "debian", "available", "000000000000")
    by_name = aws.text("ec2", "describe-images", "--owners", "self",
                       "--filters", "Name=name,Values=debian",
                       "--query", "Images[0].ImageId", "--output", "text")
    assert by_name.strip() == ami
    rows = aws.text("ec2", "describe-instance-types", "--instance-types", "t2.micro", "m1.small",
                    "--query", "InstanceTypes[].[InstanceType,VCpuInfo.DefaultVCpus,"
                    "MemoryInfo.SizeInMiB]", "--output", "text")
    assert sorted(rows.splitlines()) == ["m1.small\t1\t1740", "t2.micro\t1\t1024"]


def test_errors(home: Path, aws: Aws) -> None:
    missing = aws.run("ec2", "describe-instances", "--instance-ids", "i-7fffffff", check=False)
    assert missing.returncode == 255 and missing.stdout == ""
    assert ("An error occurred (InvalidInstanceID.NotFound) when calling the DescribeInstances "
            "operation: The instance ID 'i-7fffffff' does not exist") in missing.stderr
    wrong = Aws(home, "nubo-wrong").run("ec2", "describe-instances", check=False)
    assert wrong.returncode == 255
    assert "An error occurred (AuthFailure) when calling the DescribeInstances" in wrong.stderr


def test_sigv2_profile(home: Path) -> None:
    """SigV2 names no region: the answer is for the daemon's EC2_REGION, us-east-1."""
    v2 = Aws(home, "nubo-v2").run("--debug", "ec2", "describe-availability-zones",
                                  "--query", "AvailabilityZones[].ZoneName")
    assert "Calculating signature using v2 auth." in v2.stderr
    assert json.loads(v2.stdout) == ["us-east-1a"]


@pytest.fixture
def boto3_env(home: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    for name in [n for n in os.environ if n.startswith("AWS_")]:
        monkeypatch.delenv(name)
    for name, value in clean_env(home).items():
        if name.startswith("AWS_") or name == "HOME":
            monkeypatch.setenv(name, value)
    yield


@pytest.mark.usefixtures("boto3_env")
def test_the_profile_serves_boto3() -> None:
    for profile in ("nubo", "nubo-v2"):
        ec2 = boto3.Session(profile_name=profile).client("ec2")
        try:
            zones = ec2.describe_availability_zones()["AvailabilityZones"]
        finally:
            ec2.close()
        assert [z["ZoneName"] for z in zones] == ["us-east-1a"]


def test_keys_from_nubo_and_endpoint_on_the_command_line(nubo: LiveNubo,
                                                         tmp_path: Path) -> None:
    """No ~/.aws at all: `export $(nubo user keys)`, then --endpoint-url and --region."""
    env = clean_env(tmp_path)
    env.update(PATH=f"{BIN}{os.pathsep}{env.get('PATH', '')}", NUBO_URL=nubo.url,
               ONE_AUTH=str(nubo.var / "one_auth"))
    script = ("export $(nubo user keys)\n"
              f"aws ec2 describe-availability-zones --endpoint-url http://127.0.0.1:{nubo.port}"
              " --region nubo-west --query 'AvailabilityZones[].ZoneName' --output text\n")
    result = subprocess.run(["sh", "-ec", script], env=env, text=True, capture_output=True,
                            timeout=120)
    assert result.returncode == 0, result.stderr
    assert result.stdout.split() == ["nubo-westa"]


def test_readme_volume_commands(aws: Aws, ami: str) -> None:
    """README's volume, snapshot and create-image block, run by bash as written (with a
    real instance id in place of i-00000001)."""
    text = (ROOT / "README.md").read_text()
    section = text[text.index("Volumes are persistent DATABLOCK images"):]
    found = re.search(r"```sh\n(.*?)```", section, re.S)
    assert found, "README has no volume commands"
    instance = aws.json("ec2", "run-instances", "--image-id", ami, "--instance-type",
                        "t2.micro", "--query", "Instances[0].InstanceId")
    aws.run("ec2", "wait", "instance-running", "--instance-ids", instance)
    script = found.group(1).replace("i-00000001", instance)
    env = {**aws.env, "PATH": f"{BIN}{os.pathsep}{aws.env.get('PATH', '')}"}
    result = subprocess.run(["bash", "-euo", "pipefail", "-c", script], env=env, text=True,
                            capture_output=True, timeout=300)
    assert result.returncode == 0, result.stdout + result.stderr
    volumes = aws.json("ec2", "describe-volumes")["Volumes"]
    assert sorted(v["Size"] for v in volumes) == [10, 10]
    assert {v["State"] for v in volumes} == {"available"}
    (snapshot,) = aws.json("ec2", "describe-snapshots", "--owner-ids", "self")["Snapshots"]
    assert snapshot["Description"] == "nightly"
    golden = aws.json("ec2", "describe-images", "--filters", "Name=name,Values=web-golden",
                      "--query", "Images[].ImageId")
    assert len(golden) == 1
    aws.run("ec2", "terminate-instances", "--instance-ids", instance)
