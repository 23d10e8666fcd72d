"""`nubo lab up|down|status` (core/cli/lab.py over drivers/lab.py): a lab that outlives the
command that made it, reachable with plain `ssh -F <dir>/ssh_config hN`, and a `down` that
leaves no namespace and no process behind, even after an `up` that failed or was killed."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from core.cli import main
from drivers.lab import Lab, LabUnavailable, cli_prefix, lab_namespaces, require_tool
from tests.live import LiveNubo
from tests.strict import missing

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture
def env(tmp_path: Path) -> dict[str, str]:
    # core.cli.main builds an XML-RPC client before running any command, and that needs
    # credentials even for `nubo lab`, which never uses them: a throwaway file will do.
    auth = tmp_path / "one_auth"
    auth.write_text("nobody:nothing\n")
    return {**os.environ, "ONE_AUTH": str(auth)}


@pytest.fixture
def can_lab() -> None:
    if os.geteuid() != 0:
        missing("root (the lab makes network namespaces)")
    try:
        for tool in ("ip", "sshd", "ssh-keygen", "ssh", "nc"):
            require_tool(tool)
    except LabUnavailable as exc:
        missing(str(exc))


def nubo(env: dict[str, str], *args: str | Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "core.cli", "lab", *map(str, args)],  # noqa: S603
                          cwd=ROOT, env=env, capture_output=True, text=True, timeout=60)


def running(pid: int) -> bool:
    """Alive and not a zombie (PID 1 may reap the orphans of the CLI late)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] != "Z"


def processes_mentioning(text: str) -> list[int]:
    """Live processes whose command line holds `text` (sshd -f <dir>/..., ssh masters)."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) == os.getpid():
            continue
        try:
            cmdline = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode()
        except OSError:
            continue
        if text in cmdline and running(int(entry.name)):
            found.append(int(entry.name))
    return found


def netns_list() -> str:
    return subprocess.run(["ip", "netns", "list"], capture_output=True, text=True,  # noqa: S603, S607
                          check=True).stdout


@pytest.fixture
def lab_dir(tmp_path: Path, env: dict[str, str], can_lab: None) -> Iterator[Path]:
    folder = tmp_path / "the lab"
    yield folder
    nubo(env, "down", "--dir", folder)  # whatever a failed test left


def test_up_status_ssh_then_down_leaves_nothing(lab_dir: Path, env: dict[str, str]) -> None:
    made = nubo(env, "up", "-n", "2", "--dir", lab_dir, "--json")
    assert made.returncode == 0, made.stderr
    up = json.loads(made.stdout)
    prefix, config = up["prefix"], up["ssh_config"]
    assert prefix == cli_prefix(lab_dir) and config == str(lab_dir / "ssh_config")
    assert [h["name"] for h in up["hosts"]] == ["h1", "h2"]
    assert up["nubo_conf"] == {"SSH_KEY": str(lab_dir / "id_ed25519"), "SSH_CONFIG": config}
    assert f"SSH_ADDRESS={up['hosts'][1]['address']}" in up["host_create"][1]
    pids = [h["sshd_pid"] for h in up["hosts"]]
    assert all(running(pid) for pid in pids)  # the CLI has exited; the lab stays up

    status = nubo(env, "status", "--dir", lab_dir, "--json")
    assert status.returncode == 0, status.stderr
    shown = json.loads(status.stdout)
    assert shown["up"] and [h["state"] for h in shown["hosts"]] == ["up", "up"]
    text = nubo(env, "status", "--dir", lab_dir).stdout
    assert re.search(r"^h2\s+10\.213\.0\.12\s+\S+-h2\s+\d+\s+up$", text, re.M), text
    for host in ("h1", "h2"):
        answer = subprocess.run(["ssh", "-F", config, host, "echo $((6 * 7))"],  # noqa: S603, S607
                                capture_output=True, text=True, timeout=30)
        assert (answer.returncode, answer.stdout) == (0, "42\n"), answer.stderr
    again = nubo(env, "up", "--dir", lab_dir)
    assert again.returncode == 1 and "a lab is up in" in again.stderr

    gone = nubo(env, "down", "--dir", lab_dir, "--json")
    assert gone.returncode == 0, gone.stderr
    assert sorted(json.loads(gone.stdout)["removed_namespaces"]) == sorted(
        f"{prefix}-{n}" for n in ("fabric", "fe", "h1", "h2"))
    assert prefix not in netns_list()
    assert not [pid for pid in pids if running(pid)]
    assert processes_mentioning(str(lab_dir)) == []  # no sshd, no ssh control master
    assert not (lab_dir / "lab.json").exists()
    after = nubo(env, "status", "--dir", lab_dir)
    assert after.returncode == 1 and "no lab in" in after.stderr


def test_a_failed_up_cleans_up_and_down_stays_safe(lab_dir: Path, env: dict[str, str]) -> None:
    lab_dir.mkdir()
    (lab_dir / "h2").write_text("in the way of h2's directory\n")  # fails after h1 is up
    failed = nubo(env, "up", "-n", "2", "--dir", lab_dir)
    assert failed.returncode == 1 and "cannot create the lab" in failed.stderr
    assert lab_namespaces(cli_prefix(lab_dir)) == []
    assert processes_mentioning(str(lab_dir)) == []
    down = nubo(env, "down", "--dir", lab_dir)
    assert (down.returncode, down.stdout) == (0, f"no lab in {lab_dir}: nothing to remove\n")


def test_down_after_an_up_killed_before_lab_json(lab_dir: Path, env: dict[str, str]) -> None:
    prefix = cli_prefix(lab_dir)
    for ns in (f"{prefix}-fabric", f"{prefix}-h1"):
        subprocess.run(["ip", "netns", "add", ns], check=True)  # noqa: S603, S607
    left = subprocess.Popen(["ip", "netns", "exec", f"{prefix}-h1", "sleep", "300"])  # noqa: S603, S607
    try:
        down = nubo(env, "down", "--dir", lab_dir, "--json")
        assert down.returncode == 0, down.stderr
        assert sorted(json.loads(down.stdout)["removed_namespaces"]) == [
            f"{prefix}-fabric", f"{prefix}-h1"]
        assert left.wait(5) == -9
        assert lab_namespaces(prefix) == []
    finally:
        left.kill()
        left.wait()


def test_lab_needs_root_and_each_verb_has_help(tmp_path: Path, env: dict[str, str],
                                                monkeypatch: pytest.MonkeyPatch,
                                                capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setenv("ONE_AUTH", env["ONE_AUTH"])
    monkeypatch.setattr(os, "geteuid", lambda: 1000)
    for verb in ("up", "down", "status"):
        assert main(["lab", verb, "--dir", str(tmp_path)]) == 1
        assert "nubo lab needs root" in capsys.readouterr().err
        with pytest.raises(SystemExit) as done:
            main(["lab", verb, "--help"])
        assert done.value.code == 0
        assert f"usage: nubo lab {verb}" in capsys.readouterr().out
    assert not list(tmp_path.glob("*.json"))


def test_fixture_lab_records_itself_and_writes_an_ssh_config(lab: Lab) -> None:
    loaded = Lab.load(lab.workdir)
    assert [(h.name, h.address, h.pid) for h in loaded.hosts] == [
        (h.name, h.address, h.pid) for h in lab.hosts]
    assert all(h.sshd_running() for h in loaded.hosts)  # known by pid in another process
    config = lab.ssh_config.read_text()
    for host in lab.hosts:
        block = config.split(f"Host {host.name} ")[1].split("\nHost ")[0]
        assert f"HostName {host.address}\n" in block
        assert f"netns exec {lab.netns} " in block and "StrictHostKeyChecking yes" in block
        control = re.search(r"ControlPath (\S+)", block)
        assert control is not None and len(control.group(1).replace("%C", "x" * 40)) <= 90
    # the root namespace got no address from the lab
    root = subprocess.run(["ip", "-4", "-o", "addr"], capture_output=True, text=True,  # noqa: S603, S607
                          check=True).stdout
    assert "10.213.0." not in root


def test_up_register_creates_the_hosts_in_a_running_daemon(tmp_path: Path,
                                                           can_lab: None) -> None:
    daemon = LiveNubo(tmp_path / "var")
    daemon.start()
    try:
        made = daemon.cli("lab", "up", "-n", "2", "--register", "--json")  # in $NUBO_VAR/lab
        up = json.loads(made.stdout)
        assert up["workdir"] == str(daemon.var / "lab")
        assert [h["name"] for h in up["registered"]] == ["h1", "h2"]
        shown = json.loads(daemon.cli("host", "show", "h2", "--json").stdout)
        assert shown["template"]["SSH_ADDRESS"] == "10.213.0.12"
        assert shown["template"]["SSH_NETNS"] == up["netns"]
        assert shown["template"]["DATASTORE_LOCATION"] == str(daemon.var / "lab/h2/datastores")
        assert "h2" in daemon.cli("lab", "status").stdout
    finally:
        daemon.cli("lab", "down", check=False)
        daemon.stop()
    assert lab_namespaces(cli_prefix(daemon.var / "lab")) == []
