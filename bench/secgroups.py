"""Security groups on the hot paths: creating VMs in a group that names itself as peer
(EC2's default group: its members talk to each other), and the rules a VM's network
driver gets at deploy time, with thousands of members.

Peer, side by side in the same process on the same database: the same VMs created
without a group (what a VM costs when groups play no part). Prints the time per VM of
each, their ratio, and the time to build one deploy document's rules.

    .venv/bin/python bench/secgroups.py [VMS]
"""

from __future__ import annotations

import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from core.config import Config  # noqa: E402
from core.daemon import prepare  # noqa: E402
from core.models import VM  # noqa: E402
from core.service import secgroups, sgrules, vms, vnets  # noqa: E402
from core.service.context import Caller  # noqa: E402

ADMIN = Caller(uid=0, gid=0, name="oneadmin")
VM_TEXT = 'NAME = "web"\nMEMORY = 64\nCPU = 0.1\nNIC = [ NETWORK_ID = "{net}" ]\n'


def per_vm(cloud: object, text: str, count: int) -> float:
    """Median seconds per VM over `count` creations (the last 200 are timed)."""
    times = []
    for i in range(count):
        start = time.perf_counter()
        vms.create_vm(cloud, ADMIN, text=text)  # type: ignore[arg-type]
        if i >= count - 200:
            times.append(time.perf_counter() - start)
    return statistics.median(times)


def main() -> int:
    count = int(sys.argv[1]) if len(sys.argv) > 1 else 2000
    with tempfile.TemporaryDirectory() as tmp:
        cloud = prepare(Config(var=Path(tmp), register_localhost=False))
        # one network per run, so both pick leases from networks equally full
        nets = [vnets.create_vnet(cloud, ADMIN, text=f'NAME = "lan{i}"\n'
                                  f'NETWORK_ADDRESS = 10.{i}.0.0/16\n') for i in (1, 2)]
        group = secgroups.ensure_default(cloud, ADMIN)  # its members reach each other
        assert group.id is not None and any(r.group == group.id for r in
                                            secgroups.rules_of(group, "ingress"))
        plain = VM_TEXT.format(net=nets[0])
        grouped = VM_TEXT.format(net=nets[1]) + f'SECURITY_GROUPS = "{group.id}"\n'
        alone = per_vm(cloud, plain, count)
        member = per_vm(cloud, grouped, count)
        with cloud.session() as s:
            vm = s.get(VM, 1 + count)  # the first member
            assert vm is not None
            start = time.perf_counter()
            vectors = sgrules.document_rules(s, vm)
            document = time.perf_counter() - start
        print(f"{count} VMs without a group, then {count} in the default group (SQLite)")
        print(f"create, no group:         {alone * 1000:8.2f} ms/VM")
        print(f"create, in default group: {member * 1000:8.2f} ms/VM  "
              f"({member / alone:.2f}x the peer)")
        print(f"deploy document rules:    {document * 1000:8.2f} ms "
              f"({len(vectors)} SECURITY_GROUP_RULE vectors)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
