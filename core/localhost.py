"""The embedded host `localhost`: the front-end runs VMs itself, with qemu when qemu works
here and with the dummy drivers otherwise. `LOCALHOST_VMM = auto` (the default) decides
when the host is first registered; naming a driver (`qemu`, `dummy`, ...) skips the check.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from dataclasses import dataclass

from core.config import Config

AUTO = "auto"
# a machine-less TCG instance that answers QMP and quits: qemu starts and emulates here
_PROBE = ["-machine", "none", "-accel", "tcg", "-display", "none", "-nodefaults",
          "-no-user-config", "-qmp", "stdio"]
_QMP = '{"execute": "qmp_capabilities"}\n{"execute": "quit"}\n'


@dataclass(frozen=True)
class Drivers:
    im: str
    vmm: str
    tm: str  # for the system and default datastores, while they still use `dummy`
    why: str  # one line for the start-up banner


def qemu_problem(timeout: float = 20.0) -> str | None:
    """None when qemu can run VMs on this machine, else why it cannot. The binary is the
    qemu driver's (NUBO_QEMU, default qemu-system-x86_64)."""
    binary = os.environ.get("NUBO_QEMU", "qemu-system-x86_64")
    path = shutil.which(binary)
    if path is None:
        return f"{binary} is not installed"
    try:
        done = subprocess.run([path, *_PROBE], input=_QMP, capture_output=True, text=True,
                              timeout=timeout, check=False)
    except subprocess.TimeoutExpired:
        return f"{binary} did not answer within {timeout:g} s"
    except OSError as exc:
        return f"{binary} does not start: {exc.strerror or exc}"
    if done.returncode != 0 or '"return"' not in done.stdout:
        lines = (done.stderr or done.stdout).strip().splitlines()
        return f"{binary} fails: {lines[-1] if lines else f'exit status {done.returncode}'}"
    return None


def choose(cfg: Config) -> Drivers:
    """The drivers localhost gets when it is registered."""
    if cfg.localhost_vmm != AUTO:
        im = cfg.localhost_im if cfg.localhost_im != AUTO else _im_for(cfg.localhost_vmm)
        tm = cfg.localhost_tm if cfg.localhost_tm != AUTO else _tm_for(cfg.localhost_vmm)
        return Drivers(im, cfg.localhost_vmm, tm, f"LOCALHOST_VMM = {cfg.localhost_vmm}")
    problem = qemu_problem()
    if problem is None:
        return Drivers(_auto(cfg.localhost_im, "kvm"), "qemu", _auto(cfg.localhost_tm, "shared"),
                       "qemu works on this machine")
    return Drivers(_auto(cfg.localhost_im, "dummy"), "dummy", _auto(cfg.localhost_tm, "dummy"),
                   f"{problem}: VMs on localhost are only pretended")


def _auto(value: str, default: str) -> str:
    return default if value == AUTO else value


def _im_for(vmm: str) -> str:
    return "kvm" if vmm == "qemu" else "dummy"


def _tm_for(vmm: str) -> str:
    return "shared" if vmm == "qemu" else "dummy"


def describe(vmm: str, cfg: Config) -> str:
    """The start-up banner's line on localhost, which runs VMs with `vmm`."""
    if vmm == "qemu":
        return "Host localhost runs VMs with qemu (KVM where it boots guests, TCG otherwise)"
    line = f"Host localhost runs VMs with the {vmm} driver"
    if vmm == "dummy":
        why = qemu_problem() if cfg.localhost_vmm == AUTO else "LOCALHOST_VMM = dummy"
        line += f": they are only pretended ({why or 'registered so earlier'})"
    return line
