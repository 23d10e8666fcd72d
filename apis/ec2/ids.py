"""Public EC2 ids <-> core integer ids, in one place: `i-0000002a` is VM 42."""

from __future__ import annotations

import re

from apis.ec2.errors import Ec2Error

PREFIXES = {
    "instance": ("i", "InvalidInstanceID"),
    "image": ("ami", "InvalidAMIID"),
    "reservation": ("r", "InvalidReservationID"),
    "keypair": ("key", "InvalidKeyPair"),
    "secgroup": ("sg", "InvalidGroupId"),
    "rule": ("sgr", "InvalidSecurityGroupRuleId"),
    "address": ("eipalloc", "InvalidAllocationID"),
    "association": ("eipassoc", "InvalidAssociationID"),
    "volume": ("vol", "InvalidVolumeID"),
    "snapshot": ("snap", "InvalidSnapshotID"),
    "subnet": ("subnet", "InvalidSubnetID"),  # a virtual network
    "vpc": ("vpc", "InvalidVpcID"),
    "interface": ("eni", "InvalidNetworkInterfaceID"),  # a NIC: VM id << 8 | NIC_ID
}
# where EC2's NotFound code is not the Malformed one's stem
_NOT_FOUND = {"volume": "InvalidVolume", "snapshot": "InvalidSnapshot"}
_PATTERN = re.compile(r"([a-z]+)-([0-9a-f]{8,17})\Z")


def public(kind: str, ident: int) -> str:
    return f"{PREFIXES[kind][0]}-{ident:08x}"


def core(kind: str, text: str) -> int:
    """The core id behind a public id; `<Prefix>.Malformed` (400) if it is not one."""
    prefix, code = PREFIXES[kind]
    found = _PATTERN.match(text)
    if found is None or found.group(1) != prefix:
        raise Ec2Error(f"{code}.Malformed", f"Invalid id: \"{text}\" (expecting \"{prefix}-...\")")
    return int(found.group(2), 16)


def not_found(kind: str, text: str) -> Ec2Error:
    code = _NOT_FOUND.get(kind) or PREFIXES[kind][1]
    what = {"instance": "instance ID", "image": "image id", "keypair": "key pair",
            "subnet": "subnet ID", "vpc": "vpc ID"}.get(kind, kind)
    return Ec2Error(f"{code}.NotFound", f"The {what} '{text}' does not exist")
