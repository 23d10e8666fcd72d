"""`nubo lab up|down|status`: hosts made of network namespaces on this machine, each with
its own OpenSSH server (drivers.lab), kept in a directory (default `$NUBO_VAR/lab`) that
records them in lab.json, so that the lab outlives the command and `down` finds it later.

`up` prints the settings that make a daemon use the hosts; `--register` creates them in a
running daemon too. The verbs need root (network namespaces); only `--register` talks to
the daemon (their parsers say `needs_client=False`: the client passed in is not used).
"""

from __future__ import annotations

import argparse
import os
import shlex
import socket
from pathlib import Path
from typing import TYPE_CHECKING, Any

from core import template
from core.cli.client import Client, CliError
from core.cli.commands import Subparsers, command, group
from core.cli.output import Column, emit, emit_json, table

if TYPE_CHECKING:
    from drivers.lab import Lab, LabHost

COLUMNS = [
    Column("NAME", lambda h: h["name"]),
    Column("ADDRESS", lambda h: h["address"]),
    Column("NETNS", lambda h: h["netns"]),
    Column("SSHD", lambda h: str(h["sshd_pid"] or "-"), right=True),
    Column("STATE", lambda h: h.get("state", "up")),
]
UP_HELP = """\
Creates N hosts h1..hN: network namespaces on a private bridge, each running its own sshd,
reachable from this machine by key (the root namespace gets no address). DIR receives the
key, known_hosts, lab.json and ssh_config (`ssh -F DIR/ssh_config h1`, also what the
transfer-manager scripts use through SSH_CONFIG). Needs root.
"""


def default_dir() -> Path:
    """`lab` under the data directory the other commands use (NUBO_VAR, default ./var)."""
    return Path(os.environ.get("NUBO_VAR") or "var") / "lab"


def _need_root() -> None:
    if os.geteuid() != 0:
        raise CliError("nubo lab needs root (it creates network namespaces): run it as root")


def _workdir(args: argparse.Namespace) -> Path:
    return Path(args.dir).resolve() if args.dir else default_dir().resolve()


def _datastores(lab: Lab, name: str) -> str:
    return str(lab.shared_dir or lab.host(name).datastores)


def host_attributes(lab: Lab, name: str) -> list[tuple[str, str]]:
    """The template attributes through which the daemon reaches lab host `name`."""
    host = lab.host(name)
    return [("SSH_ADDRESS", host.address), ("SSH_NETNS", lab.netns), ("SSH_USER", lab.user),
            ("SSH_KNOWN_HOSTS", str(lab.known_hosts)), ("SCRIPTS_REMOTE_DIR", host.remote_dir),
            ("DATASTORE_LOCATION", _datastores(lab, name))]


def settings(lab: Lab, args: argparse.Namespace) -> dict[str, Any]:
    """nubo.conf lines, the environment of `nubo serve` and a `nubo host create` per host."""
    creates = []
    for host in lab.hosts:
        argv = ["nubo", "host", "create", host.name, "--im", args.im, "--vmm", args.vmm]
        for name, value in host_attributes(lab, host.name):
            argv += ["--attr", f"{name}={value}"]
        creates.append(argv)
    return {
        "nubo_conf": {"SSH_KEY": str(lab.client_key), "SSH_CONFIG": str(lab.ssh_config)},
        "host_create": creates,
    }


def up(client: Client | None, args: argparse.Namespace) -> int:
    from drivers import lab as labs  # core reaches the drivers only from here and `serve`

    _need_root()
    workdir = _workdir(args)
    _refuse_running(workdir)
    try:
        made = labs.create_hosts(args.n, workdir, detached=True, shared=args.shared)
    except (labs.LabUnavailable, RuntimeError, ValueError, OSError) as exc:
        raise CliError(f"cannot create the lab: {exc}") from None
    found = {**made.to_json(), **settings(made, args)}
    if args.register:
        found["registered"] = _register(Client.from_environment(), made, args)
    if args.json:
        emit_json(found)
        return 0
    emit(_describe(made, found, args))
    return 0


def _refuse_running(workdir: Path) -> None:
    from drivers import lab as labs

    try:
        old = labs.Lab.load(workdir)
    except FileNotFoundError:
        return
    except (ValueError, KeyError, TypeError) as exc:
        raise CliError(f"{workdir / labs.STATE_FILE} is not a lab's state ({exc})") from None
    if labs.lab_namespaces(old.prefix) or any(h.sshd_running() for h in old.hosts):
        raise CliError(f"a lab is up in {workdir} already (`nubo lab status --dir {workdir}`; "
                       "`nubo lab down` removes it)")
    old.destroy()  # the leftovers of a lab that died with its machine


def _register(client: Client, lab: Lab, args: argparse.Namespace) -> list[dict[str, Any]]:
    done = []
    for host in lab.hosts:
        host_id = int(client.call("one.host.allocate", host.name, args.im, args.vmm, args.vnm,
                                  -1))
        attrs: list[tuple[str, template.Value]] = list(host_attributes(lab, host.name))
        client.call("one.host.update", host_id, template.Template(attrs).dumps(), 1)
        done.append({"name": host.name, "id": host_id})
    return done


def _describe(lab: Lab, found: dict[str, Any], args: argparse.Namespace) -> str:
    conf = found["nubo_conf"]
    lines = [f"LAB {lab.prefix} in {lab.workdir}", table(COLUMNS, found["hosts"]), "",
             f"ssh_config : {lab.ssh_config}",
             f"  try      : ssh -F {shlex.quote(str(lab.ssh_config))} {lab.hosts[0].name} true"]
    if lab.shared_dir is not None:
        lines.append(f"shared     : {lab.shared_dir} (one path on every host: tm shared, qcow2)")
    lines += ["", "nubo.conf (the front-end's key for these hosts, and the ssh_config of the "
              "transfer-manager scripts):"]
    lines += [f'  {name} = "{value}"' for name, value in conf.items()]
    if found.get("registered"):
        lines += ["registered in the daemon:"]
        lines += [f"  {h['name']}: ID {h['id']}" for h in found["registered"]]
    else:
        lines += ["hosts (or `nubo lab up --register`):"]
        lines += [f"  {shlex.join(argv)}" for argv in found["host_create"]]
    lines += ["", f"`nubo lab down --dir {shlex.quote(str(lab.workdir))}` removes it all."]
    return "\n".join(lines)


def down(client: Client | None, args: argparse.Namespace) -> int:
    from drivers import lab as labs

    _need_root()
    workdir = _workdir(args)
    try:
        found: Lab | None = labs.Lab.load(workdir)
    except FileNotFoundError:
        found = None
    except (ValueError, KeyError, TypeError) as exc:
        raise CliError(f"{workdir / labs.STATE_FILE} is not a lab's state ({exc})") from None
    prefix = found.prefix if found is not None else labs.cli_prefix(workdir)
    namespaces = labs.lab_namespaces(prefix)
    if found is None:  # an `up` killed before it wrote lab.json: its namespaces only
        found = labs.Lab(prefix=prefix, workdir=workdir, user="", home="",
                         client_key=workdir / "id_ed25519", known_hosts=workdir / "known_hosts")
    pids = [h.pid for h in found.hosts if h.sshd_running()]
    found.destroy()
    result = {"dir": str(workdir), "prefix": prefix, "removed_namespaces": namespaces,
              "stopped_sshd": pids}
    if args.json:
        emit_json(result)
    elif not namespaces and not pids:
        emit(f"no lab in {workdir}: nothing to remove")
    else:
        emit(f"removed {len(namespaces)} namespaces ({' '.join(namespaces) or '-'}) and "
             f"stopped {len(pids)} sshd")
    return 0


def status(client: Client | None, args: argparse.Namespace) -> int:
    from drivers import lab as labs

    _need_root()
    workdir = _workdir(args)
    try:
        found = labs.Lab.load(workdir)
    except FileNotFoundError:
        raise CliError(f"no lab in {workdir} (`nubo lab up` creates one)") from None
    except (ValueError, KeyError, TypeError) as exc:
        raise CliError(f"{workdir / labs.STATE_FILE} is not a lab's state ({exc})") from None
    existing = set(labs.lab_namespaces(found.prefix))
    state = found.to_json()
    for host, row in zip(found.hosts, state["hosts"], strict=True):
        running = host.sshd_running()
        listening = host.netns in existing and found.netns in existing and _answers(
            found.netns, host.address)
        row.update(sshd_running=running, listening=listening,
                   state="up" if running and listening else
                   "no namespace" if host.netns not in existing else
                   "sshd stopped" if not running else "not answering")
    state["up"] = all(row["state"] == "up" for row in state["hosts"])
    if args.json:
        emit_json(state)
    else:
        emit(f"LAB {found.prefix} in {found.workdir}\n{table(COLUMNS, state['hosts'])}\n\n"
             f"ssh_config : {found.ssh_config}")
    return 0 if state["up"] else 1


def fence(client: Client | None, args: argparse.Namespace) -> int:
    """A lab host's fence device: every process in its namespace killed (its VMs too),
    its link cut. For FENCE_COMMAND (`nubo lab fence $HOST --dir DIR`)."""
    found, target = _lab_host(args)
    target.fence()
    emit(f"{target.name} fenced: nothing runs in {target.netns}, its link is down")
    return 0


def power_on(client: Client | None, args: argparse.Namespace) -> int:
    """A fenced host boots again: link up, sshd started."""
    found, target = _lab_host(args)
    found.power_on(target.name, detached=True)
    emit(f"{target.name} is up: its link is back and its sshd listens on {target.address}")
    return 0


def _lab_host(args: argparse.Namespace) -> tuple[Lab, LabHost]:
    from drivers import lab as labs

    _need_root()
    workdir = _workdir(args)
    try:
        found = labs.Lab.load(workdir)
        return found, found.host(args.host)
    except FileNotFoundError:
        raise CliError(f"no lab in {workdir} (`nubo lab up` creates one)") from None
    except KeyError:
        raise CliError(f"the lab in {workdir} has no host {args.host!r}") from None


def _answers(netns: str, address: str) -> bool:
    """Port 22 of `address` accepts a connection made in the front-end namespace."""
    from drivers.netns import netns_socket

    try:
        sock = netns_socket(netns, socket.AF_INET)
    except OSError:
        return False
    with sock:
        sock.settimeout(1.0)
        try:
            sock.connect((address, 22))
        except OSError:
            return False
    return True


def register(sub: Subparsers) -> None:
    verbs = group(sub, "lab", "hosts made of network namespaces with their own sshd (root)")
    p = command(verbs, "up", "create a lab of N hosts and print how to use them", up,
                description=UP_HELP)
    p.add_argument("-n", type=int, default=2, metavar="N", help="number of hosts (default 2)")
    p.add_argument("--dir", metavar="DIR",
                   help="where the lab keeps its files (default $NUBO_VAR/lab, ./var/lab)")
    p.add_argument("--shared", action="store_true",
                   help="also a DIR/shared directory mounted on every host at the same path "
                        "(the datastore of the shared and qcow2 transfer drivers)")
    p.add_argument("--register", action="store_true",
                   help="create the hosts in the running daemon too (XML-RPC, NUBO_URL)")
    p.add_argument("--im", default="dummy", metavar="DRIVER",
                   help="information driver of the hosts (default: dummy)")
    p.add_argument("--vmm", default="dummy", metavar="DRIVER",
                   help="virtualization driver of the hosts (default: dummy)")
    p.add_argument("--vnm", default="dummy", metavar="DRIVER",
                   help="network driver of registered hosts (default: dummy)")
    p.set_defaults(needs_client=False)
    for name, run, what in (
        ("down", down, "stop every sshd of the lab in DIR and delete its namespaces"),
        ("status", status, "show the lab in DIR: hosts, sshd, answering or not "
                           "(exit 1 unless all are up)"),
    ):
        p = command(verbs, name, what, run)
        p.add_argument("--dir", metavar="DIR",
                       help="the lab's directory (default $NUBO_VAR/lab, ./var/lab)")
        p.set_defaults(needs_client=False)
    p = command(verbs, "fence", "fence a lab host: kill everything running there (its VMs "
                "too) and cut its link; a FENCE_COMMAND for host_error", fence,
                description="Fence a lab host as a fence device would a real one: every\n"
                            "process in its namespace is killed and its link cut.\n\n"
                            'FENCE_COMMAND = "nubo lab fence $HOST --dir /path/to/lab"')
    p.add_argument("host", metavar="HOST")
    p.add_argument("--dir", metavar="DIR",
                   help="the lab's directory (default $NUBO_VAR/lab, ./var/lab)")
    p.set_defaults(needs_client=False)
    p = command(verbs, "power-on", "bring a fenced lab host back: its link up, its sshd "
                "started (its VMs stay dead)", power_on)
    p.add_argument("host", metavar="HOST")
    p.add_argument("--dir", metavar="DIR",
                   help="the lab's directory (default $NUBO_VAR/lab, ./var/lab)")
    p.set_defaults(needs_client=False)
