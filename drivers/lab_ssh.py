"""The OpenSSH configuration of the lab (drivers.lab): each host's sshd_config, and the
front-end's ssh_config that reaches every host by name from the root namespace."""

from __future__ import annotations

import shlex
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from drivers.lab import Lab, LabHost

SUBNET = "10.213.0"  # the lab's management network (front-end .10, hosts .11 on)

SUN_PATH_MAX = 107  # unix socket path bytes (108 with the NUL)


def quoted(path: Path | str) -> str:
    """A path as one argument of sshd_config / ssh_config (double quotes: spaces are fine)."""
    if '"' in str(path) or "\n" in str(path):
        raise ValueError(f"the lab's paths must not hold double quotes or newlines: {path}")
    return f'"{path}"'


def sshd_config_text(host: LabHost, authorized: Path) -> str:
    return (
        f"ListenAddress {host.address}\n"
        f"HostKey {quoted(host.dir / 'ssh_host_ed25519_key')}\n"
        f"PidFile {quoted(host.dir / 'sshd.pid')}\n"
        "PermitRootLogin prohibit-password\n"
        "PubkeyAuthentication yes\n"
        "PasswordAuthentication no\n"
        "KbdInteractiveAuthentication no\n"
        "UsePAM no\n"
        "StrictModes no\n"
        f"AuthorizedKeysFile {quoted(authorized)}\n"
        "MaxSessions 100\n"
        "MaxStartups 200:30:400\n"
        "UseDNS no\n"
        "Subsystem sftp internal-sftp\n"
    )


def control_path(lab: Lab) -> str:
    """ControlPath under the workdir: the %C hash if the socket path fits in sun_path
    (ssh binds a name 17 bytes longer first), else the host's address, else no master."""
    folder = lab.workdir / "cm"
    for token, length in (("%C", 40), ("%h", len(f"{SUBNET}.255"))):
        if len(str(folder)) + 1 + length + 17 <= SUN_PATH_MAX:
            folder.mkdir(mode=0o700, exist_ok=True)
            return f"{folder}/{token}"
    return "none"


def ssh_config_text(lab: Lab, nc: str, ip_path: str) -> str:
    """One block per host, named as Nubo names the host (hN; the netns name and the
    address work too)."""
    control = control_path(lab)
    # nc -F connects inside the fe namespace and hands the socket to ssh (ProxyUseFdpass):
    # no relay process stays, and a refused connection reads "proxy dialer did not pass
    # back a connection"
    proxy = f"{shlex.quote(ip_path)} netns exec {lab.netns} {shlex.quote(nc)} -F %h %p"
    blocks = ["# Written by Nubo's lab: `ssh -F <this file> hN`. Sockets are made in the\n"
              f"# namespace {lab.netns} by nc -F and passed to ssh (no address in the root ns).\n"]
    for host in lab.hosts:
        blocks.append(
            f"Host {host.name} {host.netns} {host.address}\n"
            f"    HostName {host.address}\n"
            f"    User {lab.user}\n"
            f"    IdentityFile {quoted(lab.client_key)}\n"
            "    IdentitiesOnly yes\n"
            f"    UserKnownHostsFile {quoted(lab.known_hosts)}\n"
            "    GlobalKnownHostsFile /dev/null\n"
            "    StrictHostKeyChecking yes\n"
            "    BatchMode yes\n"
            "    ConnectTimeout 5\n"
            "    LogLevel ERROR\n"
            f"    ProxyCommand {proxy}\n"
            "    ProxyUseFdpass yes\n"
            f"    ControlMaster {'no' if control == 'none' else 'auto'}\n"
            f"    ControlPath {quoted(control)}\n"
            "    ControlPersist 60\n"
        )
    return "\n".join(blocks)
