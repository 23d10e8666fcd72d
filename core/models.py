"""SQLModel tables: the database is the truth.

Every row that a user can own carries `uid` and `gid`. Templates are stored as text in
OpenNebula's attribute language (core.template) exactly as written; numbers the core
computes with (capacity, states) get their own columns.
"""

from __future__ import annotations

import time

from sqlalchemy import Index, Text, UniqueConstraint
from sqlmodel import Column, Field, SQLModel

ADMIN_GROUP_ID = 0  # group `oneadmin`
USERS_GROUP_ID = 1  # group `users`
ADMIN_USER_ID = 0  # user `oneadmin`
SYSTEM_DATASTORE_ID = 0
DEFAULT_DATASTORE_ID = 1
# Ids of owned or public objects are never handed out again once deleted (SQLite would
# reuse the highest id): a new user must not inherit a deleted one's leftovers, a new
# image a deleted one's tags, an old ami-/vol- id must not name something else.
NO_REUSE = {"sqlite_autoincrement": True}


def now() -> int:
    return int(time.time())


def text_column() -> Column:  # type: ignore[type-arg]
    return Column(Text, nullable=False, default="")


class Group(SQLModel, table=True):
    __table_args__ = (NO_REUSE,)
    id: int | None = Field(default=None, primary_key=True)
    name: str = Field(unique=True, index=True)


class User(SQLModel, table=True):
    __table_args__ = (NO_REUSE,)
    id: int | None = Field(default=None, primary_key=True)
    name: str = Field(unique=True, index=True)
    gid: int = Field(default=USERS_GROUP_ID, foreign_key="group.id")
    password_hash: str  # SHA1 hex of the password, as OpenNebula stores it
    auth_driver: str = "core"
    enabled: bool = True
    ec2_access_key: str = Field(unique=True, index=True)
    ec2_secret_key: str
    template: str = Field(default="", sa_column=text_column())


class Host(SQLModel, table=True):
    __table_args__ = (NO_REUSE,)
    id: int | None = Field(default=None, primary_key=True)
    name: str = Field(unique=True, index=True)
    uid: int = ADMIN_USER_ID
    gid: int = ADMIN_GROUP_ID
    state: int = 0  # core.lifecycle.HostState
    im_mad: str
    vmm_mad: str
    vnm_mad: str = "dummy"
    cluster_id: int = -1
    last_mon_time: int = 0
    error: str = ""  # last monitor error message
    # monitored attributes (IM probe output) plus the user's own, in template syntax
    template: str = Field(default="", sa_column=text_column())
    # host share: MAX_* and monitored FREE_*/USED_* come from probes,
    # *_usage is what placed VMs have reserved (CPU x100, memory in KB)
    max_cpu: int = 0
    max_mem: int = 0
    free_cpu: int = 0
    free_mem: int = 0
    used_cpu: int = 0
    used_mem: int = 0
    cpu_usage: int = 0
    mem_usage: int = 0
    running_vms: int = 0


class Datastore(SQLModel, table=True):
    __table_args__ = (NO_REUSE,)
    id: int | None = Field(default=None, primary_key=True)
    name: str = Field(unique=True)
    uid: int = ADMIN_USER_ID
    gid: int = ADMIN_GROUP_ID
    ds_mad: str = "fs"
    tm_mad: str = "dummy"
    base_path: str = ""
    system: bool = False
    template: str = Field(default="", sa_column=text_column())


# Image.state, OpenNebula's numbers
IMAGE_INIT, IMAGE_READY, IMAGE_USED, IMAGE_DISABLED, IMAGE_LOCKED, IMAGE_ERROR = range(6)


class Image(SQLModel, table=True):
    __table_args__ = (UniqueConstraint("uid", "name"), NO_REUSE)
    id: int | None = Field(default=None, primary_key=True)
    name: str
    uid: int = Field(index=True)
    gid: int
    type: int = 0  # OS 0, CDROM 1, DATABLOCK 2
    state: int = 1  # INIT 0, READY 1, USED 2, DISABLED 3, LOCKED 4, ERROR 5
    persistent: bool = False
    public: bool = False  # every user may see and use it (not change it)
    path: str = ""
    source: str = ""
    size_mb: int = 0
    fstype: str = ""
    datastore_id: int = DEFAULT_DATASTORE_ID
    regtime: int = Field(default_factory=now)
    running_vms: int = 0
    # SOURCE was written by the datastore driver (cp, mkfs): deleting the image runs its rm.
    # False for an image registered in place (DS_MAD dummy, or a SOURCE given).
    stored: bool = False
    template: str = Field(default="", sa_column=text_column())


class ImageJob(SQLModel, table=True):
    """Datastore driver work for one image (core.image_copies): `cp` or `mkfs` fills a LOCKED
    image, `rm` removes the file of a deleted one.

    Written in the transaction that creates or deletes the image, deleted in the one that
    records the outcome; a job found `running` at start-up was cut off and runs again.
    """

    __tablename__ = "image_job"
    __table_args__ = (Index("ix_image_job_status", "status", "id"),)
    id: int | None = Field(default=None, primary_key=True)
    image_id: int = Field(index=True)
    datastore_id: int
    action: str  # cp, mkfs, rm
    source: str = Field(default="", sa_column=text_column())  # rm: the file to remove
    origin_id: int | None = Field(default=None, index=True)  # cp of a clone: the original
    safe_dir: str = Field(default="", sa_column=text_column())  # cp of a clone: its store
    status: str = "pending"  # pending, running
    attempts: int = 0
    created: int = Field(default_factory=now)
    started: int = 0


class VMTemplate(SQLModel, table=True):
    __tablename__ = "vmtemplate"
    __table_args__ = (NO_REUSE,)
    id: int | None = Field(default=None, primary_key=True)
    name: str
    uid: int = Field(index=True)
    gid: int
    regtime: int = Field(default_factory=now)
    template: str = Field(default="", sa_column=text_column())


class VNet(SQLModel, table=True):
    __table_args__ = (NO_REUSE,)
    id: int | None = Field(default=None, primary_key=True)
    name: str
    uid: int = Field(index=True)
    gid: int
    type: int = 0  # RANGED 0, FIXED 1
    bridge: str = ""
    phydev: str = ""
    vlan: bool = False
    vlan_id: str = ""
    template: str = Field(default="", sa_column=text_column())


class Lease(SQLModel, table=True):
    __table_args__ = (UniqueConstraint("vnet_id", "ip"),)
    id: int | None = Field(default=None, primary_key=True)
    vnet_id: int = Field(foreign_key="vnet.id", index=True)
    ip: str
    mac: str
    vm_id: int | None = Field(default=None, index=True)


class VM(SQLModel, table=True):
    __table_args__ = (Index("ix_vm_state_lcm", "state", "lcm_state"),)
    id: int | None = Field(default=None, primary_key=True)
    name: str
    uid: int = Field(index=True)
    gid: int
    state: int = 1  # core.lifecycle.VmState
    lcm_state: int = 0  # core.lifecycle.LcmState
    template: str = Field(default="", sa_column=text_column())
    # what the scheduler reads, copied out of the template at allocation
    cpu: float = 1.0
    memory: int = 128  # MB
    requirements: str = Field(default="", sa_column=text_column())
    rank: str = Field(default="", sa_column=text_column())
    deploy_id: str = ""
    batch: int | None = None  # id of the first VM created by the same request
    host_id: int | None = Field(default=None, index=True)  # current placement
    stime: int = Field(default_factory=now)
    etime: int = 0
    last_poll: int = 0
    used_cpu: float = 0
    used_memory: int = 0
    net_rx: int = 0
    net_tx: int = 0
    # why the VM is where it is: "no host fits: ...", a driver failure, ...
    message: str = Field(default="", sa_column=text_column())
    # monitored attributes from the VMM poll that are not known columns
    monitoring: str = Field(default="", sa_column=text_column())


class History(SQLModel, table=True):
    """One row per placement of a VM on a host (OpenNebula's HISTORY records)."""

    __table_args__ = (UniqueConstraint("vm_id", "seq"),)
    id: int | None = Field(default=None, primary_key=True)
    vm_id: int = Field(foreign_key="vm.id", index=True)
    seq: int
    host_id: int
    hostname: str
    vmm_mad: str
    vnm_mad: str
    tm_mad: str
    ds_location: str
    stime: int = Field(default_factory=now)
    etime: int = 0
    pstime: int = 0
    petime: int = 0
    rstime: int = 0
    retime: int = 0
    estime: int = 0
    eetime: int = 0
    reason: int = 0  # NONE 0, ERROR 1, STOP_RESUME 2, USER 3, CANCEL 4
    # the cleanup of this placement skipped its host (in ERROR): done when the host returns
    leftover: bool = False


class Operation(SQLModel, table=True):
    """Driver work the core has committed to and not yet finished.

    Written in the same transaction as the state change that implies it; the
    dispatcher runs it and records the outcome; after a crash the leftovers are
    found here and finished or rolled back.
    """

    __table_args__ = (Index("ix_operation_status", "status", "id"),)
    id: int | None = Field(default=None, primary_key=True)
    vm_id: int = Field(index=True)
    seq: int = -1  # the History row (placement) the work is for
    step: str  # core.lifecycle.Step value: prolog, boot, shutdown, ...
    status: str = "pending"  # pending, running, done, failed
    attempts: int = 0
    created: int = Field(default_factory=now)
    started: int = 0
    finished: int = 0
    error: str = Field(default="", sa_column=text_column())


class LogEntry(SQLModel, table=True):
    """The per-VM log (OpenNebula's /var/log/one/<vmid>.log)."""

    __tablename__ = "log_entry"
    id: int | None = Field(default=None, primary_key=True)
    vm_id: int = Field(index=True)
    time: float = Field(default_factory=time.time)
    severity: str = "I"  # I, E, D
    message: str = Field(default="", sa_column=text_column())


class HostLogEntry(SQLModel, table=True):
    """A host's log: its state changes and why, heartbeats it missed, its hooks' outcomes
    (`nubo host log`; OpenNebula wrote these to oned.log only)."""

    __tablename__ = "host_log"
    id: int | None = Field(default=None, primary_key=True)
    host_id: int = Field(index=True)
    time: float = Field(default_factory=time.time)
    severity: str = "I"  # I, E, D
    message: str = Field(default="", sa_column=text_column())


class Tag(SQLModel, table=True):
    """A user's key/value label on one of its objects (kind: vm, image, ...)."""

    __table_args__ = (UniqueConstraint("kind", "object_id", "key"),
                      Index("ix_tag_kind_object", "kind", "object_id"))
    id: int | None = Field(default=None, primary_key=True)
    kind: str
    object_id: int
    uid: int = Field(index=True)
    key: str
    value: str = ""


class KeyPair(SQLModel, table=True):
    """An SSH public key a user registered; it reaches VMs through their CONTEXT."""

    __tablename__ = "keypair"
    __table_args__ = (UniqueConstraint("uid", "name"), NO_REUSE)
    id: int | None = Field(default=None, primary_key=True)
    uid: int = Field(index=True)
    gid: int
    name: str
    fingerprint: str
    public_key: str = Field(default="", sa_column=text_column())
    created: int = Field(default_factory=now)


class RequestToken(SQLModel, table=True):
    """An idempotent creation: the same (user, token) returns the first result."""

    __tablename__ = "request_token"
    __table_args__ = (UniqueConstraint("uid", "token"),)
    id: int | None = Field(default=None, primary_key=True)
    uid: int
    token: str
    fingerprint: str  # what was asked; a retry asking something else is refused
    kind: str  # vm, image, ...
    first_id: int = -1
    count: int = 0
    created: int = Field(default_factory=now)


class SecurityGroup(SQLModel, table=True):
    """A user's named firewall rule set (EC2 security groups).

    The network drivers enforce them (core.service.sgrules). `ingress` and `egress` are
    JSON lists of rules, one per peer: protocol, from_port, to_port, and either cidr (IPv4
    or IPv6) or group (a security group id), plus a description (core.service.secgroups
    reads and writes them).
    """

    __tablename__ = "security_group"
    # ids are public (sg-...): SQLite must not hand a deleted group's id to a new one
    __table_args__ = (UniqueConstraint("uid", "name"), NO_REUSE)
    id: int | None = Field(default=None, primary_key=True)
    uid: int = Field(index=True)
    gid: int
    name: str
    description: str = ""
    ingress: str = Field(default="[]", sa_column=text_column())
    egress: str = Field(default="[]", sa_column=text_column())
    created: int = Field(default_factory=now)


class GroupMember(SQLModel, table=True):
    """A VM in a security group: its template's SECURITY_GROUPS, written when the VM is
    created and gone when it is DONE, so a group's members are found by index."""

    __tablename__ = "security_group_member"
    group_id: int = Field(primary_key=True)
    vm_id: int = Field(primary_key=True, index=True)


class Address(SQLModel, table=True):
    """A public IPv4 address a user holds (EC2's Elastic IPs): a lease of the public
    network `vnet_id` held for it, and the VM it is associated with; `associations`
    counts associations (it names the current one)."""

    __table_args__ = (NO_REUSE,)  # ids are public (eipalloc-...)
    id: int | None = Field(default=None, primary_key=True)
    uid: int = Field(index=True)
    gid: int
    ip: str = Field(unique=True)
    vnet_id: int | None = Field(default=None, index=True)
    vm_id: int | None = Field(default=None, index=True)
    associations: int = 0
    allocated: int = Field(default_factory=now)


class LoginToken(SQLModel, table=True):
    """A login token (OpenNebula 4's one.user.login): it stands in for the password until
    it expires. Only its SHA-256 digest is stored."""

    __tablename__ = "login_token"
    id: int | None = Field(default=None, primary_key=True)
    uid: int = Field(index=True)
    digest: str = Field(unique=True)
    created: int = Field(default_factory=now)
    expires: int


class UserMixin(SQLModel, table=True):
    """An OCCI mixin a user defined (a tag whose members form a collection)."""

    __tablename__ = "user_mixin"
    __table_args__ = (UniqueConstraint("uid", "scheme", "term"), UniqueConstraint("uid", "location"),
                      NO_REUSE)
    id: int | None = Field(default=None, primary_key=True)
    uid: int = Field(index=True)
    gid: int
    term: str
    scheme: str
    title: str = ""
    location: str  # relative to the service root, ends with "/"


class MixinMember(SQLModel, table=True):
    """An entity (VM, image, network) tagged with a user mixin."""

    __tablename__ = "mixin_member"
    __table_args__ = (UniqueConstraint("mixin_id", "kind", "object_id"),)
    id: int | None = Field(default=None, primary_key=True)
    mixin_id: int = Field(foreign_key="user_mixin.id", index=True)
    kind: str  # vm, image, vnet
    object_id: int


class Hook(SQLModel, table=True):
    """A VM_HOOK or HOST_HOOK (core.hooks): a command run when a VM or host enters a state.

    `origin` is `conf` for the hooks of nubo.conf (replaced at each start) and `api` for
    those created at runtime (CLI, XML-RPC), which stay until deleted."""

    __table_args__ = (UniqueConstraint("resource", "name"), NO_REUSE)
    id: int | None = Field(default=None, primary_key=True)
    name: str
    resource: str  # vm, host
    on: str  # CREATE, RUNNING, ... CUSTOM (upper case)
    command: str = Field(sa_column=text_column())
    arguments: str = Field(default="", sa_column=text_column())
    remote: bool = False
    state: int = -1  # CUSTOM: the VM state and LCM state it fires on (-1: any)
    lcm_state: int = -1
    origin: str = "api"
    created: int = Field(default_factory=now)


class HookRun(SQLModel, table=True):
    """One execution of a hook, queued in the transaction of the event that fired it and
    run by core.hook_runs; the row stays as the hook's log (`nubo hook log`)."""

    __tablename__ = "hook_run"
    __table_args__ = (Index("ix_hook_run_status", "status", "id"),)
    id: int | None = Field(default=None, primary_key=True)
    hook_id: int = Field(index=True)
    hook_name: str
    resource: str  # vm, host
    object_id: int = Field(index=True)
    event: str
    argv: str = Field(default="", sa_column=text_column())  # JSON list, variables replaced
    host: str = ""  # remote hooks: where it runs
    status: str = "pending"  # pending, running, done, failed
    rc: int | None = None
    output: str = Field(default="", sa_column=text_column())  # stdout and stderr, trimmed
    created: float = Field(default_factory=time.time)
    started: float = 0.0
    finished: float = 0.0
