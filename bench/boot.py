"""Booting real VMs through Nubo against booting the same guest with bare qemu, side by side.

Creates a lab of 3 SSH hosts (network namespaces, drivers/lab.py), starts `nubo serve`
with the KVM probes, the qemu driver and the ssh transfer manager, and boots the test guest
(guest/build) N at a time, N = 1 and 10:

  bare qemu     qemu-system-x86_64 started directly with the same kernel, initrd, memory
                and context CD, N at once: start -> the guest prints NUBO-READY
  Nubo          one.vm.allocate of N VMs -> all RUNNING, and -> every guest printed
                NUBO-READY (the console on its host): scheduling, the context CD and the
                image copy (tm/ssh over ssh), qemu started over ssh (vmm/qemu)

and prints each time and the ratio Nubo / bare (goal: <= 2x). Needs root, qemu,
openssh-server and genisoimage (scripts/system-deps), like the lab.

    .venv/bin/python bench/boot.py            # 1 and 10 VMs
    .venv/bin/python bench/boot.py --vms 1 4  # other batch sizes
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
import xml.etree.ElementTree as ET
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from drivers.lab import Lab, create_hosts  # noqa: E402
from tests.e2e.labcloud import add_qemu_hosts, lab_conf  # noqa: E402
from tests.guest import Qemu, context_iso, guest_files, guest_files_in  # noqa: E402
from tests.live import LiveNubo  # noqa: E402

TIMEOUT = 300.0
KERNEL_CMD = "console=ttyS0 quiet panic=-1"


def bare(n: int, kernel: Path, initrd: Path, work: Path) -> float:
    """Seconds from starting n qemu processes to the last NUBO-READY."""
    guests = []
    for i in range(n):
        folder = work / f"bare-{n}-{i}"
        folder.mkdir()
        iso = context_iso(folder, {"HOSTNAME": f"bare{i}"})
        guests.append(Qemu(folder, kernel, initrd, name="g", cdrom=iso))
    start = time.monotonic()
    try:
        for guest in guests:
            guest.start()
        for guest in guests:
            guest.wait_for("NUBO-READY", timeout=TIMEOUT)
        return time.monotonic() - start
    finally:
        for guest in guests:
            guest.kill()


class Cloud:
    def __init__(self, lab: Lab, var: Path) -> None:
        self.lab = lab
        self.nubo = LiveNubo(var, conf=lab_conf(lab))

    def call(self, method: str, *args: object) -> object:
        ok, value, _ = getattr(self.nubo.rpc(), method)(self.nubo.session, *args)
        if not ok:
            raise RuntimeError(f"{method}: {value}")
        return value

    def start(self) -> None:
        self.nubo.start()
        add_qemu_hosts(self.nubo, self.lab)

    def vm(self, vm_id: int) -> ET.Element:
        return ET.fromstring(str(self.call("one.vm.info", vm_id)))


def nubo_boot(cloud: Cloud, n: int, kernel: Path, initrd: Path, data_image: int,
              batch: str) -> tuple[float, float]:
    """Seconds from the first one.vm.allocate to all RUNNING, and to every NUBO-READY."""
    template = (f'CPU = "0.1"\nMEMORY = "128"\nOS = [ KERNEL = "{kernel}", '
                f'INITRD = "{initrd}", KERNEL_CMD = "{KERNEL_CMD}" ]\n'
                f'DISK = [ IMAGE_ID = "{data_image}" ]\n')
    start = time.monotonic()
    ids = [int(str(cloud.call("one.vm.allocate", template + f'NAME = "{batch}-{i}"\n'
                              f'CONTEXT = [ HOSTNAME = "{batch}{i}" ]\n')))
           for i in range(n)]
    running_at = 0.0
    ready: set[int] = set()
    while len(ready) < n:
        if time.monotonic() - start > TIMEOUT:
            raise RuntimeError(f"{n - len(ready)} VMs not ready after {TIMEOUT:g} s")
        docs = {vm_id: cloud.vm(vm_id) for vm_id in ids}
        failed = [i for i, d in docs.items() if d.findtext("STATE") == "7"]
        if failed:
            raise RuntimeError(f"VMs {failed} FAILED: "
                               + (docs[failed[0]].findtext("TEMPLATE/ERROR") or "?"))
        if not running_at and all((d.findtext("STATE"), d.findtext("LCM_STATE")) == ("3", "3")
                                  for d in docs.values()):
            running_at = time.monotonic() - start
        for vm_id, doc in docs.items():
            records = doc.findall("HISTORY_RECORDS/HISTORY")
            if vm_id in ready or not records:
                continue
            host = cloud.lab.host(records[-1].findtext("HOSTNAME") or "")
            console = host.datastores / "0" / str(vm_id) / "console.log"
            if console.exists() and "NUBO-READY" in console.read_text(errors="replace"):
                ready.add(vm_id)
        time.sleep(0.05)
    done = time.monotonic() - start
    for vm_id in ids:
        cloud.call("one.vm.action", "cancel", vm_id)
    return running_at or done, done


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--vms", type=int, nargs="+", default=[1, 10],
                        help="batch sizes (default 1 10)")
    args = parser.parse_args()
    if os.geteuid() != 0:
        sys.exit("bench/boot.py: needs root (network namespaces)")
    kernel, initrd = guest_files()
    print(f"guest: {kernel} ({kernel.stat().st_size / 1e6:.1f} MB), {initrd.name}; "
          f"load {os.getloadavg()[0]:.1f}, {os.cpu_count()} CPUs", flush=True)
    with tempfile.TemporaryDirectory(prefix="nubo-boot-") as tmp:
        work = Path(tmp)
        images = work / "images"
        images.mkdir()
        kernel, initrd = guest_files_in(images)
        data = images / "data.img"
        with open(data, "wb") as f:
            f.truncate(16 * 1024 * 1024)
        lab = create_hosts(3, work / "lab", prefix=f"nubo-b{os.getpid()}")
        cloud = Cloud(lab, work / "nubo")
        try:
            cloud.start()
            image = int(str(cloud.call("one.image.allocate",
                                       f'NAME = "data"\nPATH = "{data}"\n', 1)))
            rows = []
            for n in args.vms:
                bare_s = bare(n, kernel, initrd, work)
                running_s, ready_s = nubo_boot(cloud, n, kernel, initrd, image, f"b{n}")
                rows.append((n, bare_s, running_s, ready_s))
                print(f"  {n} VMs: bare {bare_s:.1f} s, Nubo RUNNING {running_s:.1f} s, "
                      f"ready {ready_s:.1f} s", flush=True)
                time.sleep(3)  # let the cancelled VMs go
        finally:
            cloud.nubo.stop()
            lab.destroy()
    print()
    print(f"{'VMs':>4} | {'bare qemu -> ready':>18} | {'Nubo -> RUNNING':>15} | "
          f"{'Nubo -> ready':>13} | {'Nubo / bare':>11} | goal")
    for n, bare_s, running_s, ready_s in rows:
        ratio = ready_s / bare_s
        print(f"{n:>4} | {bare_s:>16.1f} s | {running_s:>13.1f} s | {ready_s:>11.1f} s | "
              f"{ratio:>10.2f}x | <=2x: {'met' if ratio <= 2 else 'MISSED'}")
    print("bare: qemu started directly on this machine, N at once; Nubo: 3 lab hosts, tm/ssh "
          "copies a 16 MB disk and the context CD, vmm/qemu starts qemu over ssh; TCG")
    return 0


if __name__ == "__main__":
    sys.exit(main())
