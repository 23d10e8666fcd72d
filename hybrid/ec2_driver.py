"""The `ec2` drivers: a region as a host, in-process over boto3 (core.drivers.Runner).

    im   run_probes    capacity and usage, counted from the instances that exist there
    vmm  deploy        RunInstances (adopts the instance of a launch cut off by a crash)
         shutdown,     TerminateInstances, then waits for shutting-down
         cancel
         save/restore  StopInstances / StartInstances, waiting for stopped / running
         reboot        RebootInstances
         poll          one DescribeInstances answers every poll of the region meanwhile

Every instance Nubo launches carries three tags: `nubo-cloud` (this installation),
`nubo-vm` (the VM id) and `nubo-placement` (VM id and history seq), and a ClientToken made of
the same. Before launching, deploy looks for an instance with that placement tag: a daemon
killed mid-launch and restarted finds the instance it had asked for instead of launching a
second one (whether or not the endpoint honours ClientToken). boto3 calls run in worker
threads, never on the event loop.

The VM says how it runs there in an `EC2 = [ AMI, INSTANCETYPE, KEYPAIR, SECURITYGROUPS,
SUBNETID, USERDATA, TAGS, AVAILABILITYZONE, EBS_OPTIMIZED, PRIVATEIP, ... ]` section; with
several, the one whose HOST (or 3.x's CLOUD) names this host wins, else one naming none.
With no USERDATA, the VM's CONTEXT travels as user data: its USER_DATA as is, else a
cloud-config with its SSH_PUBLIC_KEY.
"""

from __future__ import annotations

import asyncio
import functools
import shlex
import threading
import time
import xml.etree.ElementTree as ET
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from core import context as vm_context
from core import template
from core.drivers import LogFn
from drivers.protocol import (
    RC_NOT_EXECUTABLE,
    RC_SCRIPT_MISSING,
    RC_TIMEOUT,
    DriverResult,
    emit,
    failure,
)
from hybrid.region import TYPE_SIZES, Region

LIVE = ("pending", "running")
HELD = ("pending", "running", "stopping", "stopped")  # counted against the capacity
POLL_LETTER = {"pending": "a", "running": "a", "stopping": "p", "stopped": "p",
               "shutting-down": "d", "terminated": "d"}
POLL_WINDOW = 1.0  # seconds: polls arriving within it share one DescribeInstances
WAIT_STEP = 1.0
UNSUPPORTED = "instances in a public cloud cannot {action} (the ec2 driver)"


class Ec2Error(Exception):
    """A failure to report as the action's error message."""


class Clients:
    """One boto3 EC2 client per distinct region settings (clients are thread-safe;
    sessions are not, so each is made under a lock)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._clients: dict[tuple[str, ...], Any] = {}

    def get(self, region: Region) -> Any:
        with self._lock:
            client = self._clients.get(region.key)
            if client is None:
                client = self._clients[region.key] = _make_client(region)
            return client


def _make_client(region: Region) -> Any:
    import boto3
    from botocore.config import Config as BotoConfig

    keys: dict[str, str] = {}
    if region.access_key_id or region.secret_access_key:
        keys = {"aws_access_key_id": region.access_key_id,
                "aws_secret_access_key": region.secret_access_key}
        if region.session_token:
            keys["aws_session_token"] = region.session_token
    try:
        session = boto3.session.Session(profile_name=region.profile or None, **keys)
    except Exception as exc:  # ProfileNotFound and friends
        raise Ec2Error(_describe(exc, region)) from None
    config = BotoConfig(connect_timeout=5, read_timeout=30,
                        retries={"max_attempts": 3, "mode": "standard"},
                        user_agent_extra="nubo-hybrid")
    return session.client("ec2", region_name=region.region_name,
                          endpoint_url=region.endpoint or None, config=config)


def _describe(exc: Exception, region: Region) -> str:
    """An EC2 failure as one readable line (never with a secret in it)."""
    from botocore import exceptions as bx

    if isinstance(exc, bx.ClientError):
        error = exc.response.get("Error", {})
        code, message = error.get("Code", "Error"), error.get("Message", "")
        return f"EC2 {region.where}: {code}: {message}".rstrip(": ")
    if isinstance(exc, bx.NoCredentialsError):
        return (f"no AWS credentials for host {region.host}: set ACCESS_KEY_ID and "
                "SECRET_ACCESS_KEY or PROFILE (template or HYBRID_REGION in nubo.conf), or "
                "AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY/AWS_PROFILE for the daemon")
    if isinstance(exc, bx.ProfileNotFound):
        return f"host {region.host}: AWS profile {region.profile!r} not found"
    if isinstance(exc, bx.EndpointConnectionError | bx.ConnectTimeoutError
                  | bx.ReadTimeoutError):
        return f"cannot reach EC2 {region.where}: {exc}"
    if isinstance(exc, bx.BotoCoreError):
        return f"EC2 {region.where}: {exc}"
    return f"EC2 {region.where}: {type(exc).__name__}: {exc}"


class Ec2Runner:
    """The drivers of one region host."""

    needs_heartbeat = False  # core.heartbeat: the region's API answers each call itself

    def __init__(self, region: Region, clients: Clients, cloud: str) -> None:
        self.region = region
        self.cloud = cloud  # the nubo-cloud tag value
        self._clients = clients
        self._cache: dict[str, dict[str, Any]] = {}
        self._cached_at = -float("inf")
        self._refresh: asyncio.Future[dict[str, dict[str, Any]]] | None = None

    # --- Runner ---

    async def run(self, kind: str, driver: str, action: str, args: Sequence[str], *,
                  stdin: bytes | None = None, timeout: float = 60.0,
                  log: LogFn | None = None) -> DriverResult:
        words = [str(a) for a in args]
        emit(log, "I", f"Command execution: {kind}/ec2/{shlex.join([action, *words])} "
                       f"(in-process, region {self.region.where})")
        handler = self._handlers().get((kind, action))
        if handler is None:
            if kind == "vmm" and action in ("migrate", "migrate_receive", "attach_disk",
                                            "detach_disk", "reset"):
                result = failure(1, UNSUPPORTED.format(action=action))
            else:
                result = failure(RC_SCRIPT_MISSING, f"the ec2 driver has no {kind} {action}")
        else:
            try:
                async with asyncio.timeout(timeout):
                    out = await handler(words, _document(stdin), log)
                result = DriverResult(0, out, "")
            except TimeoutError:
                result = failure(RC_TIMEOUT, f"timed out after {timeout:g} s")
            except Ec2Error as exc:
                result = failure(1, str(exc))
        if result.ok:
            emit(log, "I", f"ec2/{action} succeeded")
        else:
            emit(log, "E", f"ec2/{action} failed: {result.error}")
        return result

    async def execute(self, argv: Sequence[str], *, stdin: bytes | None = None,
                      timeout: float = 60.0, log: LogFn | None = None,
                      env: Mapping[str, str] | None = None) -> DriverResult:
        return failure(RC_NOT_EXECUTABLE, f"host {self.region.host} is a public cloud "
                       "region: it runs no commands")

    async def beat(self, timeout: float) -> DriverResult:
        return DriverResult(0, "", "")

    def _handlers(self) -> dict[tuple[str, str], Callable[..., Any]]:
        return {("im", "run_probes"): self.monitor, ("vmm", "deploy"): self.deploy,
                ("vmm", "poll"): self.poll, ("vmm", "shutdown"): self.terminate,
                ("vmm", "cancel"): self.terminate, ("vmm", "save"): self.stop,
                ("vmm", "restore"): self.start, ("vmm", "reboot"): self.reboot}

    # --- boto3, off the event loop ---

    async def _call(self, operation: str, **params: Any) -> dict[str, Any]:
        def call() -> dict[str, Any]:
            client = self._clients.get(self.region)
            try:
                answer: dict[str, Any] = getattr(client, operation)(**params)
                return answer
            except Ec2Error:
                raise
            except Exception as exc:
                raise Ec2Error(_describe(exc, self.region)) from None

        return await asyncio.to_thread(call)

    async def _describe(self, **params: Any) -> list[dict[str, Any]]:
        found: list[dict[str, Any]] = []
        token = ""
        while True:
            page = await self._call("describe_instances",
                                    **params, **({"NextToken": token} if token else {}))
            for reservation in page.get("Reservations", []):
                found.extend(reservation.get("Instances", []))
            token = page.get("NextToken", "")
            if not token:
                return found

    async def _ours(self, max_age: float = POLL_WINDOW) -> dict[str, dict[str, Any]]:
        """This cloud's instances in the region by id; one DescribeInstances for every
        caller within `max_age` seconds of the last."""
        if time.monotonic() - self._cached_at <= max_age:
            return self._cache
        if self._refresh is None or self._refresh.done():
            self._refresh = asyncio.ensure_future(self._reload())
        return await asyncio.shield(self._refresh)

    async def _reload(self) -> dict[str, dict[str, Any]]:
        instances = await self._describe(Filters=[{"Name": "tag:nubo-cloud",
                                                   "Values": [self.cloud]}])
        self._cache = {i["InstanceId"]: i for i in instances}
        self._cached_at = time.monotonic()
        return self._cache

    # --- actions ---

    async def monitor(self, args: list[str], doc: ET.Element | None,
                      log: LogFn | None) -> str:
        region = self.region
        if not region.capacity:
            raise Ec2Error(f"host {region.host} has no CAPACITY: say how many instances of "
                           'which types it may run, e.g. CAPACITY = "t3.micro=20"')
        used: dict[str, int] = {}
        for instance in (await self._ours(0)).values():
            if instance.get("State", {}).get("Name") in HELD:
                kind = instance.get("InstanceType", "")
                used[kind] = used.get(kind, 0) + 1
        total_cpu = total_mem = used_cpu = used_mem = 0
        for kind, count in region.capacity:
            vcpu, memory = TYPE_SIZES.get(kind, (1, 1024))
            total_cpu += count * vcpu * 100
            total_mem += count * memory * 1024
            busy = min(used.get(kind, 0), count)
            used_cpu += busy * vcpu * 100
            used_mem += busy * memory * 1024
        capacity = dict(region.capacity)
        listing = ",".join(f"{k}={n}" for k, n in region.capacity)
        in_use = ",".join(f"{k}={used.get(k, 0)}" for k in capacity)
        free = ",".join(f"{k}={max(0, n - used.get(k, 0))}" for k, n in region.capacity)
        words = [
            "HYPERVISOR=ec2", "PUBLIC_CLOUD=YES", "PRIORITY=-1",
            f"TOTALCPU={total_cpu}", f"USEDCPU={used_cpu}", f"FREECPU={total_cpu - used_cpu}",
            f"TOTALMEMORY={total_mem}", f"USEDMEMORY={used_mem}",
            f"FREEMEMORY={total_mem - used_mem}",
            f"EC2_REGION={region.region_name}", f"EC2_CAPACITY={listing}",
            f"EC2_USED={in_use}", f"EC2_FREE={free}",
            f"EC2_DEFAULT_TYPE={region.instance_type('')}",
            f"EC2_INSTANCES={sum(used.values())}",
        ]
        if region.endpoint:
            words.append(f"EC2_ENDPOINT={region.endpoint}")
        return " ".join(shlex.quote(w) for w in words) + "\n"

    async def deploy(self, args: list[str], doc: ET.Element | None,
                     log: LogFn | None) -> str:
        vm = _Vm(doc)
        section = vm.section(self.region.host)
        ami = section.get("AMI", "")
        if not ami:
            raise Ec2Error(f"VM {vm.id}: its EC2 section for {self.region.host} has no AMI")
        placement = f"{vm.id}.{vm.seq}"
        kind = self.region.instance_type(section.get("INSTANCETYPE", ""))
        allowed = dict(self.region.capacity)
        if kind not in allowed:
            raise Ec2Error(f"host {self.region.host} may not run {kind} instances (its "
                           f"CAPACITY lists {', '.join(allowed) or 'none'})")
        # one request: this cloud's instances of that type that hold room, among them the
        # one launched for this placement before a restart, if any
        held = await self._describe(Filters=[
            {"Name": "tag:nubo-cloud", "Values": [self.cloud]},
            {"Name": "instance-type", "Values": [kind]},
            {"Name": "instance-state-name", "Values": list(HELD)}])
        for instance in held:
            if _tag(instance, "nubo-placement") == placement:
                emit(log, "I", f"ec2: instance {instance['InstanceId']} was launched for "
                               "this placement before a restart: using it")
                return str(instance["InstanceId"]) + "\n"
        if len(held) >= allowed[kind]:
            raise Ec2Error(f"host {self.region.host} is full for {kind}: {len(held)} of "
                           f"{allowed[kind]} in use")
        params = self._launch(vm, section, ami, kind, placement)
        emit(log, "I", f"ec2: RunInstances {ami} {kind} in {self.region.where}")
        answer = await self._call("run_instances", **params)
        instance_id = str(answer["Instances"][0]["InstanceId"])
        self._cached_at = -float("inf")  # the next poll sees it
        return instance_id + "\n"

    def _launch(self, vm: _Vm, section: dict[str, str], ami: str, kind: str,
                placement: str) -> dict[str, Any]:
        tags = [{"Key": "nubo-cloud", "Value": self.cloud},
                {"Key": "nubo-vm", "Value": str(vm.id)},
                {"Key": "nubo-placement", "Value": placement},
                {"Key": "Name", "Value": vm.name or f"one-{vm.id}"}]
        for item in filter(None, (t.strip() for t in section.get("TAGS", "").split(","))):
            key, _, value = item.partition("=")
            if key.strip() and not key.strip().startswith("nubo-"):
                tags.append({"Key": key.strip(), "Value": value.strip()})
        params: dict[str, Any] = {
            "ImageId": ami, "InstanceType": kind, "MinCount": 1, "MaxCount": 1,
            "ClientToken": f"nubo-{self.cloud}-{placement}",
            "TagSpecifications": [{"ResourceType": "instance", "Tags": tags}],
        }
        if section.get("KEYPAIR"):
            params["KeyName"] = section["KEYPAIR"]
        groups = [g.strip() for g in section.get("SECURITYGROUPS", "").split(",") if g.strip()]
        if groups and all(g.startswith("sg-") for g in groups):
            params["SecurityGroupIds"] = groups
        elif groups:
            params["SecurityGroups"] = groups
        if section.get("SUBNETID"):
            params["SubnetId"] = section["SUBNETID"]
        if section.get("PRIVATEIP"):
            params["PrivateIpAddress"] = section["PRIVATEIP"]
        if section.get("AVAILABILITYZONE"):
            params["Placement"] = {"AvailabilityZone": section["AVAILABILITYZONE"]}
        if section.get("EBS_OPTIMIZED", "").upper() in ("YES", "TRUE"):
            params["EbsOptimized"] = True
        user_data = section.get("USERDATA") or vm.user_data()
        if user_data:
            params["UserData"] = user_data
        return params

    async def poll(self, args: list[str], doc: ET.Element | None, log: LogFn | None) -> str:
        deploy_id = args[0] if args else ""
        instance = (await self._ours()).get(deploy_id) if deploy_id.startswith("i-") else None
        if instance is None:  # never launched, or gone long ago
            return "STATE=d\n"
        state = instance.get("State", {}).get("Name", "")
        kind = instance.get("InstanceType", "")
        words = [f"STATE={POLL_LETTER.get(state, 'd')}", "USEDCPU=0",
                 f"USEDMEMORY={TYPE_SIZES.get(kind, (0, 0))[1] * 1024 if state in LIVE else 0}",
                 "NETRX=0", "NETTX=0", f"AWS_INSTANCE_ID={deploy_id}", f"AWS_STATE={state}",
                 f"AWS_INSTANCE_TYPE={kind}"]
        for name, key in (("AWS_PUBLIC_IP", "PublicIpAddress"),
                          ("AWS_PRIVATE_IP", "PrivateIpAddress"),
                          ("AWS_PUBLIC_DNS", "PublicDnsName"),
                          ("AWS_PRIVATE_DNS", "PrivateDnsName")):
            if instance.get(key):
                words.append(f"{name}={instance[key]}")
        zone = instance.get("Placement", {}).get("AvailabilityZone")
        if zone:
            words.append(f"AWS_AVAILABILITY_ZONE={zone}")
        return " ".join(shlex.quote(w) for w in words) + "\n"

    async def terminate(self, args: list[str], doc: ET.Element | None,
                        log: LogFn | None) -> str:
        ids = await self._instances_of(args[0] if args else "", doc)
        if not ids:
            emit(log, "I", "ec2: no instance to terminate")
            return ""
        await self._act("terminate_instances", ids)
        await self._wait(ids, ("shutting-down", "terminated"), log)
        return ""

    async def stop(self, args: list[str], doc: ET.Element | None, log: LogFn | None) -> str:
        ids = await self._instances_of(args[0] if args else "", doc)
        if not ids:
            raise Ec2Error("no instance of this VM exists in the region")
        await self._act("stop_instances", ids)
        await self._wait(ids, ("stopped",), log)
        return ""

    async def start(self, args: list[str], doc: ET.Element | None, log: LogFn | None) -> str:
        deploy_id = (doc.findtext("DEPLOY_ID") if doc is not None else "") or ""
        ids = await self._instances_of(deploy_id, doc)
        if not ids:
            raise Ec2Error("no instance of this VM exists in the region (terminated "
                           "meanwhile?)")
        await self._act("start_instances", ids)
        await self._wait(ids, LIVE, log)
        return ""

    async def reboot(self, args: list[str], doc: ET.Element | None, log: LogFn | None) -> str:
        ids = await self._instances_of(args[0] if args else "", doc)
        if not ids:
            raise Ec2Error("no instance of this VM exists in the region")
        await self._act("reboot_instances", ids)
        return ""

    async def _act(self, operation: str, ids: list[str]) -> None:
        try:
            await self._call(operation, InstanceIds=ids)
        finally:
            self._cached_at = -float("inf")

    async def _instances_of(self, deploy_id: str, doc: ET.Element | None) -> list[str]:
        """The instance ids of the VM: its deploy id, else the instances tagged with its
        current placement (a launch whose answer a crash lost)."""
        if deploy_id.startswith("i-"):
            return [deploy_id]
        vm = _Vm(doc)
        found = await self._describe(Filters=[
            {"Name": "tag:nubo-cloud", "Values": [self.cloud]},
            {"Name": "tag:nubo-placement", "Values": [f"{vm.id}.{vm.seq}"]},
            {"Name": "instance-state-name", "Values": list(HELD)}])
        return [str(i["InstanceId"]) for i in found]

    async def _wait(self, ids: list[str], states: Sequence[str], log: LogFn | None) -> None:
        """Until every instance is in one of `states` (or gone); the action's timeout bounds
        it."""
        while True:
            try:
                found = await self._describe(InstanceIds=ids)
            except Ec2Error as exc:
                if "InvalidInstanceID.NotFound" in str(exc):
                    return
                raise
            pending = [i["InstanceId"] for i in found
                       if i.get("State", {}).get("Name") not in states]
            if not pending:
                return
            await asyncio.sleep(WAIT_STEP)


class _Vm:
    """What the driver reads of the VM's document (stdin)."""

    def __init__(self, doc: ET.Element | None) -> None:
        if doc is None:
            raise Ec2Error("the driver was given no VM document")
        self.doc = doc
        self.id = doc.findtext("ID") or "?"
        self.name = doc.findtext("NAME") or ""
        seqs = [h.findtext("SEQ") or "0" for h in doc.findall("HISTORY_RECORDS/HISTORY")]
        self.seq = seqs[-1] if seqs else "0"
        self.template = _template(doc.find("TEMPLATE"))

    def section(self, host: str) -> dict[str, str]:
        sections = self.template.vectors("EC2")
        for section in sections:
            if host in (section.get("HOST"), section.get("CLOUD")):
                return dict(section)
        for section in sections:
            if not section.get("HOST") and not section.get("CLOUD"):
                return dict(section)
        raise Ec2Error(f"VM {self.id} has no EC2 section for host {host} (add EC2 = [ "
                       f'HOST = "{host}", AMI = "ami-..." ] to run it there)')

    def user_data(self) -> str:
        resolved = vm_context.resolve(self.template, int(self.id) if self.id.isdigit() else 0)
        if not resolved:
            return ""
        if resolved.get("USER_DATA"):
            return resolved["USER_DATA"]
        key = resolved.get("SSH_PUBLIC_KEY", "").strip()
        if key:
            return f"#cloud-config\nssh_authorized_keys:\n  - {key}\n"
        return ""


def _tag(instance: Mapping[str, Any], key: str) -> str:
    return next((str(t.get("Value", "")) for t in instance.get("Tags", []) if t.get("Key") == key),
                "")


def _document(stdin: bytes | None) -> ET.Element | None:
    if not stdin:
        return None
    try:
        return ET.fromstring(stdin)
    except ET.ParseError as exc:
        raise Ec2Error(f"the VM document does not parse: {exc}") from None


def _template(element: ET.Element | None) -> template.Template:
    """A VM document's TEMPLATE back as a template (vectors for elements with children)."""
    found = template.Template()
    for child in element if element is not None else []:
        if len(child):
            found.add(child.tag, {c.tag: c.text or "" for c in child})
        else:
            found.add(child.tag, child.text or "")
    return found


class Refusing:
    """The runner of a region whose settings are wrong: every action fails with why."""

    needs_heartbeat = False

    def __init__(self, reason: str) -> None:
        self.reason = reason

    async def run(self, kind: str, driver: str, action: str, args: Sequence[str], *,
                  stdin: bytes | None = None, timeout: float = 60.0,
                  log: LogFn | None = None) -> DriverResult:
        emit(log, "E", f"ec2/{action} failed: {self.reason}")
        return failure(1, self.reason)

    async def execute(self, argv: Sequence[str], *, stdin: bytes | None = None,
                      timeout: float = 60.0, log: LogFn | None = None,
                      env: Mapping[str, str] | None = None) -> DriverResult:
        return failure(RC_NOT_EXECUTABLE, self.reason)

    async def beat(self, timeout: float) -> DriverResult:
        return DriverResult(0, "", "")


@functools.cache
def clients() -> Clients:
    """The daemon's clients (one per process)."""
    return Clients()
