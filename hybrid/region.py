"""One EC2 region as a host: where it is, who we are there, what it may hold.

A host whose drivers are `ec2` is a region (or any EC2-compatible endpoint). Its settings
come from its template, over a `HYBRID_REGION = [ HOST = "<host name>", ... ]` vector of
nubo.conf (where secrets are better kept), with the same names:

    REGION_NAME        the region (default: us-east-1)
    ENDPOINT           an EC2 endpoint URL (default: the region's AWS endpoint)
    PROFILE            a profile of ~/.aws/credentials and ~/.aws/config
    ACCESS_KEY_ID      a key pair, else boto3's own chain: AWS_ACCESS_KEY_ID and
    SECRET_ACCESS_KEY  AWS_SECRET_ACCESS_KEY, AWS_PROFILE, the shared files, an instance
    SESSION_TOKEN      role...
    CAPACITY           instances it may run, per type: "t3.micro=20, m5.large=4" (the
                       `{t3.micro: 20, m5.large: 4}` form of OpenNebula's ec2_driver.conf
                       is accepted too)
    DEFAULT_TYPE       the type of a VM whose EC2 section names none (default: the first
                       of CAPACITY)

Secrets (SECRET_ACCESS_KEY, SESSION_TOKEN) are never rendered: core.documents masks them,
and nothing here logs them.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Mapping
from dataclasses import dataclass, field

KEYS = ("REGION_NAME", "ENDPOINT", "PROFILE", "ACCESS_KEY_ID", "SECRET_ACCESS_KEY",
        "SESSION_TOKEN", "CAPACITY", "DEFAULT_TYPE")

# (vCPUs, memory MB) of common types; others are counted from DescribeInstanceTypes
# answers when the endpoint has it, else as 1 vCPU and 1 GB
TYPE_SIZES: dict[str, tuple[int, int]] = {
    "t2.nano": (1, 512), "t2.micro": (1, 1024), "t2.small": (1, 2048),
    "t2.medium": (2, 4096), "t2.large": (2, 8192),
    "t3.nano": (2, 512), "t3.micro": (2, 1024), "t3.small": (2, 2048),
    "t3.medium": (2, 4096), "t3.large": (2, 8192), "t3.xlarge": (4, 16384),
    "m1.small": (1, 1740), "m1.medium": (1, 3840), "m1.large": (2, 7680),
    "m1.xlarge": (4, 15360),
    "m5.large": (2, 8192), "m5.xlarge": (4, 16384), "m5.2xlarge": (8, 32768),
    "c5.large": (2, 4096), "c5.xlarge": (4, 8192),
    "r5.large": (2, 16384), "r5.xlarge": (4, 32768),
}
_CAPACITY_ITEM = re.compile(r"^([A-Za-z0-9.\-]+)=(\d+)$")


class RegionError(ValueError):
    """A region's settings are wrong: the message says which and how."""


@dataclass(frozen=True)
class Region:
    host: str
    region_name: str = "us-east-1"
    endpoint: str = ""
    profile: str = ""
    access_key_id: str = ""
    secret_access_key: str = field(default="", repr=False)
    session_token: str = field(default="", repr=False)
    capacity: tuple[tuple[str, int], ...] = ()
    default_type: str = ""

    @property
    def key(self) -> tuple[str, ...]:
        """What a boto3 client is made of: one client per distinct key."""
        return (self.region_name, self.endpoint, self.profile, self.access_key_id,
                self.secret_access_key, self.session_token)

    @property
    def where(self) -> str:
        return f"{self.region_name} ({self.endpoint})" if self.endpoint else self.region_name

    def instance_type(self, wanted: str) -> str:
        return wanted or self.default_type or (self.capacity[0][0] if self.capacity
                                               else "m1.small")


def parse_capacity(text: str) -> tuple[tuple[str, int], ...]:
    """`t3.micro=20, m5.large=4` or `{t3.micro: 20, m5.large: 4}` (ec2_driver.conf's)."""
    body = re.sub(r"\s*[:=]\s*", "=", text.strip().removeprefix("{").removesuffix("}"))
    found: dict[str, int] = {}
    for item in filter(None, re.split(r"[,\s]+", body)):
        match = _CAPACITY_ITEM.match(item)
        if match is None:
            raise RegionError(f"CAPACITY: {item.strip()!r} is not TYPE=COUNT "
                              "(e.g. CAPACITY = \"t3.micro=20, m5.large=4\")")
        found[match.group(1)] = int(match.group(2))
    return tuple(found.items())


def region_for(host: str, attributes: Mapping[str, str],
               defaults: Mapping[str, str] | None = None) -> Region:
    """The region of host `host`: its template's settings over nubo.conf's."""
    merged = {**(defaults or {}), **{k: v for k, v in attributes.items() if k in KEYS and v}}
    return Region(
        host=host,
        region_name=merged.get("REGION_NAME") or "us-east-1",
        endpoint=merged.get("ENDPOINT", ""),
        profile=merged.get("PROFILE", ""),
        access_key_id=merged.get("ACCESS_KEY_ID", ""),
        secret_access_key=merged.get("SECRET_ACCESS_KEY", ""),
        session_token=merged.get("SESSION_TOKEN", ""),
        capacity=parse_capacity(merged.get("CAPACITY", "")),
        default_type=merged.get("DEFAULT_TYPE", ""),
    )


def cloud_tag(seed: str) -> str:
    """A short name for this Nubo installation, in instance tags and client tokens: two
    clouds bursting to one account never take each other's instances."""
    return hashlib.sha256(seed.encode()).hexdigest()[:10]
