"""Listing thousands of VMs: `one.vmpool.info` as the daemon serves it, side by side with
two peers measured in the same process on the same rows: the bare SQL fetch (the floor)
and pyone parsing the reply (what the client then spends).

    .venv/bin/python bench/vmpool.py [VMS]
"""

from __future__ import annotations

import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

import pyone.bindings
from sqlalchemy import text

from apis.xmlrpc.app import call
from core.config import Config
from core.daemon import prepare
from core.models import VM, History

TEMPLATE = ('NAME="web-{i}"\nMEMORY="512"\nCPU="0.5"\nDISK=[\n  IMAGE="base",\n  IMAGE_ID="1",\n'
            '  SOURCE="/var/tmp/base.img",\n  TARGET="hda" ]\nNIC=[\n  NETWORK="public" ]\n'
            'CONTEXT=[\n  HOSTNAME="web-{i}",\n  SSH_KEY="ssh-ed25519 AAAA..." ]\n')


def best_of(n: int, fn: object) -> float:
    times = []
    for _ in range(n):
        start = time.perf_counter()
        fn()  # type: ignore[operator]
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def main() -> int:
    count = int(sys.argv[1]) if len(sys.argv) > 1 else 5000
    with tempfile.TemporaryDirectory() as tmp:
        cfg = Config(var=Path(tmp), localhost_vmm="dummy")
        os.environ["NUBO_ADMIN_PASSWORD"] = "bench"
        cloud = prepare(cfg)
        with cloud.session() as s:
            for i in range(count):
                vm = VM(id=i + 1, name=f"web-{i}", uid=0, gid=0, state=3, lcm_state=3,
                        template=TEMPLATE.format(i=i), cpu=0.5, memory=512, host_id=1,
                        deploy_id=f"dummy-{i + 1}")
                s.add(vm)
            s.flush()
            for i in range(count):
                s.add(History(vm_id=i + 1, seq=0, host_id=1, hostname="localhost",
                              vmm_mad="dummy", vnm_mad="dummy", tm_mad="dummy",
                              ds_location=str(cfg.var / "datastores")))
        session = ("oneadmin:bench", -2, -1, -1, -1)
        reply: list[str] = []

        def serve() -> None:
            ok, doc, _ = call(cloud, "one.vmpool.info", session)
            assert ok, doc
            reply[:] = [doc]

        def raw_sql() -> None:
            with cloud.engine.connect() as conn:
                conn.execute(text("SELECT * FROM vm")).fetchall()
                conn.execute(text("SELECT * FROM history")).fetchall()

        served = best_of(5, serve)
        floor = best_of(5, raw_sql)
        parsed = best_of(3, lambda: pyone.bindings.parseString(reply[0].encode()))
        vms = len(pyone.bindings.parseString(reply[0].encode()).VM)
        assert vms == count, (vms, count)
        size = len(reply[0]) / 1e6
        print(f"one.vmpool.info, {count:,} VMs ({size:.1f} MB of XML): "
              f"served in {served:.3f} s ({count / served:,.0f} VMs/s)")
        print(f"  peer, bare SQL fetch of the same rows: {floor:.3f} s -> serving costs "
              f"{served / floor:.1f}x the floor")
        print(f"  peer, pyone parsing the reply: {parsed:.3f} s -> the server is "
              f"{parsed / served:.1f}x faster than its best-known client")
        cloud.engine.dispose()
    return 0


if __name__ == "__main__":
    sys.exit(main())
