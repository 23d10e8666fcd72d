"""Polling N VMs in a public-cloud region: Nubo's ec2 driver against the per-VM way.

Starts moto's EC2 server on loopback, launches N instances through the ec2 driver's
deploy (hybrid.ec2_driver), then polls every VM as the monitor does each
VM_POLLING_INTERVAL, two ways, side by side in this process:

  per VM      one DescribeInstances(InstanceIds=[id]) per VM (OpenNebula 3.4's driver ran
              `ec2-describe-instances <id>` per VM), 16 at a time
  Nubo        the ec2 driver's poll action for every VM at once: the polls of one region
              share one DescribeInstances (moto pages it: 2 requests for 200 instances)

Prints wall time and EC2 requests for each, and the ratio. (Launching is slow: moto's
RunInstances takes about 0.3 s here.)

    .venv/bin/python bench/hybrid_poll.py                 # 200 instances
    .venv/bin/python bench/hybrid_poll.py --instances 1000
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from hybrid.ec2_driver import Clients, Ec2Runner  # noqa: E402
from hybrid.region import Region  # noqa: E402
from tests.moto import MotoServer  # noqa: E402

ROUNDS = 3


def doc(vm_id: int, ami: str) -> bytes:
    return (f"<VM><ID>{vm_id}</ID><NAME>b{vm_id}</NAME><TEMPLATE><EC2><AMI>{ami}</AMI></EC2>"
            "</TEMPLATE><HISTORY_RECORDS><HISTORY><SEQ>0</SEQ></HISTORY></HISTORY_RECORDS>"
            "</VM>").encode()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--instances", type=int, default=200)
    args = parser.parse_args()
    n = args.instances
    with tempfile.TemporaryDirectory(prefix="nubo-hybrid-poll-") as tmp:
        moto = MotoServer(Path(tmp))
        moto.start()
        try:
            region = Region(host="aws", endpoint=moto.url, access_key_id="bench",
                            secret_access_key="bench", capacity=(("t3.micro", n),))
            clients = Clients()
            runner = Ec2Runner(region, clients, "bench")
            client = clients.get(region)
            ami = sorted(i["ImageId"] for i in client.describe_images(
                Owners=["amazon"])["Images"])[0]
            calls: list[str] = []
            client.meta.events.register("before-call.ec2.DescribeInstances",
                                        lambda **kw: calls.append("d"))

            async def launch() -> list[str]:
                ids = []
                for vm_id in range(n):
                    done = await runner.run("vmm", "ec2", "deploy", ["d", "aws", str(vm_id)],
                                            stdin=doc(vm_id, ami))
                    assert done.ok, done.error
                    ids.append(done.stdout.strip())
                return ids

            started = time.monotonic()
            ids = asyncio.run(launch())
            print(f"{n} instances launched in moto in {time.monotonic() - started:.1f} s")

            def per_vm() -> None:
                def one(instance_id: str) -> Any:
                    return client.describe_instances(InstanceIds=[instance_id])
                with ThreadPoolExecutor(16) as pool:
                    answers = list(pool.map(one, ids))
                assert all(a["Reservations"] for a in answers)

            async def batched() -> None:
                runner._cached_at = -float("inf")  # a new poll interval
                done = await asyncio.gather(*(runner.run("vmm", "ec2", "poll",
                                                         [i, "aws", "0", "aws"]) for i in ids))
                assert all("STATE=a" in d.stdout for d in done)

            rows = []
            for label, work in (("per VM", per_vm), ("Nubo", lambda: asyncio.run(batched()))):
                best = float("inf")
                calls.clear()
                for _ in range(ROUNDS):
                    started = time.monotonic()
                    work()
                    best = min(best, time.monotonic() - started)
                rows.append((label, best, len(calls) // ROUNDS))
            print(f"poll of {n} VMs in one region (best of {ROUNDS}):")
            for label, seconds, requests in rows:
                print(f"  {label:<8} {seconds * 1000:9.0f} ms  {requests:6d} DescribeInstances")
            print(f"  Nubo faster by {rows[0][1] / rows[1][1]:.1f}x, "
                  f"{rows[0][2] / max(1, rows[1][2]):.0f}x fewer requests")
        finally:
            moto.stop()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
