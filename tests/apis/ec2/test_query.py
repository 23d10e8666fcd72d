"""The request parser is the inverse of botocore's EC2Serializer, for every operation."""

from __future__ import annotations

import time
from datetime import UTC, datetime, timedelta, timezone
from typing import Any
from urllib.parse import parse_qsl

import pytest
from botocore.model import OperationModel, Shape
from botocore.serialize import create_serializer
from botocore.utils import percent_encode_sequence

from apis.ec2 import query
from apis.ec2.errors import Ec2Error

OPERATIONS = sorted(query.service_model().operation_names)


class InputMaker:
    """A plausible value for every member of an input shape, as a boto3 user would pass it."""

    def __init__(self) -> None:
        self.count = 0

    def make(self, shape: Shape) -> Any:
        self.count += 1
        kind = shape.type_name
        if kind == "structure":
            return {name: self.make(member) for name, member in shape.members.items()}
        if kind == "list":
            size = max(2 - self.count % 2, shape.metadata.get("min", 0))
            return [self.make(shape.member) for _ in range(size)]
        if kind == "string":
            if shape.enum:
                return shape.enum[self.count % len(shape.enum)]
            text = f"v{self.count} a.b&c=d+e/f%g é"
            return text.ljust(shape.metadata.get("min", 0), "x")
        if kind in ("integer", "long"):
            low = shape.metadata.get("min", 0)
            return min(low + self.count % 7 + 1, shape.metadata.get("max", 2**31))
        if kind in ("float", "double"):
            return max(float(shape.metadata.get("min", 0)), 2.5 + self.count % 3)
        if kind == "boolean":
            return self.count % 2 == 0
        if kind == "timestamp":
            return datetime(2024, 5, 1, 12, 30, 45, 123456, tzinfo=UTC) + timedelta(seconds=self.count)
        if kind == "blob":
            return b"\x00\xffblob" + bytes([self.count % 256])
        raise AssertionError(f"no generator for {kind}")


def wire_pairs(op: OperationModel, params: dict[str, Any]) -> list[tuple[str, str]]:
    """What boto3 would put on the wire, decoded as a server's form parser decodes it."""
    request = create_serializer("ec2").serialize_to_request(params, op)
    body = percent_encode_sequence(request["body"])
    pairs = parse_qsl(body, keep_blank_values=True, strict_parsing=True)
    assert pairs[:2] == [("Action", op.name), ("Version", "2016-11-15")]
    return [(k, v) for k, v in pairs if k not in query.ENVELOPE]


def parse(action: str, *pairs: tuple[str, str]) -> dict[str, Any]:
    return query.parse(query.operation(action), pairs)


def error(action: str, *pairs: tuple[str, str]) -> Ec2Error:
    with pytest.raises(Ec2Error) as caught:
        parse(action, *pairs)
    assert caught.value.status == 400
    return caught.value


# ---- every operation ----------------------------------------------------------------------

@pytest.mark.parametrize("action", OPERATIONS)
def test_round_trip(action: str) -> None:
    op = query.operation(action)
    params = InputMaker().make(op.input_shape)
    assert query.parse(op, wire_pairs(op, params)) == params


def test_the_model_is_the_pinned_one() -> None:
    model = query.service_model()
    assert model.api_version == "2016-11-15"
    assert model.protocol == "ec2"
    assert len(OPERATIONS) == 830


def test_the_model_has_no_maps() -> None:
    # parse() and render() reject map shapes; a model upgrade that adds one must add them.
    model = query.service_model()
    assert all(model.shape_for(name).type_name != "map" for name in model.shape_names)


# ---- the shapes clients send --------------------------------------------------------------

def test_describe_instances() -> None:
    assert parse(
        "DescribeInstances", ("InstanceId.1", "i-1"), ("InstanceId.2", "i-2"),
        ("Filter.1.Name", "instance-state-name"), ("Filter.1.Value.1", "running"),
        ("Filter.1.Value.2", "stopped"), ("Filter.2.Name", "tag:Name"), ("Filter.2.Value.1", "web"),
        ("MaxResults", "5"), ("NextToken", "abc"), ("DryRun", "true"),
    ) == {
        "InstanceIds": ["i-1", "i-2"],
        "Filters": [{"Name": "instance-state-name", "Values": ["running", "stopped"]},
                    {"Name": "tag:Name", "Values": ["web"]}],
        "MaxResults": 5, "NextToken": "abc", "DryRun": True,
    }


def test_run_instances_nesting() -> None:
    assert parse(
        "RunInstances", ("ImageId", "ami-1"), ("MinCount", "1"), ("MaxCount", "2"),
        ("SecurityGroupId.1", "sg-1"), ("SecurityGroup.1", "default"),
        ("Placement.AvailabilityZone", "nubo-1a"),
        ("BlockDeviceMapping.1.DeviceName", "/dev/sda1"),
        ("BlockDeviceMapping.1.Ebs.VolumeSize", "8"),
        ("BlockDeviceMapping.1.Ebs.DeleteOnTermination", "true"),
        ("TagSpecification.1.ResourceType", "instance"),
        ("TagSpecification.1.Tag.1.Key", "Name"), ("TagSpecification.1.Tag.1.Value", "web"),
        ("UserData", "aGVsbG8="),
    ) == {
        "ImageId": "ami-1", "MinCount": 1, "MaxCount": 2,
        "SecurityGroupIds": ["sg-1"], "SecurityGroups": ["default"],
        "Placement": {"AvailabilityZone": "nubo-1a"},
        "BlockDeviceMappings": [{"DeviceName": "/dev/sda1",
                                 "Ebs": {"VolumeSize": 8, "DeleteOnTermination": True}}],
        "TagSpecifications": [{"ResourceType": "instance", "Tags": [{"Key": "Name", "Value": "web"}]}],
        "UserData": "aGVsbG8=",  # a string in the model: the handler decodes it
    }


def test_modify_instance_attribute_attribute_value() -> None:
    assert parse("ModifyInstanceAttribute", ("InstanceId", "i-1"),
                 ("InstanceType.Value", "t2.small")) == {
        "InstanceId": "i-1", "InstanceType": {"Value": "t2.small"}}


def test_empty_request() -> None:
    assert parse("DescribeRegions") == {}


def test_sparse_and_unordered_indices_are_ordered_by_index() -> None:
    assert parse("DescribeInstances", ("InstanceId.10", "c"), ("InstanceId.1", "a"),
                 ("InstanceId.3", "b")) == {"InstanceIds": ["a", "b", "c"]}
    assert parse("DescribeInstances", ("Filter.2.Name", "b"), ("Filter.2.Value.2", "b2"),
                 ("Filter.1.Name", "a"), ("Filter.2.Value.1", "b1")) == {
        "Filters": [{"Name": "a"}, {"Name": "b", "Values": ["b1", "b2"]}]}


def test_scalar_types() -> None:
    assert parse("DescribeInstances", ("DryRun", "TRUE"))["DryRun"] is True
    assert parse("DescribeInstances", ("DryRun", "False"))["DryRun"] is False
    assert parse("DescribeInstances", ("MaxResults", "-7"))["MaxResults"] == -7
    assert parse("ImportKeyPair", ("KeyName", "k"), ("PublicKeyMaterial", "c3NoLXJzYSBB")) == {
        "KeyName": "k", "PublicKeyMaterial": b"ssh-rsa A"}
    assert parse("ImportKeyPair", ("KeyName", "k"), ("PublicKeyMaterial", "c3No\nLXJz\r\nYSBB\n"))[
        "PublicKeyMaterial"] == b"ssh-rsa A"  # wrapped base64 from older tools
    assert parse("CopyImage", ("Name", "n"), ("SourceImageId", "ami-1"), ("SourceRegion", "r"),
                 ("SnapshotCopyCompletionDurationMinutes", "9007199254740993"))[
        "SnapshotCopyCompletionDurationMinutes"] == 9007199254740993
    requirements = "LaunchTemplateData.InstanceRequirements."
    required = (("LaunchTemplateName", "t"), (requirements + "VCpuCount.Min", "1"),
                (requirements + "MemoryMiB.Min", "512"))
    key = requirements + "MemoryGiBPerVCpu.Min"
    for text, number in [("0.5", 0.5), ("2", 2.0), ("1e3", 1000.0), ("-Infinity", float("-inf"))]:
        data = parse("CreateLaunchTemplate", *required, (key, text))
        assert data["LaunchTemplateData"]["InstanceRequirements"] == {
            "VCpuCount": {"Min": 1}, "MemoryMiB": {"Min": 512}, "MemoryGiBPerVCpu": {"Min": number}}
    caught = error("CreateLaunchTemplate", *required, (key, "half"))
    assert caught.code == "InvalidParameterValue"


@pytest.mark.parametrize(("text", "expected"), [
    ("2024-05-01T12:30:45Z", datetime(2024, 5, 1, 12, 30, 45, tzinfo=UTC)),
    ("2024-05-01T12:30:45.123456Z", datetime(2024, 5, 1, 12, 30, 45, 123456, tzinfo=UTC)),
    ("2024-05-01T14:30:45+02:00", datetime(2024, 5, 1, 12, 30, 45, tzinfo=UTC)),
    ("2024-05-01T12:30:45", datetime(2024, 5, 1, 12, 30, 45, tzinfo=UTC)),
    ("1714566645", datetime(2024, 5, 1, 12, 30, 45, tzinfo=UTC)),
])
def test_timestamps_become_aware_utc(text: str, expected: datetime) -> None:
    parsed = parse("DescribeSpotPriceHistory", ("StartTime", text))["StartTime"]
    assert parsed == expected
    assert parsed.utcoffset() == timedelta(0)


def test_timestamp_offsets_are_normalised_to_utc() -> None:
    parsed = parse("DescribeSpotPriceHistory", ("EndTime", "2024-05-01T12:30:45-05:00"))["EndTime"]
    assert parsed.tzinfo is UTC
    assert parsed == datetime(2024, 5, 1, 12, 30, 45, tzinfo=timezone(timedelta(hours=-5)))


# ---- errors --------------------------------------------------------------------------------

REQUIRED = {"ImportKeyPair": (("KeyName", "k"),)}


@pytest.mark.parametrize("key", [
    "Bogus",                   # no such member
    "Filter.1.Nme",            # no such member in a nested structure
    "Filter.1.Value.1.Extra",  # below a scalar
    "MaxResults.1",            # an index on a scalar
    "Filter.1",                # a structure without a member
    "instanceId.1",            # wire names are case-sensitive
    "InstanceIds.1",           # the member name is not the wire name
])
def test_unknown_parameter_names_the_key_as_sent(key: str) -> None:
    caught = error("DescribeInstances", (key, "x"))
    assert caught.code == "UnknownParameter"
    assert caught.message == f"The parameter {key} is not recognized"


def test_missing_parameter() -> None:
    caught = error("TerminateInstances", ("DryRun", "true"))
    assert (caught.code, caught.message) == (
        "MissingParameter", "The request must contain the parameter InstanceId")


def test_missing_nested_parameter_names_the_wire_path() -> None:
    caught = error("ImportVolume", ("AvailabilityZone", "a"), ("Volume.Size", "1"),
                   ("Image.Format", "RAW"), ("Image.Bytes", "1"))
    assert caught.code == "MissingParameter"
    assert caught.message.endswith(" Image.ImportManifestUrl")


@pytest.mark.parametrize(("action", "key", "value"), [
    ("DescribeInstances", "MaxResults", "five"),
    ("DescribeInstances", "MaxResults", "5.0"),
    ("DescribeInstances", "MaxResults", " 5"),
    ("DescribeInstances", "MaxResults", "5_0"),
    ("DescribeInstances", "MaxResults", "٥"),
    ("DescribeInstances", "MaxResults", ""),
    ("DescribeInstances", "DryRun", "yes"),
    ("DescribeInstances", "DryRun", "1"),
    ("DescribeInstances", "DryRun", ""),
    ("ImportKeyPair", "PublicKeyMaterial", "not base64!"),
    ("ImportKeyPair", "PublicKeyMaterial", "abc"),
    ("DescribeSpotPriceHistory", "StartTime", "yesterday"),
    ("DescribeSpotPriceHistory", "StartTime", "2024-13-01T00:00:00Z"),
])
def test_invalid_values_name_the_wire_parameter(action: str, key: str, value: str) -> None:
    caught = error(action, (key, value), *REQUIRED.get(action, ()))
    assert caught.code == "InvalidParameterValue"
    assert caught.message.startswith(f"Value ({value}) for parameter {key} is invalid")


def test_invalid_nested_value_names_the_full_key() -> None:
    caught = error("RunInstances", ("ImageId", "a"), ("MinCount", "1"), ("MaxCount", "1"),
                   ("BlockDeviceMapping.1.Ebs.VolumeSize", "big"))
    assert caught.code == "InvalidParameterValue"
    assert "parameter BlockDeviceMapping.1.Ebs.VolumeSize is invalid" in caught.message


def test_zero_based_and_bare_list_parameters_are_read() -> None:
    """libcloud sends `ResourceId.0` for tags and a bare `KeyName` for one key pair."""
    parsed = query.parse(query.operation("CreateTags"),
                         [("ResourceId.0", "i-1"), ("ResourceId.1", "i-2"),
                          ("Tag.0.Key", "k"), ("Tag.0.Value", "v")])
    assert parsed == {"Resources": ["i-1", "i-2"], "Tags": [{"Key": "k", "Value": "v"}]}
    parsed = query.parse(query.operation("DescribeKeyPairs"), [("KeyName", "k1")])
    assert parsed == {"KeyNames": ["k1"]}


@pytest.mark.parametrize("index", ["-1", "x", "", "1e2", "٣", "+1"])
def test_list_index_must_be_a_whole_number(index: str) -> None:
    caught = error("DescribeInstances", (f"InstanceId.{index}", "i-1"))
    assert caught.code == "InvalidParameterValue"
    assert f"parameter InstanceId.{index} is invalid" in caught.message


def test_a_parameter_given_twice_is_rejected() -> None:
    caught = error("DescribeInstances", ("InstanceId.1", "i-1"), ("InstanceId.01", "i-2"))
    assert caught.code == "InvalidParameterValue"
    caught = error("DescribeInstances", ("MaxResults", "5"), ("MaxResults", "6"))
    assert caught.code == "InvalidParameterValue"


@pytest.mark.parametrize("action", ["Bogus", "describeinstances", "", "DescribeInstances "])
def test_unknown_action(action: str) -> None:
    with pytest.raises(Ec2Error) as caught:
        query.operation(action)
    assert (caught.value.code, caught.value.status) == ("InvalidAction", 400)
    assert caught.value.message == f"The action {action} is not valid for this web service."


def test_envelope() -> None:
    assert {"Action", "Version", "AWSAccessKeyId", "Signature", "SignatureMethod",
            "SignatureVersion", "Timestamp", "Expires", "SecurityToken", "X-Amz-Algorithm",
            "X-Amz-Credential", "X-Amz-Date", "X-Amz-Signature", "X-Amz-SignedHeaders",
            "X-Amz-Security-Token", "X-Amz-Expires"} == query.ENVELOPE
    model = query.service_model()
    for action in OPERATIONS:  # no envelope name is also a top-level wire name
        struct = query._struct(model.operation_model(action).input_shape)
        assert not query.ENVELOPE & struct.fields.keys(), action


def test_envelope_names_are_unknown_parameters_if_not_stripped() -> None:
    assert error("DescribeInstances", ("Action", "DescribeInstances")).code == "UnknownParameter"


# ---- speed ---------------------------------------------------------------------------------

def test_parsing_is_fast() -> None:
    op = query.operation("DescribeInstances")
    pairs = [("Filter.1.Name", "instance-state-name"), ("Filter.1.Value.1", "running"),
             ("Filter.1.Value.2", "stopped"), ("Filter.2.Name", "tag:Name"),
             ("Filter.2.Value.1", "web"), ("Filter.3.Name", "instance-type"),
             ("Filter.3.Value.1", "t2.micro"), ("MaxResults", "50"), ("DryRun", "false")]
    query.parse(op, pairs)
    best = float("inf")
    for _ in range(30):  # the best of many short batches: robust to a busy machine
        start = time.perf_counter()
        for _ in range(100):
            query.parse(op, pairs)
        best = min(best, (time.perf_counter() - start) / 100)
    assert best < 100e-6
