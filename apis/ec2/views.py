"""Core objects as EC2 shape dicts, keyed by the botocore model's member names."""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from datetime import UTC, datetime
from typing import Any

from apis.ec2 import ids
from apis.ec2.states import instance_state
from core import template
from core.config import InstanceType
from core.models import (
    IMAGE_DISABLED,
    IMAGE_ERROR,
    IMAGE_LOCKED,
    IMAGE_READY,
    IMAGE_USED,
    Image,
    KeyPair,
)
from core.service.vms import VMInfo

ZONE_SUFFIX = "a"
ZONE_ID = "nubo-az1"
VPC_ID = "vpc-00000001"  # the one VPC: every virtual network is a subnet of it


def when(epoch: float) -> datetime:
    return datetime.fromtimestamp(epoch, UTC)


def tag_list(tags: Mapping[str, str]) -> list[dict[str, str]]:
    return [{"Key": k, "Value": v} for k, v in sorted(tags.items())]


def instance(info: VMInfo, *, region: str, launch_index: int,
             tags: Mapping[str, str]) -> dict[str, Any]:
    vm = info.vm
    assert vm.id is not None
    tmpl = template.parse(vm.template)
    code, name = instance_state(vm.state, vm.lcm_state)
    disks = tmpl.vectors("DISK")
    image_id = next((d["IMAGE_ID"] for d in disks if d.get("IMAGE_ID", "").isdigit()), None)
    nics = tmpl.vectors("NIC")
    nic_ip = next((n.get("IP", "") for n in nics if n.get("IP")), "")
    public_ip = next((n["PUBLIC_IP"] for n in nics if n.get("PUBLIC_IP")), "")
    host = info.history[-1].hostname if info.history else ""
    item: dict[str, Any] = {
        "InstanceId": ids.public("instance", vm.id),
        "ImageId": ids.public("image", int(image_id)) if image_id else "",
        "State": {"Code": code, "Name": name},
        "PrivateDnsName": host if name == "running" else "",
        "PublicDnsName": "",
        "StateTransitionReason": vm.message if name in ("terminated", "stopped") else "",
        "AmiLaunchIndex": launch_index,
        "ProductCodes": [],
        "InstanceType": tmpl.get("INSTANCE_TYPE") or "",
        "LaunchTime": when(vm.stime),
        "Placement": {"AvailabilityZone": tmpl.get("AVAILABILITY_ZONE") or region + ZONE_SUFFIX,
                      "GroupName": "", "Tenancy": "default"},
        "Monitoring": {"State": "disabled"},
        "Architecture": "x86_64",
        "RootDeviceType": "instance-store",
        "BlockDeviceMappings": volume_mappings(tmpl, vm.stime),
        "VirtualizationType": "hvm",
        "Hypervisor": "xen",
        "ClientToken": tmpl.get("CLIENT_TOKEN") or "",
        "Tags": tag_list(tags),
        # ids only here; apis.ec2.actions.network.annotate adds the names
        "SecurityGroups": [{"GroupId": ids.public("secgroup", int(word))}
                           for word in (tmpl.get("SECURITY_GROUPS") or "").split()
                           if word.isdigit()],
        "VpcId": VPC_ID,
        "NetworkInterfaces": [] if name == "terminated" else
        [interface(vm.id, vm.uid, nic, index, when(vm.stime)) for index, nic in enumerate(nics)],
    }
    if nics and nics[0].get("NETWORK_ID", "").isdigit():
        item["SubnetId"] = ids.public("subnet", int(nics[0]["NETWORK_ID"]))
    if tmpl.get("KEY_NAME"):
        item["KeyName"] = tmpl.get("KEY_NAME")
    if nic_ip:
        item["PrivateIpAddress"] = nic_ip
    if public_ip:
        item["PublicIpAddress"] = public_ip
    if "AWS_" in vm.monitoring:  # it runs in a public cloud: that cloud's addresses
        seen = template.parse(vm.monitoring)
        for key, name in (("PrivateIpAddress", "AWS_PRIVATE_IP"),
                          ("PublicIpAddress", "AWS_PUBLIC_IP"),
                          ("PrivateDnsName", "AWS_PRIVATE_DNS"),
                          ("PublicDnsName", "AWS_PUBLIC_DNS")):
            if seen.get(name) and (key != "PrivateIpAddress" or not nic_ip) \
                    and (key != "PublicIpAddress" or not public_ip):
                item[key] = seen.get(name)
    if vm.message and name in ("terminated", "stopped", "shutting-down"):
        item["StateReason"] = {"Code": "Server.InternalError" if vm.state == 7 else
                               "Client.UserInitiatedShutdown", "Message": vm.message}
    return item


def interface(vm_id: int, uid: int, nic: Mapping[str, str], index: int,
              since: datetime) -> dict[str, Any]:
    """One NIC as an instance's network interface (Groups: see actions.network.annotate)."""
    nic_id = int(nic["NIC_ID"]) if nic.get("NIC_ID", "").isdigit() else index
    owner = f"{uid:012d}"
    item: dict[str, Any] = {
        "NetworkInterfaceId": ids.public("interface", vm_id << 8 | nic_id),
        "VpcId": VPC_ID, "Description": "", "OwnerId": owner, "Status": "in-use",
        "MacAddress": nic.get("MAC", ""), "SourceDestCheck": True, "InterfaceType": "interface",
        "Groups": [], "Ipv6Addresses": [],
        "Attachment": {"DeviceIndex": index, "Status": "attached", "AttachTime": since,
                       "DeleteOnTermination": True}}
    if nic.get("NETWORK_ID", "").isdigit():
        item["SubnetId"] = ids.public("subnet", int(nic["NETWORK_ID"]))
    address: dict[str, Any] = {"Primary": True}
    if nic.get("IP"):
        item["PrivateIpAddress"] = address["PrivateIpAddress"] = nic["IP"]
    if nic.get("PUBLIC_IP"):
        item["Association"] = address["Association"] = {
            "PublicIp": nic["PUBLIC_IP"], "IpOwnerId": owner, "PublicDnsName": ""}
    item["PrivateIpAddresses"] = [address]
    return item


def volume_mappings(tmpl: template.Template, launched: float) -> list[dict[str, Any]]:
    """The instance's volumes (persistent image disks other than the root) as EBS mappings."""
    out = []
    image_disks = [d for d in tmpl.vectors("DISK") if d.get("IMAGE_ID", "").isdigit()]
    for disk in image_disks[1:]:
        if disk.get("CLONE", "YES").upper() != "NO":
            continue
        status, since = attachment(disk, launched)
        out.append({"DeviceName": "/dev/" + disk.get("TARGET", ""), "Ebs": {
            "VolumeId": ids.public("volume", int(disk["IMAGE_ID"])), "Status": status,
            "AttachTime": since, "DeleteOnTermination": False}})
    return out


def attachment(disk: Mapping[str, str], launched: float) -> tuple[str, datetime]:
    """A volume disk's attachment state (from the hotplug flags core.service.disks sets)
    and since when it is attached."""
    status = "attaching" if disk.get("ATTACH") else "detaching" if disk.get("DETACH") \
        else "attached"
    stamp = disk.get("ATTACH_TIME", "")
    return status, when(int(stamp) if stamp.isdigit() else launched)


def reservations(infos: Sequence[VMInfo], *, owner: str, region: str,
                 tags: Mapping[int, Mapping[str, str]]) -> list[dict[str, Any]]:
    """VMs grouped by the request that created them (EC2's reservations), in id order."""
    groups: dict[int, list[VMInfo]] = {}
    for info in infos:
        assert info.vm.id is not None
        groups.setdefault(info.vm.batch or info.vm.id, []).append(info)
    out = []
    for batch, members in groups.items():
        instances = [instance(m, region=region, launch_index=i, tags=tags.get(m.vm.id or 0, {}))
                     for i, m in enumerate(members)]
        out.append({"ReservationId": ids.public("reservation", batch), "OwnerId": owner,
                    "Groups": [], "Instances": instances})
    return out


def image(row: Image, *, tags: Mapping[str, str]) -> dict[str, Any]:
    assert row.id is not None
    state = {IMAGE_READY: "available", IMAGE_USED: "available", IMAGE_DISABLED: "deregistered",
             IMAGE_LOCKED: "pending", IMAGE_ERROR: "failed"}
    return {
        "ImageId": ids.public("image", row.id),
        "ImageLocation": row.path or row.source,
        "State": state.get(row.state, "pending"),
        "OwnerId": f"{row.uid:012d}",
        "CreationDate": when(row.regtime).strftime("%Y-%m-%dT%H:%M:%S.000Z"),
        "Public": row.public,
        "Architecture": "x86_64",
        "ImageType": "machine",
        "Name": row.name,
        "Description": template.parse(row.template).get("DESCRIPTION") or "",
        "RootDeviceType": "instance-store",
        "RootDeviceName": "/dev/sda1",
        "BlockDeviceMappings": [],
        "VirtualizationType": "hvm",
        "Hypervisor": "xen",
        "Tags": tag_list(tags),
    }


def key_pair(row: KeyPair, tags: Mapping[str, str]) -> dict[str, Any]:
    assert row.id is not None
    return {"KeyPairId": ids.public("keypair", row.id), "KeyName": row.name,
            "KeyFingerprint": row.fingerprint, "KeyType": row.public_key.split()[0].replace(
                "ssh-", "").split("-")[0], "Tags": tag_list(tags),
            "PublicKey": row.public_key, "CreateTime": when(row.created)}


def instance_type(t: InstanceType) -> dict[str, Any]:
    return {
        "InstanceType": t.name,
        "CurrentGeneration": True,
        "SupportedUsageClasses": ["on-demand"],
        "SupportedRootDeviceTypes": ["instance-store"],
        "SupportedVirtualizationTypes": ["hvm"],
        "BareMetal": False,
        "Hypervisor": "xen",
        "ProcessorInfo": {"SupportedArchitectures": ["x86_64"]},
        "VCpuInfo": {"DefaultVCpus": t.vcpu, "DefaultCores": t.vcpu,
                     "DefaultThreadsPerCore": 1},
        "MemoryInfo": {"SizeInMiB": t.memory},
        "InstanceStorageSupported": False,
    }


def names(values: Iterable[str]) -> list[str]:
    return sorted(set(values))
