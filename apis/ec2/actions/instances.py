"""Instances: VMs seen through EC2 (reservations are the batches VMs were created in)."""

from __future__ import annotations

import base64
import json
import time
from collections.abc import Sequence
from typing import Any

from apis.ec2 import filters, ids, views
from apis.ec2.actions import Context, action, fingerprint, network, subnets
from apis.ec2.errors import Ec2Error, from_domain, invalid_value
from apis.ec2.states import instance_state
from core import template
from core.errors import CloudError, Forbidden, IdempotencyMismatch, NotFound
from core.lifecycle import LcmState, VmState
from core.service import images, keypairs, tags, vms
from core.service.access import MINE
from core.service.vms import VMInfo

INSTANCE_FILTERS: dict[str, filters.Extractor] = {
    "instance-id": filters.field("InstanceId"),
    "instance-state-name": filters.field("State", "Name"),
    "instance-state-code": filters.field("State", "Code"),
    "instance-type": filters.field("InstanceType"),
    "image-id": filters.field("ImageId"),
    "key-name": filters.field("KeyName"),
    "availability-zone": filters.field("Placement", "AvailabilityZone"),
    "private-ip-address": filters.field("PrivateIpAddress"),
    "ip-address": filters.field("PublicIpAddress"),
    "private-dns-name": filters.field("PrivateDnsName"),
    "dns-name": filters.field("PublicDnsName"),
    "reservation-id": filters.field("ReservationId"),
    "owner-id": filters.field("OwnerId"),
    "client-token": filters.field("ClientToken"),
    "vpc-id": filters.field("VpcId"),
    "subnet-id": filters.field("SubnetId"),
    "network-interface.subnet-id": filters.field("NetworkInterfaces", "SubnetId"),
    "network-interface.vpc-id": filters.field("NetworkInterfaces", "VpcId"),
    "network-interface.mac-address": filters.field("NetworkInterfaces", "MacAddress"),
    "network-interface.network-interface-id": filters.field("NetworkInterfaces",
                                                            "NetworkInterfaceId"),
    "network-interface.addresses.private-ip-address": filters.field(
        "NetworkInterfaces", "PrivateIpAddresses", "PrivateIpAddress"),
    "network-interface.addresses.association.public-ip": filters.field(
        "NetworkInterfaces", "PrivateIpAddresses", "Association", "PublicIp"),
    "association.public-ip": filters.field("NetworkInterfaces", "Association", "PublicIp"),
    "group-id": filters.field("SecurityGroups", "GroupId"),
    "instance.group-id": filters.field("SecurityGroups", "GroupId"),
    "group-name": filters.field("SecurityGroups", "GroupName"),
    "instance.group-name": filters.field("SecurityGroups", "GroupName"),
    "launch-time": filters.field("LaunchTime"),
    "architecture": filters.field("Architecture"),
    "ami-launch-index": filters.field("AmiLaunchIndex"),
    "hypervisor": filters.field("Hypervisor"),
    "root-device-type": filters.field("RootDeviceType"),
}


def _lookup(ctx: Context, public_ids: Sequence[str]) -> list[VMInfo]:
    """The caller's own VMs behind these ids, or InvalidInstanceID.NotFound naming them."""
    wanted = {text: ids.core("instance", text) for text in public_ids}
    found = vms.list_vms(ctx.cloud, ctx.caller, flag=MINE, state=-2, ids=list(wanted.values()),
                         done_since=_horizon(ctx))
    have = {info.vm.id for info in found}
    missing = [text for text, core_id in wanted.items() if core_id not in have]
    if missing:
        raise ids.not_found("instance", ", ".join(missing))
    return found


def _horizon(ctx: Context) -> int:
    return int(time.time() - ctx.cloud.config.terminated_visible)


def _reservations(ctx: Context, infos: Sequence[VMInfo]) -> list[dict[str, Any]]:
    with ctx.cloud.session() as s:
        found = tags.tags_of(s, "vm", [i.vm.id for i in infos if i.vm.id is not None])
    out = views.reservations(infos, owner=ctx.owner, region=ctx.region, tags=found)
    network.annotate(ctx, out)
    return out


@action("DescribeInstances")
def describe_instances(ctx: Context, p: dict[str, Any]) -> dict[str, Any]:
    wanted = p.get("InstanceIds", [])
    limit = p.get("MaxResults")
    if wanted and limit is not None:
        raise Ec2Error("InvalidParameterCombination",
                       "The parameter instancesSet cannot be used with the parameter maxResults")
    if limit is not None and not 5 <= limit <= 1000:
        raise invalid_value("MaxResults", limit, "it must be between 5 and 1000")
    if wanted:
        infos = _lookup(ctx, wanted)
    else:
        infos = vms.list_vms(ctx.cloud, ctx.caller, flag=MINE, state=-2,
                             done_since=_horizon(ctx))
    matches = filters.compile_filters(p.get("Filters", []), INSTANCE_FILTERS)
    infos = _prefilter(infos, p.get("Filters", []))
    out = []
    after = _token_batch(p.get("NextToken"))
    next_token = None
    for reservation in _reservations(ctx, infos):
        batch = ids.core("reservation", reservation["ReservationId"])
        if after is not None and batch <= after:
            continue
        kept = [i for i in reservation["Instances"]
                if matches({**i, "ReservationId": reservation["ReservationId"],
                            "OwnerId": reservation["OwnerId"]})]
        if kept:
            out.append({**reservation, "Instances": kept})
        if limit is not None and len(out) >= limit:
            next_token = _token(batch)
            break
    result: dict[str, Any] = {"Reservations": out}
    if next_token:
        result["NextToken"] = next_token
    return result


# Filters answerable from the VM row alone: applied before any view is built, so a
# selective filter costs what its matches cost (the full filter still runs afterwards).
_ROW_FILTERS: dict[str, Any] = {
    "instance-state-name": lambda info: instance_state(info.vm.state, info.vm.lcm_state)[1],
    "instance-state-code": lambda info: str(instance_state(info.vm.state, info.vm.lcm_state)[0]),
    "instance-id": lambda info: ids.public("instance", info.vm.id or 0),
}


def _prefilter(infos: list[VMInfo], requested: Sequence[dict[str, Any]]) -> list[VMInfo]:
    for f in requested:
        pick = _ROW_FILTERS.get(str(f.get("Name")))
        if pick is None:
            continue
        test = filters.compile_filters([f], {str(f["Name"]): lambda item: [item["v"]]})
        infos = [info for info in infos if test({"v": pick(info)})]
    return infos


def _token(batch: int) -> str:
    return base64.urlsafe_b64encode(json.dumps({"r": batch}).encode()).decode()


def _token_batch(token: str | None) -> int | None:
    if not token:
        return None
    try:
        return int(json.loads(base64.urlsafe_b64decode(token.encode()))["r"])
    except (ValueError, KeyError, TypeError):
        raise invalid_value("NextToken", token, "it is not a token this service issued") from None


def _instance_type(ctx: Context, name: str | None) -> Any:
    name = name or ctx.cloud.config.default_instance_type
    for t in ctx.cloud.config.instance_types:
        if t.name == name:
            return t
    raise invalid_value("InstanceType", name,
                        "see DescribeInstanceTypes for the types this cloud offers")


@action("RunInstances")
def run_instances(ctx: Context, p: dict[str, Any]) -> dict[str, Any]:
    low, high = p.get("MinCount", 1), p.get("MaxCount", 1)
    if not 1 <= low <= high:
        raise invalid_value("MinCount", low, "1 <= MinCount <= MaxCount is required")
    size = _instance_type(ctx, p.get("InstanceType"))
    tmpl = template.Template([("CPU", f"{size.cpu:g}"), ("VCPU", str(size.vcpu)),
                              ("MEMORY", str(size.memory)), ("INSTANCE_TYPE", size.name)])
    image_ref = p.get("ImageId")
    if not image_ref:
        raise Ec2Error("MissingParameter", "The request must contain the parameter ImageId")
    image_id = ids.core("image", image_ref)
    try:
        if images.get_image(ctx.cloud, ctx.caller, image_id=image_id).type != 0:
            raise NotFound("image", image_ref)  # volumes and snapshots are not AMIs
    except (NotFound, Forbidden):
        raise ids.not_found("image", image_ref) from None
    tmpl.add("DISK", {"IMAGE_ID": str(image_id)})
    for mapping in p.get("BlockDeviceMappings", []):
        volume = mapping.get("Ebs", {}).get("VolumeSize")
        if volume:
            tmpl.add("DISK", {"TYPE": "fs", "SIZE": str(int(volume) * 1024), "FORMAT": "raw",
                              "DEV_PREFIX": str(mapping.get("DeviceName", ""))})
    context: dict[str, str] = {"NETWORK": "YES"}
    if p.get("KeyName"):
        try:
            key = keypairs.find(ctx.cloud, ctx.caller, name=p["KeyName"])
        except NotFound:
            raise Ec2Error("InvalidKeyPair.NotFound",
                           f"The key pair '{p['KeyName']}' does not exist") from None
        tmpl.set("KEY_NAME", key.name)
        context["SSH_PUBLIC_KEY"] = key.public_key
    if p.get("UserData"):
        context["USER_DATA"] = str(p["UserData"])
        context["USER_DATA_ENCODING"] = "base64"
    tmpl.add("CONTEXT", context)
    zone = (p.get("Placement") or {}).get("AvailabilityZone")
    if zone:
        if zone != ctx.region + views.ZONE_SUFFIX:
            raise invalid_value("Placement.AvailabilityZone", zone, "no such zone")
        tmpl.set("AVAILABILITY_ZONE", zone)
    # groups named on the network interfaces are the instance's (it has one set)
    groups = [g for n in p.get("NetworkInterfaces", []) for g in n.get("Groups", [])]
    tmpl.set("SECURITY_GROUPS", network.launch_groups(
        ctx, {"SecurityGroupIds": groups} if groups else p))
    nics = subnets.launch_nics(ctx, p)
    for nic in nics:
        tmpl.add("NIC", nic)
    token = p.get("ClientToken", "")
    if len(token) > 64:
        raise invalid_value("ClientToken", token, "at most 64 characters")
    if token:
        tmpl.set("CLIENT_TOKEN", token)
    instance_tags = {t["Key"]: t.get("Value", "")
                     for spec in p.get("TagSpecifications", [])
                     if spec.get("ResourceType", "instance") == "instance"
                     for t in spec.get("Tags", [])}
    if "Name" in instance_tags:
        tmpl.set("NAME", instance_tags["Name"])
    ctx.commit_point()
    try:
        created = vms.create_vms(ctx.cloud, ctx.caller, text=tmpl.dumps(), count=high,
                                 token=token, fingerprint=fingerprint(p))
    except IdempotencyMismatch as exc:
        raise Ec2Error("IdempotentParameterMismatch", str(exc)) from None
    except CloudError as exc:
        raise subnets.nic_error(exc, nics) or exc from None
    if instance_tags:
        tags.set_tags(ctx.cloud, ctx.caller, kind="vm", ids=created, tags=instance_tags)
    infos = vms.list_vms(ctx.cloud, ctx.caller, flag=MINE, state=-2, ids=created)
    return dict(_reservations(ctx, infos)[0])


def _change(ctx: Context, p: dict[str, Any], pick: Any) -> list[dict[str, Any]]:
    """Apply `pick(info) -> action or None` to each instance; report the state changes."""
    infos = _lookup(ctx, p.get("InstanceIds", []))
    plans = [(info, pick(info)) for info in infos]
    ctx.commit_point()
    changes = []
    for info, verb in plans:
        vm_id = info.vm.id
        assert vm_id is not None
        before = instance_state(info.vm.state, info.vm.lcm_state)
        if verb is not None:
            try:
                vms.act(ctx.cloud, ctx.caller, vm_id=vm_id, action=verb)
            except CloudError as exc:
                raise from_domain(exc) from None
        after_vm = vms.get_vm(ctx.cloud, ctx.caller, vm_id=vm_id).vm
        after = instance_state(after_vm.state, after_vm.lcm_state)
        # currentState before previousState, as EC2 answers: libcloud reads the first
        changes.append({"InstanceId": ids.public("instance", vm_id),
                        "CurrentState": {"Code": after[0], "Name": after[1]},
                        "PreviousState": {"Code": before[0], "Name": before[1]}})
    return changes


def _running(info: VMInfo) -> bool:
    return info.vm.state == VmState.ACTIVE and info.vm.lcm_state == LcmState.RUNNING


def _refuse(info: VMInfo, verb: str) -> Ec2Error:
    name = instance_state(info.vm.state, info.vm.lcm_state)[1]
    return Ec2Error("IncorrectInstanceState",
                    f"The instance '{ids.public('instance', info.vm.id or 0)}' is not in a "
                    f"state from which it can be {verb} (it is {name})")


@action("TerminateInstances")
def terminate_instances(ctx: Context, p: dict[str, Any]) -> dict[str, Any]:
    def pick(info: VMInfo) -> str | None:
        if info.vm.state == VmState.DONE:
            return None
        return "shutdown" if _running(info) else "finalize"

    return {"TerminatingInstances": _change(ctx, p, pick)}


@action("StopInstances")
def stop_instances(ctx: Context, p: dict[str, Any]) -> dict[str, Any]:
    def pick(info: VMInfo) -> str | None:
        if info.vm.state in (VmState.STOPPED, VmState.SUSPENDED):
            return None
        if not _running(info):
            raise _refuse(info, "stopped")
        return "cancel" if p.get("Force") else "stop"

    return {"StoppingInstances": _change(ctx, p, pick)}


@action("StartInstances")
def start_instances(ctx: Context, p: dict[str, Any]) -> dict[str, Any]:
    def pick(info: VMInfo) -> str | None:
        if _running(info):
            return None
        if info.vm.state not in (VmState.STOPPED, VmState.SUSPENDED):
            raise _refuse(info, "started")
        return "resume"

    return {"StartingInstances": _change(ctx, p, pick)}


@action("RebootInstances")
def reboot_instances(ctx: Context, p: dict[str, Any]) -> dict[str, Any]:
    def pick(info: VMInfo) -> str | None:
        if not _running(info):
            raise _refuse(info, "rebooted")
        return "reboot"

    _change(ctx, p, pick)
    return {}


@action("DescribeInstanceTypes")
def describe_instance_types(ctx: Context, p: dict[str, Any]) -> dict[str, Any]:
    wanted = set(p.get("InstanceTypes", []))
    known = {t.name for t in ctx.cloud.config.instance_types}
    unknown = wanted - known
    if unknown:
        raise invalid_value("InstanceType", ", ".join(sorted(unknown)), "no such type")
    items = [views.instance_type(t) for t in ctx.cloud.config.instance_types
             if not wanted or t.name in wanted]
    matches = filters.compile_filters(p.get("Filters", []), {
        "instance-type": filters.field("InstanceType"),
        "vcpu-info.default-vcpus": filters.field("VCpuInfo", "DefaultVCpus"),
        "memory-info.size-in-mib": filters.field("MemoryInfo", "SizeInMiB"),
    })
    return {"InstanceTypes": [i for i in items if matches(i)]}


def one_instance(ctx: Context, public_id: str) -> VMInfo:
    """The caller's instance behind a public id (InvalidInstanceID.NotFound otherwise)."""
    return _lookup(ctx, [public_id])[0]


@action("DescribeInstanceAttribute")
def describe_instance_attribute(ctx: Context, p: dict[str, Any]) -> dict[str, Any]:
    info = one_instance(ctx, p["InstanceId"])
    tmpl = template.parse(info.vm.template)
    context = tmpl.vector("CONTEXT") or {}
    values: dict[str, tuple[str, Any]] = {
        "instanceType": ("InstanceType", {"Value": tmpl.get("INSTANCE_TYPE") or ""}),
        "userData": ("UserData", {"Value": context.get("USER_DATA", "")}),
        "disableApiTermination": ("DisableApiTermination", {"Value": False}),
        "disableApiStop": ("DisableApiStop", {"Value": False}),
        "instanceInitiatedShutdownBehavior": ("InstanceInitiatedShutdownBehavior",
                                              {"Value": "stop"}),
        "rootDeviceName": ("RootDeviceName", {"Value": "/dev/sda1"}),
        "blockDeviceMapping": ("BlockDeviceMappings",
                               views.volume_mappings(tmpl, info.vm.stime)),
        "productCodes": ("ProductCodes", []),
        "groupSet": ("Groups", [{"GroupId": g["GroupId"], "GroupName": g.get("GroupName", "")}
                                for g in _reservations(ctx, [info])[0]["Instances"][0]
                                ["SecurityGroups"]]),
        "sourceDestCheck": ("SourceDestCheck", {"Value": True}),
        "ebsOptimized": ("EbsOptimized", {"Value": False}),
        "kernel": ("KernelId", {"Value": ""}),
        "ramdisk": ("RamdiskId", {"Value": ""}),
    }
    name = p["Attribute"]
    if name not in values:
        raise invalid_value("Attribute", name, f"supported: {', '.join(sorted(values))}")
    member, value = values[name]
    return {"InstanceId": p["InstanceId"], member: value}


@action("ModifyInstanceAttribute")
def modify_instance_attribute(ctx: Context, p: dict[str, Any]) -> dict[str, Any]:
    """Only the instance type can change (while the instance is stopped)."""
    info = one_instance(ctx, p["InstanceId"])
    new_type = (p.get("InstanceType") or {}).get("Value")
    if p.get("Attribute") == "instanceType":
        new_type = p.get("Value")
    other = set(p) - {"InstanceId", "InstanceType", "Attribute", "Value"}
    if other or (p.get("Attribute") not in (None, "instanceType")):
        raise Ec2Error("UnsupportedOperation",
                       "Only the instanceType attribute can be modified on this cloud")
    if not new_type:
        raise Ec2Error("MissingParameter", "The request must contain InstanceType.Value")
    size = _instance_type(ctx, new_type)
    if info.vm.state not in (VmState.STOPPED, VmState.HOLD, VmState.PENDING):
        raise _refuse(info, "modified (stop it first)")
    ctx.commit_point()
    vms.resize(ctx.cloud, ctx.caller, vm_id=info.vm.id or 0, cpu=size.cpu, memory=size.memory,
               attributes={"INSTANCE_TYPE": size.name, "VCPU": str(size.vcpu)})
    return {}


@action("GetConsoleOutput")
def get_console_output(ctx: Context, p: dict[str, Any]) -> dict[str, Any]:
    """The guest's serial console as the hypervisor driver captured it (empty until the
    driver writes one: the dummy driver has no console)."""
    info = one_instance(ctx, p["InstanceId"])
    text = vms.console(ctx.cloud, ctx.caller, vm_id=info.vm.id or 0)
    return {"InstanceId": p["InstanceId"], "Timestamp": views.when(time.time()),
            "Output": base64.b64encode(text.encode()).decode() if text else ""}
