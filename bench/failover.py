"""Host death to VMs RUNNING elsewhere, on real SSH hosts.

Creates a lab of 3 SSH hosts (network namespaces, drivers/lab.py) and starts `nubo serve`
with the seed's fault-tolerance hook (`HOST HOOK ... host_error.rb $HID -r n`) and
`FENCE_COMMAND = nubo lab fence $HOST`. N VMs run on h1 (the remote-dummy drivers: every
driver action over SSH on the host, nothing booted; `--qemu` boots the test guest
instead), then h1 is killed (its sshd and VMs stopped, its link cut) and the script
prints, from the kill:

  ERROR        the monitor puts h1 in ERROR (missed heartbeats, or a failed probe)
  hook done    host_error has fenced h1 (nubo lab fence) and resubmitted its VMs
  RUNNING      every VM is RUNNING on h2 or h3

for monitoring settings side by side (`--setting I` picks rows), each against the goal
(<= 15 s for 20 VMs).
OpenNebula 3.4's defaults (MONITORING_INTERVAL 600 s) take about 9-10 minutes; not run.
Needs root, openssh-server (scripts/system-deps), like the lab.

    .venv/bin/python bench/failover.py                 # 20 VMs
    .venv/bin/python bench/failover.py --vms 5 --qemu  # real guests (TCG: keep N small)
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
import xml.etree.ElementTree as ET
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from drivers.lab import create_hosts  # noqa: E402
from tests.e2e.labcloud import (  # noqa: E402
    Cloud,
    add_qemu_hosts,
    add_remote_dummy_host,
    lab_conf,
    write_remote_dummy,
)
from tests.guest import guest_os  # noqa: E402
from tests.live import SEED_HOST_HOOK, LiveNubo, wait_until  # noqa: E402

GOAL = 15.0
# (label, nubo.conf lines over the lab's). Row 0 puts back every default that tests/live's
# FAST_CONF changes: what an operator gets.
DEFAULTS = ("SCHED_INTERVAL = 30\nMAX_DISPATCH = 30\nMAX_HOST = 1\nMONITORING_INTERVAL = 60\n"
            "VM_POLLING_INTERVAL = 60\nDRIVER_TIMEOUT = 300\nMONITOR_TIMEOUT = 60\n")
SETTINGS = [
    ("defaults (beats 2 s x 2, probes 60 s)", DEFAULTS),
    ("beats 1 s x 2", DEFAULTS + "HEARTBEAT_INTERVAL = 1\n"),
    ("no beats, probes 2 s, timeout 10 s", DEFAULTS + "HEARTBEAT_INTERVAL = 0\n"
     "MONITORING_INTERVAL = 2\nMONITOR_TIMEOUT = 10\n"),
]


def run(n: int, qemu: bool, label: str, settings: str, work: Path) -> dict[str, float]:
    lab = create_hosts(3, work / "lab", prefix=f"nubo-fo{int(time.time()) % 10000}")
    nubo: LiveNubo | None = None
    try:
        conf = (lab_conf(lab) + settings + SEED_HOST_HOOK +
                f'FENCE_COMMAND = "{Path(sys.executable).parent / "nubo"} lab fence $HOST '
                f'--dir {lab.workdir}"\n')
        nubo = LiveNubo(work / "nubo", conf=conf)
        if not qemu:
            write_remote_dummy(nubo.var / "remotes")
        nubo.start()
        cloud = Cloud(nubo, lab)
        if qemu:
            add_qemu_hosts(nubo, lab)
            body = guest_os(work) + "MEMORY = 96\n"
        else:
            for host in lab.hosts:
                add_remote_dummy_host(nubo, lab, host)
            for host in lab.hosts:
                wait_until(f"{host.name} monitored",
                           lambda h=host.name: cloud.host_doc(h).findtext("STATE") == "2", 60)
            body = "MEMORY = 32\n"
        for name in ("h2", "h3"):
            nubo.cli("host", "disable", name)
        vms = [int(cloud.call("one.vm.allocate", f'NAME = "f{i}"\nCPU = 0.05\n' + body))
               for i in range(n)]
        wait_until("every VM RUNNING on h1", lambda: all(where(cloud, v) == "h1" for v in vms),
                   600)
        for name in ("h2", "h3"):
            nubo.cli("host", "enable", name)
            wait_until(f"{name} back", lambda h=name: cloud.host_doc(h).findtext("STATE") == "2")
        h1 = lab.host("h1")
        killed = time.monotonic()
        h1.power_off()
        h1.cut()
        times: dict[str, float] = {}
        fenced_mark = "h1 fenced"
        while len(times) < 3:
            now = time.monotonic() - killed
            if "ERROR" not in times and cloud.host_doc("h1").findtext("STATE") == "3":
                times["ERROR"] = now
            if "fenced" not in times and any(fenced_mark in (r.findtext(
                    "EXECUTION_RESULT/STDOUT") or "") for r in ET.fromstring(
                    cloud.call("one.hooklog.info", 0, 0, -1, 0))):
                times["fenced"] = now
            if "RUNNING" not in times and all(where(cloud, v) not in ("", "h1") for v in vms):
                times["RUNNING"] = now
            if now > 600:
                raise SystemExit(f"{label}: not done after 600 s: {times}")
            time.sleep(0.1)
        return times
    finally:
        if nubo is not None:
            nubo.stop()
        lab.destroy()


def where(cloud: Cloud, vm_id: int) -> str:
    """The host a RUNNING VM runs on, "" when it is not RUNNING."""
    doc = cloud.vm_doc(vm_id)
    if (doc.findtext("STATE"), doc.findtext("LCM_STATE")) != ("3", "3"):
        return ""
    return doc.findall("HISTORY_RECORDS/HISTORY")[-1].findtext("HOSTNAME") or ""


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--vms", type=int, default=20, help="VMs on the host that dies")
    parser.add_argument("--qemu", action="store_true", help="boot the test guest under qemu")
    parser.add_argument("--setting", type=int, action="append", metavar="I",
                        help="run only these rows of the settings table (0, 1, 2)")
    args = parser.parse_args()
    print(f"{args.vms} VMs ({'qemu guests' if args.qemu else 'remote-dummy'}) on h1; h1 killed")
    print(f"{'settings':<40} {'ERROR':>7} {'hook done':>10} {'RUNNING':>8}  goal <= {GOAL:g} s")
    chosen = [SETTINGS[i] for i in args.setting] if args.setting else SETTINGS
    for label, settings in chosen:
        with tempfile.TemporaryDirectory(prefix="nubo-failover-") as tmp:
            times = run(args.vms, args.qemu, label, settings, Path(tmp))
        verdict = "met" if times["RUNNING"] <= GOAL else "missed"
        print(f"{label:<40} {times['ERROR']:>6.1f}s {times['fenced']:>9.1f}s "
              f"{times['RUNNING']:>7.1f}s  {verdict}", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
