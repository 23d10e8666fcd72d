"""Bursting: which pending VMs go to public-cloud hosts, once the private ones had their turn.

A public-cloud host (PUBLIC_CLOUD = YES in its template: the `ec2` drivers' regions report
it) takes only VMs that say how to run there, an `EC2 = [ ... ]` section for it (HOST, or
3.x's CLOUD, naming it, or naming no host), and only while it has room for the section's
instance type. Its probe publishes `EC2_CAPACITY = "t3.micro=20,m5.large=4"`, `EC2_USED`
(counted from the instances that exist there) and `EC2_DEFAULT_TYPE`; the VMs already
placed there count too, launched or not. The scheduler plans the private hosts first
(core.scheduler) and hands what is left to `plan()` here, so a VM bursts only when no
private host can take it now; `REQUIREMENTS = "PUBLIC_CLOUD = YES"` sends it out at once
(no private host satisfies it). Among the regions that fit, the VM's RANK decides, else
the regions' PRIORITY, then the lowest id. Pure: no I/O.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

from core.expr import ExpressionError, as_number, parse_rank, parse_requirements
from core.models import Host
from core.template import strings


@dataclass
class RegionView:
    id: int
    name: str
    template: dict[str, str]  # monitored and user attributes
    placed: dict[str, int] = field(default_factory=dict)  # Nubo's VMs there, by type

    @property
    def free(self) -> dict[str, int]:
        """Room per type: the capacity less what is used, by the instances the last probe
        found (EC2_USED) or by the VMs placed there (some not launched or not probed yet),
        whichever is more."""
        used = _counts(self.template.get("EC2_USED", ""))
        return {kind: max(0, count - max(used.get(kind, 0), self.placed.get(kind, 0)))
                for kind, count in _counts(self.template.get("EC2_CAPACITY", "")).items()}

    def instance_type(self, section: Mapping[str, str]) -> str:
        return section.get("INSTANCETYPE") or self.template.get("EC2_DEFAULT_TYPE", "")


@dataclass
class Burstable:
    id: int
    sections: list[dict[str, str]]  # the VM's EC2 vectors
    requirements: str = ""
    rank: str = ""


@dataclass
class Plan:
    placements: list[tuple[int, int]] = field(default_factory=list)  # (vm id, host id)
    unplaced: dict[int, str] = field(default_factory=dict)  # vm id -> why no region


def is_public(template: Mapping[str, str]) -> bool:
    return template.get("PUBLIC_CLOUD", "").upper() == "YES"


def public_host(host: Host | None) -> bool:
    """Whether a host is a public-cloud region (no VM dir, no transfers, no migration)."""
    return host is not None and "PUBLIC_CLOUD" in host.template and is_public(
        strings(host.template))


def section_for(sections: Sequence[Mapping[str, str]], host: str) -> Mapping[str, str] | None:
    """The EC2 section a VM runs with on `host`: the one naming it, else one naming none."""
    for section in sections:
        if host in (section.get("HOST"), section.get("CLOUD")):
            return section
    for section in sections:
        if not section.get("HOST") and not section.get("CLOUD"):
            return section
    return None


def plan(vms: Sequence[Burstable], regions: Sequence[RegionView], *, max_dispatch: int,
         max_host: int) -> Plan:
    result = Plan()
    free = {r.id: r.free for r in regions}
    taken = {r.id: 0 for r in regions}
    for vm in vms:
        if len(result.placements) >= max_dispatch:
            break
        try:
            requirement = parse_requirements(vm.requirements)
            rank = parse_rank(vm.rank) if vm.rank.strip() else None
        except ExpressionError as error:
            result.unplaced[vm.id] = str(error)
            continue
        best: tuple[float, int, RegionView, str] | None = None
        why: list[str] = []
        for region in regions:
            section = section_for(vm.sections, region.name)
            if section is None:
                why.append(f"{region.name}: no EC2 section for it")
                continue
            variables: dict[str, str | float] = {"NAME": region.name, "ID": region.id,
                                                 **region.template}
            if not requirement.matches(variables.get):
                why.append(f"{region.name}: REQUIREMENTS not met")
                continue
            kind = region.instance_type(section)
            if free[region.id].get(kind, 0) <= 0:
                why.append(f"{region.name}: no room for {kind or 'its instance type'}")
                continue
            if taken[region.id] >= max_host:
                why.append("")  # its turn comes at the next cycle
                continue
            score = (rank.value(variables.get) if rank is not None
                     else as_number(region.template.get("PRIORITY", "0")) or 0.0)
            if best is None or score > best[0] or (score == best[0] and region.id < best[1]):
                best = (score, region.id, region, kind)
        if best is None:
            if all(why) and why:
                result.unplaced[vm.id] = "; ".join(why)
            continue
        _, region_id, region, kind = best
        free[region_id][kind] -= 1
        taken[region_id] += 1
        result.placements.append((vm.id, region_id))
    return result


def _counts(text: str) -> dict[str, int]:
    found: dict[str, int] = {}
    for item in text.split(","):
        kind, _, count = item.strip().partition("=")
        if kind and count.strip().isdigit():
            found[kind] = int(count)
    return found
