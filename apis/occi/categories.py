"""The categories this service knows: OCCI Core and Infrastructure kinds, their actions,
the standard mixins, the contextualization mixins in every spelling clients use, and the
provider mixins generated per user (os_tpl from images, resource_tpl from instance types).

Type identifiers (scheme + term) are what requests name; `location` is where a kind's
collection lives, relative to the service root.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

CORE = "http://schemas.ogf.org/occi/core#"
INFRA = "http://schemas.ogf.org/occi/infrastructure#"
COMPUTE_ACTION = "http://schemas.ogf.org/occi/infrastructure/compute/action#"
NETWORK_ACTION = "http://schemas.ogf.org/occi/infrastructure/network/action#"
STORAGE_ACTION = "http://schemas.ogf.org/occi/infrastructure/storage/action#"
NETWORK_MIXINS = "http://schemas.ogf.org/occi/infrastructure/network#"
NIC_MIXINS = "http://schemas.ogf.org/occi/infrastructure/networkinterface#"
CREDENTIALS = "http://schemas.ogf.org/occi/infrastructure/credentials#"
COMPUTE_MIXINS = "http://schemas.ogf.org/occi/infrastructure/compute#"
OPENSTACK_USER_DATA = "http://schemas.openstack.org/compute/instance#"
OPENSTACK_CREDENTIALS = "http://schemas.openstack.org/instance/credentials#"
# provider schemes: ours, never under schemas.ogf.org
PROVIDER = "http://schemas.nubo.cloud/occi/"
OS_TPL = PROVIDER + "os_tpl#"
RESOURCE_TPL = PROVIDER + "resource_tpl#"


@dataclass(frozen=True)
class Attr:
    name: str
    type: str = "string"  # string, number, boolean (the 1.2 JSON types)
    mutable: bool = True
    required: bool = False
    description: str = ""
    default: object = None

    def spec(self) -> str:
        """As the text rendering's `attributes=` lists it: `name{immutable required}`."""
        flags = [f for f, on in (("immutable", not self.mutable), ("required", self.required))
                 if on]
        return f"{self.name}{{{' '.join(flags)}}}" if flags else self.name


@dataclass(frozen=True)
class Cat:
    term: str
    scheme: str
    cls: str  # kind, mixin, action
    title: str = ""
    rel: str = ""  # parent kind (kinds) or first `depends` (mixins)
    location: str = ""  # relative: "compute/"
    attrs: tuple[Attr, ...] = ()
    actions: tuple[str, ...] = ()  # type ids
    applies: tuple[str, ...] = ()  # mixins: the kinds they apply to

    @property
    def type_id(self) -> str:
        return self.scheme + self.term


def _kind(term: str, scheme: str, title: str, rel: str, location: str,
          attrs: tuple[Attr, ...] = (), actions: tuple[str, ...] = ()) -> Cat:
    return Cat(term, scheme, "kind", title, rel, location, attrs, actions)


def _action(term: str, scheme: str, title: str, *params: str) -> Cat:
    return Cat(term, scheme, "action", title, attrs=tuple(Attr(p) for p in params))


def _state(prefix: str) -> tuple[Attr, Attr]:
    return (Attr(f"{prefix}.state", mutable=False), Attr(f"{prefix}.state.message",
                                                          mutable=False))


ENTITY = _kind("entity", CORE, "Entity", "", "", (Attr("occi.core.id", mutable=False),
                                                   Attr("occi.core.title")))
RESOURCE = _kind("resource", CORE, "Resource", ENTITY.type_id, "", (Attr("occi.core.summary"),))
LINK = _kind("link", CORE, "Link", ENTITY.type_id, "",
             (Attr("occi.core.source", required=True), Attr("occi.core.target", required=True)))

COMPUTE_ACTIONS = (
    _action("start", COMPUTE_ACTION, "Start the compute"),
    _action("stop", COMPUTE_ACTION, "Stop the compute", "method"),
    _action("restart", COMPUTE_ACTION, "Restart the compute", "method"),
    _action("suspend", COMPUTE_ACTION, "Suspend the compute", "method"),
    _action("save", COMPUTE_ACTION, "Save the compute's disk as a new os_tpl", "method",
            "name"),
)
STORAGE_ACTIONS = (
    _action("online", STORAGE_ACTION, "Bring the storage online"),
    _action("offline", STORAGE_ACTION, "Take the storage offline"),
    _action("backup", STORAGE_ACTION, "Back the storage up (a copy)"),
    _action("snapshot", STORAGE_ACTION, "Snapshot the storage (a copy)"),
    _action("resize", STORAGE_ACTION, "Resize the storage", "size"),
)
NETWORK_ACTIONS = (
    _action("up", NETWORK_ACTION, "Bring the network up"),
    _action("down", NETWORK_ACTION, "Bring the network down"),
)

COMPUTE = _kind("compute", INFRA, "Compute Resource", RESOURCE.type_id, "compute/", (
    Attr("occi.compute.architecture"), Attr("occi.compute.cores", "number"),
    Attr("occi.compute.hostname"), Attr("occi.compute.share", "number"),
    Attr("occi.compute.speed", "number"), Attr("occi.compute.memory", "number"),
    *_state("occi.compute"),
), tuple(a.type_id for a in COMPUTE_ACTIONS))
STORAGE = _kind("storage", INFRA, "Storage Resource", RESOURCE.type_id, "storage/", (
    Attr("occi.storage.size", "number", required=True), *_state("occi.storage"),
), tuple(a.type_id for a in STORAGE_ACTIONS))
NETWORK = _kind("network", INFRA, "Network Resource", RESOURCE.type_id, "network/", (
    Attr("occi.network.vlan", "number"), Attr("occi.network.label"), *_state("occi.network"),
), tuple(a.type_id for a in NETWORK_ACTIONS))
NETWORKINTERFACE = _kind("networkinterface", INFRA, "Network Interface", LINK.type_id,
                         "networkinterface/", (
                             Attr("occi.networkinterface.interface", mutable=False),
                             Attr("occi.networkinterface.mac"),
                             *_state("occi.networkinterface")))
STORAGELINK = _kind("storagelink", INFRA, "Storage Link", LINK.type_id, "storagelink/", (
    Attr("occi.storagelink.deviceid"), Attr("occi.storagelink.mountpoint"),
    *_state("occi.storagelink")))

KINDS = (ENTITY, RESOURCE, LINK, COMPUTE, STORAGE, NETWORK, NETWORKINTERFACE, STORAGELINK)


def _mixin(term: str, scheme: str, title: str, applies: Cat, *attrs: Attr, rel: str = "",
           location: str = "") -> Cat:
    return Cat(term, scheme, "mixin", title, rel, location or f"mixin/{term}/", attrs,
               applies=(applies.type_id,))


OS_TPL_BASE = _mixin("os_tpl", INFRA, "OS template", COMPUTE, location="mixin/os_tpl/")
RESOURCE_TPL_BASE = _mixin("resource_tpl", INFRA, "Resource template", COMPUTE,
                           location="mixin/resource_tpl/")
IPNETWORK = _mixin("ipnetwork", NETWORK_MIXINS, "IP network", NETWORK,
                   Attr("occi.network.address"), Attr("occi.network.gateway"),
                   Attr("occi.network.allocation"))
IPNETWORKINTERFACE = _mixin("ipnetworkinterface", NIC_MIXINS, "IP network interface",
                            NETWORKINTERFACE, Attr("occi.networkinterface.address"),
                            Attr("occi.networkinterface.gateway"),
                            Attr("occi.networkinterface.allocation"))
SSH_KEY = _mixin("ssh_key", CREDENTIALS, "SSH key", COMPUTE,
                 Attr("occi.credentials.ssh.publickey", required=True))
USER_DATA = _mixin("user_data", COMPUTE_MIXINS, "User data", COMPUTE,
                   Attr("occi.compute.userdata", required=True))
LEGACY_USER_DATA = _mixin("user_data", OPENSTACK_USER_DATA, "User data (OpenStack style)",
                          COMPUTE, Attr("org.openstack.compute.user_data"),
                          location="mixin/openstack/user_data/")
LEGACY_PUBLIC_KEY = _mixin("public_key", OPENSTACK_CREDENTIALS,
                           "Public key (OpenStack style)", COMPUTE,
                           Attr("org.openstack.credentials.publickey.name"),
                           Attr("org.openstack.credentials.publickey.data"),
                           location="mixin/openstack/public_key/")

MIXINS = (OS_TPL_BASE, RESOURCE_TPL_BASE, IPNETWORK, IPNETWORKINTERFACE, SSH_KEY, USER_DATA,
          LEGACY_USER_DATA, LEGACY_PUBLIC_KEY)
ACTIONS = COMPUTE_ACTIONS + STORAGE_ACTIONS + NETWORK_ACTIONS
STATIC = {c.type_id: c for c in KINDS + MIXINS + ACTIONS}

# Every attribute name that carries contextualization, whatever the client's generation
SSH_KEY_ATTRS = ("occi.credentials.ssh.publickey", "occi.crendentials.ssh.publickey",
                 "occi.credentials.ssh_key", "org.openstack.credentials.publickey.data")
USER_DATA_ATTRS = ("occi.compute.userdata", "occi.compute.user_data",
                   "org.openstack.compute.user_data")


def slug(name: str) -> str:
    """A term (OCCI 1.2 rule) made from a free-form name."""
    text = re.sub(r"[^A-Za-z0-9_.\-]+", "_", name).strip("_.-")
    return text if text and text[0].isalnum() else f"x{text}"


@dataclass
class Registry:
    """The static categories plus one user's generated and user-defined mixins."""

    os_tpls: dict[str, tuple[Cat, int]] = field(default_factory=dict)  # type id -> image id
    resource_tpls: dict[str, tuple[Cat, str]] = field(default_factory=dict)  # -> type name
    user_mixins: dict[str, Cat] = field(default_factory=dict)
    mixin_ids: dict[str, int] = field(default_factory=dict)  # user mixin type id -> row id

    def mixin_id(self, cat: Cat) -> int:
        return self.mixin_ids[cat.type_id]

    def all(self) -> list[Cat]:
        return [*KINDS, *MIXINS, *(c for c, _ in self.os_tpls.values()),
                *(c for c, _ in self.resource_tpls.values()), *self.user_mixins.values(),
                *ACTIONS]

    def get(self, type_id: str) -> Cat | None:
        found = STATIC.get(type_id)
        if found is not None:
            return found
        for table in (self.os_tpls, self.resource_tpls):
            entry = table.get(type_id)
            if entry is not None:
                return entry[0]
        return self.user_mixins.get(type_id)


def os_tpl(image_id: int, name: str) -> Cat:
    return Cat(f"{slug(name)}_{image_id}", OS_TPL, "mixin", name, OS_TPL_BASE.type_id,
               f"mixin/os_tpl/{slug(name)}_{image_id}/", applies=(COMPUTE.type_id,))


def resource_tpl(name: str, cores: int, memory_gib: float) -> Cat:
    return Cat(slug(name), RESOURCE_TPL, "mixin", f"{name}: {cores} cores, {memory_gib:g} GiB",
               RESOURCE_TPL_BASE.type_id, f"mixin/resource_tpl/{slug(name)}/",
               (Attr("occi.compute.cores", "number", default=cores),
                Attr("occi.compute.memory", "number", default=memory_gib)),
               applies=(COMPUTE.type_id,))
