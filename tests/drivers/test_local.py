"""LocalRunner against the real remotes tree: dummy VMM/TM/IM drivers, user drivers in sh,
the protocol (stderr severities, error block, timeouts, stdin)."""

from __future__ import annotations

import asyncio
import json
import os
import shlex
import time
from pathlib import Path
from typing import Any

import pytest

from drivers.runner import (
    DriverResult,
    HostAccess,
    LocalRunner,
    RunnerPool,
    error_block,
    run_probes,
)
from tests.drivers.conftest import SYSTEM_PATH, write_script
from tests.drivers.documents import Recorder, host_document, vm_document

VMM_ARGS = {  # 3.4 arguments before the appended "<vmid> <host>"
    "deploy": ["/ds/0/7/deployment.0", "h1"],
    "shutdown": ["dummy-7", "h1"],
    "cancel": ["dummy-7", "h1"],
    "reboot": ["dummy-7", "h1"],
    "poll": ["dummy-7", "h1"],
    "save": ["dummy-7", "/ds/0/7/checkpoint", "h1"],
    "restore": ["/ds/0/7/checkpoint", "h1"],
    "migrate": ["dummy-7", "h2", "h1"],
}
TM_ARGS = {
    "clone": ["fe:/images/a", "h1:/ds/0/7/disk.0", "1024"],
    "ln": ["fe:/images/a", "h1:/ds/0/7/disk.0"],
    "mkswap": ["512", "h1:/ds/0/7/disk.1"],
    "mkimage": ["512", "ext3", "h1:/ds/0/7/disk.2"],
    "context": ["/var/lib/one/7/context.sh", "h1:/ds/0/7/disk.3"],
    "delete": ["h1:/ds/0/7"],
    "mv": ["h1:/ds/0/7", "h2:/ds/0/7"],
    "mvds": ["h1:/ds/0/7/disk.0", "/images/b"],
}


class Dummy:
    """Calls vmm/dummy actions for one VM placed on h1 with its datastore in tmp."""

    def __init__(self, runner: LocalRunner, ds: Path, vmid: int = 7, **template: Any) -> None:
        self.runner, self.ds, self.vmid, self.template = runner, ds, vmid, template

    def __call__(self, action: str, timeout: float = 10, log: Recorder | None = None,
                 **template: Any) -> DriverResult:
        doc = vm_document(self.vmid, [("h1", self.ds)], **{**self.template, **template})
        args = [*VMM_ARGS[action], str(self.vmid), "h1"]
        return asyncio.run(
            self.runner.run("vmm", "dummy", action, args, stdin=doc, timeout=timeout, log=log)
        )

    @property
    def state(self) -> dict[str, Any]:
        data: dict[str, Any] = json.loads((self.ds / "0" / str(self.vmid) / "dummy.json").read_text())
        return data


@pytest.fixture
def dummy(local: LocalRunner, tmp_path: Path) -> Dummy:
    return Dummy(local, tmp_path / "datastores")


def run(runner: LocalRunner, *path: str, args: list[str], **kw: Any) -> DriverResult:
    return asyncio.run(runner.run(*path, args, **kw))


# --- dummy VMM ---------------------------------------------------------------------------


def test_deploy_prints_the_deploy_id_and_poll_reports_usage(dummy: Dummy) -> None:
    result = dummy("deploy", CPU=0.5, MEMORY=256)
    assert (result.rc, result.stdout, result.ok) == (0, "dummy-7\n", True)
    poll = dummy("poll", CPU=0.5, MEMORY=256)
    assert poll.stdout == "STATE=a USEDCPU=5 USEDMEMORY=262144 NETRX=0 NETTX=0\n"
    assert dummy.state == {"state": "running", "deploys": 1, "actions": ["deploy"]}


def test_every_action_and_state_transition(dummy: Dummy) -> None:
    steps = [
        ("deploy", True, "running"),
        ("reboot", True, "running"),
        ("save", True, "saved"),
        ("reboot", False, "saved"),
        ("shutdown", False, "saved"),
        ("restore", True, "running"),
        ("restore", False, "running"),
        ("migrate", True, "running"),
        ("shutdown", True, "off"),
        ("shutdown", False, "off"),
        ("cancel", True, "off"),
        ("deploy", True, "running"),
        ("cancel", True, "off"),
    ]
    for action, ok, state in steps:
        result = dummy(action)
        assert result.ok is ok, (action, result)
        assert dummy.state["state"] == state, action
    assert dummy.state["actions"] == [a for a, _, _ in steps]
    assert dummy.state["deploys"] == 2
    assert dummy.state["checkpoint"] == "/ds/0/7/checkpoint"


def test_errors_name_the_domain(dummy: Dummy) -> None:
    assert dummy("shutdown").error == "domain dummy-7 is not running"
    assert dummy("restore").error == "domain dummy-7 has no saved state"
    assert dummy("deploy").ok
    again = dummy("deploy")
    assert (again.rc, again.error) == (1, "domain dummy-7 already exists")
    assert dummy.state["deploys"] == 2  # the refused attempt is counted


def test_poll_letters(dummy: Dummy) -> None:
    assert dummy("poll").stdout == "STATE=d\n"  # never deployed
    assert dummy("poll", DUMMY_POLL_STATE="e").stdout.startswith("STATE=e ")
    dummy("deploy")
    dummy("save")
    assert dummy("poll").stdout == "STATE=p USEDCPU=0 USEDMEMORY=0 NETRX=0 NETTX=0\n"
    dummy("cancel")
    assert dummy("poll").stdout == "STATE=d\n"
    assert "poll" not in dummy.state["actions"]  # polls are not recorded


@pytest.mark.parametrize("action", sorted(VMM_ARGS))
def test_injected_vmm_failure(dummy: Dummy, action: str) -> None:
    if action != "deploy":
        assert dummy("deploy").ok
    before = dummy.state["state"] if action != "deploy" else "off"
    log = Recorder()
    result = dummy(action, log=log, DUMMY_FAIL=f"reboot {action}")
    assert (result.rc, result.error) == (1, f"dummy: injected failure of {action}")
    assert log.records[-1] == ("E", f"vmm/dummy/{action} failed: dummy: injected failure of {action}")
    if action != "poll":
        assert dummy.state["state"] == before
        assert dummy.state["actions"][-1] == action


def test_migrate_brings_the_state_to_the_destination_datastore(local: LocalRunner,
                                                               tmp_path: Path) -> None:
    ds1, ds2 = tmp_path / "h1-ds", tmp_path / "h2-ds"
    deploy = run(local, "vmm", "dummy", "deploy", args=["/d", "h1", "9", "h1"],
                 stdin=vm_document(9, [("h1", ds1)]))
    assert deploy.ok
    both = vm_document(9, [("h1", ds1), ("h2", ds2)])
    assert run(local, "vmm", "dummy", "migrate", args=["dummy-9", "h2", "h1", "9", "h1"],
               stdin=both).ok
    assert not (ds1 / "0/9/dummy.json").exists()
    poll = run(local, "vmm", "dummy", "poll", args=["dummy-9", "h2", "9", "h2"], stdin=both)
    assert poll.stdout.startswith("STATE=a ")


def test_concurrent_actions_on_one_vm_lose_no_update(dummy: Dummy, local: LocalRunner) -> None:
    assert dummy("deploy").ok
    doc = vm_document(7, [("h1", dummy.ds)])

    async def many() -> list[DriverResult]:
        return await asyncio.gather(*(
            local.run("vmm", "dummy", "reboot", ["dummy-7", "h1", "7", "h1"], stdin=doc)
            for _ in range(12)
        ))

    assert all(r.ok for r in asyncio.run(many()))
    assert dummy.state["actions"] == ["deploy"] + ["reboot"] * 12


def test_missing_arguments_are_a_usage_error(local: LocalRunner) -> None:
    result = run(local, "vmm", "dummy", "deploy", args=["7", "h1"], stdin=b"")
    assert result.error == "dummy: usage: deploy <remote_dfile> <host> <vmid> <host>"


# --- dummy TM ------------------------------------------------------------------------------


@pytest.mark.parametrize("action", sorted(TM_ARGS))
def test_tm_actions_log_and_succeed_or_fail_on_demand(local: LocalRunner, tmp_path: Path,
                                                       action: str) -> None:
    log = Recorder()
    ok = run(local, "tm", "dummy", action, args=TM_ARGS[action],
             stdin=vm_document(7, [("h1", tmp_path)]), log=log)
    assert (ok.rc, ok.stdout) == (0, "")
    assert ("I", f"{action}: dummy: nothing to do for {' '.join(TM_ARGS[action])}") in log.records
    failed = run(local, "tm", "dummy", action, args=TM_ARGS[action],
                 stdin=vm_document(7, [("h1", tmp_path)], DUMMY_FAIL=f"deploy {action}"))
    assert failed.error == f"dummy: injected failure of {action}"


# --- protocol ------------------------------------------------------------------------------


def test_delay_then_timeout_kills_the_process_group(local: LocalRunner, remotes: Path,
                                                    tmp_path: Path) -> None:
    started = time.monotonic()
    result = run(local, "vmm", "dummy", "deploy", args=VMM_ARGS["deploy"] + ["7", "h1"],
                 stdin=vm_document(7, [("h1", tmp_path)], DUMMY_DELAY_DEPLOY=30), timeout=0.5)
    assert (result.rc, result.error) == (124, "timed out after 0.5 s")
    assert time.monotonic() - started < 5
    # A driver whose child outlives it: the whole group goes.
    pidfile = tmp_path / "child.pid"
    write_script(remotes, "vmm/mydrv/deploy", '#!/bin/sh\nsleep 60 &\necho $! > "$1"\nwait\n')
    result = run(local, "vmm", "mydrv", "deploy", args=[str(pidfile)], timeout=0.5)
    assert result.rc == 124
    child = int(pidfile.read_text())
    deadline = time.monotonic() + 2
    while _alive(child) and time.monotonic() < deadline:
        time.sleep(0.02)
    assert not _alive(child)


def test_a_timed_out_script_gets_sigterm_first_to_clean_up(local: LocalRunner, remotes: Path,
                                                           tmp_path: Path) -> None:
    """A script's TERM trap runs (a copy removes its partial file) before any SIGKILL; one
    that ignores SIGTERM is killed after the grace period."""
    part = tmp_path / "image.part"
    script = ("#!/bin/sh\ntrap 'rm -f \"$1\"; exit 143' TERM\n: > \"$1\"\n"
              "while :; do sleep 0.05; done\n")
    write_script(remotes, "datastore/mine/cp", script)
    result = run(local, "datastore", "mine", "cp", args=[str(part)], timeout=0.5)
    assert result.rc == 124
    assert not part.exists()  # the trap ran
    write_script(remotes, "datastore/stubborn/cp",
                 "#!/bin/sh\ntrap '' TERM\nwhile :; do sleep 0.05; done\n")
    result = run(local, "datastore", "stubborn", "cp", args=[], timeout=0.5)
    assert result.rc == 124  # returned at all: SIGKILL ended the loop that ignores SIGTERM


def _alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().split(")")[-1].split()[0] != "Z"
    except FileNotFoundError:
        return False


def test_stderr_lines_are_logged_with_their_severity(local: LocalRunner, remotes: Path) -> None:
    write_script(remotes, "vmm/mydrv/shutdown", """#!/bin/sh
echo "INFO: shutdown: sending ACPI" >&2
echo "DEBUG: shutdown: domain $1" >&2
echo "plain line" >&2
echo "ERROR: shutdown: guest ignores ACPI" >&2
echo "ERROR MESSAGE --8<------" >&2
echo "could not stop $1" >&2
echo "ERROR MESSAGE ------>8--" >&2
exit 3
""")
    log = Recorder()
    result = run(local, "vmm", "mydrv", "shutdown", args=["one 7", "h1"], log=log)
    assert (result.rc, result.error) == (3, "could not stop one 7")
    assert log.records == [
        ("I", "Command execution: vmm/mydrv/shutdown 'one 7' h1"),
        ("I", "shutdown: sending ACPI"),
        ("D", "shutdown: domain one 7"),
        ("I", "plain line"),
        ("E", "shutdown: guest ignores ACPI"),
        ("E", "vmm/mydrv/shutdown failed: could not stop one 7"),
    ]


@pytest.mark.parametrize(("stderr", "error"), [
    (error_block("boom\nsecond line"), "boom\nsecond line"),
    ("INFO: x\n" + error_block("first") + "ERROR: later\n" + error_block("last"), "last"),
    ("ERROR MESSAGE --8<------\nkilled while printing\n", "killed while printing"),
    ("INFO: starting\nERROR: deploy: no such image\n\n", "deploy: no such image"),
    ("just text\n", "just text"),
    ("", "exit code 5"),
])
def test_error_text(stderr: str, error: str) -> None:
    assert DriverResult(5, "", stderr).error == error


def test_user_driver_in_sh_needs_no_python_change(local: LocalRunner, remotes: Path,
                                                  tmp_path: Path) -> None:
    seen = tmp_path / "stdin.xml"
    write_script(remotes, "vmm/mydrv/deploy",
                 f'#!/bin/sh\ncat > {seen}\necho "INFO: deploy: $1 on $2" >&2\necho "mydrv-$3"\n')
    doc = vm_document(7, [("h1", tmp_path)])
    log = Recorder()
    result = run(local, "vmm", "mydrv", "deploy", args=["/ds/0/7/deployment.0", "h1", "7", "h1"],
                 stdin=doc, log=log)
    assert (result.rc, result.stdout) == (0, "mydrv-7\n")
    assert seen.read_bytes() == doc
    assert ("I", "deploy: /ds/0/7/deployment.0 on h1") in log.records


def test_a_script_that_ignores_a_big_stdin_is_fine(local: LocalRunner, remotes: Path) -> None:
    write_script(remotes, "vmm/mydrv/poll", "#!/bin/sh\necho STATE=a\n")
    result = run(local, "vmm", "mydrv", "poll", args=["x"], stdin=b"<VM>" + b"x" * 8_000_000)
    assert (result.rc, result.stdout) == (0, "STATE=a\n")


def test_missing_and_invalid_actions(local: LocalRunner, remotes: Path) -> None:
    missing = run(local, "vmm", "dummy", "resize", args=[])
    assert missing.rc == 42 and missing.error.startswith("script missing: ")
    (remotes / "vmm/dummy/VERSION").chmod(0o644)
    assert run(local, "vmm", "dummy", "VERSION", args=[]).rc == 42  # not executable
    write_script(remotes, "vmm/mydrv/deploy", "no shebang, not a program\n")
    noexec = run(local, "vmm", "mydrv", "deploy", args=[])
    assert noexec.rc == 126 and "cannot execute vmm/mydrv/deploy" in noexec.error
    for bad in (("vmm", "../../bin", "sh"), ("vmm", "dummy", ""), ("..", "x", "y")):
        with pytest.raises(ValueError):
            run(local, *bad, args=[])
    with pytest.raises(TypeError):
        run(local, "vmm", "dummy", "poll", args="dummy-7")  # type: ignore[arg-type]


def test_env_reaches_the_driver(remotes: Path) -> None:
    write_script(remotes, "vmm/mydrv/poll", '#!/bin/sh\necho "STATE=a LABEL=$NUBO_TEST_LABEL"\n')
    runner = LocalRunner(remotes, env={**SYSTEM_PATH, "NUBO_TEST_LABEL": "x1"})
    assert run(runner, "vmm", "mydrv", "poll", args=[]).stdout == "STATE=a LABEL=x1\n"


# --- execute: an absolute command outside the tree (OpenNebula hooks) ---------------------

# Prints each argument between <>, stdin and two variables: what the command really got.
SHOW_ARGS = """#!/bin/sh
for arg in "$@"; do printf '<%s>\\n' "$arg"; done
printf 'stdin=%s\\n' "$(cat)"
printf 'var=%s label=%s\\n' "${NUBO_HOOK_VAR-unset}" "${NUBO_TEST_LABEL-unset}"
"""
TRICKY_ARGS = ["one-7", "two words", "it's \"quoted\"", "$HOME", "a; touch pwned", "", "*",
               "`id`", "line\nbreak", "-n"]
SHOWN_ARGS = "".join(f"<{arg}>\n" for arg in TRICKY_ARGS)


def execute(runner: LocalRunner, argv: list[str], **kw: Any) -> DriverResult:
    return asyncio.run(runner.execute(argv, **kw))


def test_execute_passes_argv_stdin_and_env_intact(remotes: Path, tmp_path: Path) -> None:
    show = write_script(tmp_path, "hooks bin/show-args", SHOW_ARGS)
    runner = LocalRunner(remotes, env={**SYSTEM_PATH, "NUBO_TEST_LABEL": "x1"})
    log = Recorder()
    result = execute(runner, [str(show), *TRICKY_ARGS], stdin=b"<VM/>", log=log,
                     env={"NUBO_HOOK_VAR": "a b'c\"$d"})
    assert (result.rc, result.stderr) == (0, "")
    assert result.stdout == SHOWN_ARGS + "stdin=<VM/>\nvar=a b'c\"$d label=x1\n"
    assert not (tmp_path / "pwned").exists() and not Path("pwned").exists()
    assert log.records == [
        ("I", f"Command execution: {shlex.join([str(show), *TRICKY_ARGS])}"),
        ("I", f"{show} succeeded"),
    ]
    # env overrides the runner's; no stdin is an empty one; no env adds nothing
    again = execute(runner, [str(show)], env={"NUBO_TEST_LABEL": "x2"})
    assert again.stdout == "stdin=\nvar=unset label=x2\n"
    assert execute(runner, [str(show)]).stdout == "stdin=\nvar=unset label=x1\n"


def test_execute_logs_stderr_severities_and_the_error_block(local: LocalRunner,
                                                           tmp_path: Path) -> None:
    hook = write_script(tmp_path, "ebtables-kvm", """#!/bin/sh
echo "INFO: ebtables: rules for $1" >&2
echo "DEBUG: ebtables: chain $1-in" >&2
echo "ERROR: ebtables: no bridge" >&2
printf 'ERROR MESSAGE --8<------\\ncannot set rules for %s\\nERROR MESSAGE ------>8--\\n' "$1" >&2
exit 4
""")
    log = Recorder()
    result = execute(local, [str(hook), "one 7"], log=log)
    assert (result.rc, result.error) == (4, "cannot set rules for one 7")
    assert log.records == [
        ("I", f"Command execution: {hook} 'one 7'"),
        ("I", "ebtables: rules for one 7"),
        ("D", "ebtables: chain one 7-in"),
        ("E", "ebtables: no bridge"),
        ("E", f"{hook} failed: cannot set rules for one 7"),
    ]


def test_execute_missing_command_is_127(local: LocalRunner, tmp_path: Path) -> None:
    log = Recorder()
    missing = execute(local, [str(tmp_path / "nope"), "x"], log=log)
    assert (missing.rc, missing.error) == (127, f"command missing: {tmp_path / 'nope'}")
    assert missing.stderr == error_block(f"command missing: {tmp_path / 'nope'}")
    assert log.records[-1] == ("E", f"{tmp_path / 'nope'} failed: command missing: {tmp_path / 'nope'}")
    plain = tmp_path / "plain"
    plain.write_text("#!/bin/sh\n")
    assert execute(local, [str(plain)]).rc == 127  # not executable
    assert execute(local, [str(tmp_path)]).rc == 127  # a directory
    odd = write_script(tmp_path, "odd", "no shebang, not a program\n")
    noexec = execute(local, [str(odd)])
    assert noexec.rc == 126 and noexec.error.startswith(f"cannot execute {odd}: ")


@pytest.mark.parametrize(("argv", "env", "error"), [
    (["ebtables-kvm", "one-7"], None, "command must be an absolute path, not 'ebtables-kvm'"),
    (["./hook"], None, "command must be an absolute path, not './hook'"),
    (["/bin/true x"], None, "command missing: /bin/true x"),  # one word, never split
    ([], None, "cannot execute an empty command line"),
    (["/bin/echo", "a\0b"], None, "command line of /bin/echo contains a NUL byte"),
    (["/bin/true"], {"1X": "y"}, "invalid environment variable name '1X'"),
    (["/bin/true"], {"A-B": "y"}, "invalid environment variable name 'A-B'"),
    (["/bin/true"], {"A=B": "y"}, "invalid environment variable name 'A=B'"),
    (["/bin/true"], {"A": "\0"}, "environment variable A contains a NUL byte"),
    (["/opt/a=b"], {"A": "1"}, "cannot pass an environment to a command whose path has '=': /opt/a=b"),
])
def test_execute_refuses_what_it_cannot_run_as_given(
        local: LocalRunner, argv: list[str], env: dict[str, str] | None, error: str) -> None:
    log = Recorder()
    result = execute(local, argv, env=env, log=log)
    assert (result.rc, result.error) == (127 if "missing" in error else 126, error)
    assert log.records[-1][0] == "E" and log.records[-1][1].endswith(f" failed: {error}")


def test_execute_refuses_a_string_argv(local: LocalRunner) -> None:
    with pytest.raises(TypeError):
        execute(local, "/bin/echo hi")  # type: ignore[arg-type]


def test_execute_timeout_stops_the_process_group(local: LocalRunner, tmp_path: Path) -> None:
    pids = tmp_path / "pids"
    hook = write_script(tmp_path, "slow-hook",
                        '#!/bin/sh\nsleep 60 &\necho "$$ $!" > "$1"\nwait\n')
    started = time.monotonic()
    result = execute(local, [str(hook), str(pids)], timeout=0.5)
    assert (result.rc, result.error) == (124, "timed out after 0.5 s")
    assert time.monotonic() - started < 5
    for pid in map(int, pids.read_text().split()):  # the hook and its child
        deadline = time.monotonic() + 2
        while _alive(pid) and time.monotonic() < deadline:
            time.sleep(0.02)
        assert not _alive(pid)


# --- IM ------------------------------------------------------------------------------------


def test_dummy_monitor_through_run_probes(local: LocalRunner) -> None:
    async def probe(**template: Any) -> DriverResult:
        return await run_probes(local, "dummy", 3, "h1", stdin=host_document(3, "h1", **template),
                                timeout=10, log=None)

    result = asyncio.run(probe())
    assert result.stdout == (
        "HYPERVISOR=dummy TOTALCPU=800 FREECPU=800 USEDCPU=0 TOTALMEMORY=16777216 "
        "FREEMEMORY=16777216 USEDMEMORY=0 HOSTNAME=h1 ARCH=x86_64 CPUSPEED=2000 "
        'MODELNAME="Nubo dummy CPU"\n'
    )
    sized = asyncio.run(probe(DUMMY_TOTALCPU=200, DUMMY_TOTALMEMORY=1048576)).stdout
    assert "TOTALCPU=200 FREECPU=200" in sized and "TOTALMEMORY=1048576" in sized
    failed = asyncio.run(probe(DUMMY_FAIL="deploy monitor"))
    assert (failed.rc, failed.error) == (1, "Error executing monitor: dummy: injected failure of monitor")
    started = time.monotonic()
    slow = asyncio.run(run_probes(local, "dummy", 3, "h1", timeout=0.4, log=None,
                                  stdin=host_document(3, "h1", DUMMY_DELAY_MONITOR=30)))
    assert slow.rc == 124 and time.monotonic() - started < 5


def test_run_probes_joins_probes_in_name_order_and_stops_at_a_failure(
        local: LocalRunner, remotes: Path, tmp_path: Path) -> None:
    write_script(remotes, "im/mine.d/b-mem", '#!/bin/sh\necho TOTALMEMORY=1024\necho "HOST=$2"\n')
    write_script(remotes, "im/mine.d/a-cpu",
                 '#!/bin/sh\necho "INFO: a-cpu: probing host $1" >&2\necho TOTALCPU=400\n')
    (remotes / "im/mine.d/README").write_text("not executable: skipped\n")
    log = Recorder()
    ok = asyncio.run(run_probes(local, "mine", 5, "h7", stdin=b"<HOST/>", timeout=10, log=log))
    assert ok.stdout == "TOTALCPU=400 TOTALMEMORY=1024 HOST=h7\n"
    assert log.records[0] == ("I", "Command execution: im/run_probes mine 5 h7")
    assert ("I", "a-cpu: probing host 5") in log.records
    write_script(remotes, "im/mine.d/c-net", '#!/bin/sh\necho "ERROR: c-net: no eth1" >&2\nexit 2\n')
    bad = asyncio.run(run_probes(local, "mine", 5, "h7", stdin=None, timeout=10, log=None))
    assert (bad.rc, bad.error) == (1, "Error executing c-net: c-net: no eth1")
    unknown = asyncio.run(run_probes(local, "xen", 5, "h7", stdin=None, timeout=10, log=None))
    assert unknown.rc == 1 and unknown.error.startswith("no probes for hypervisor xen")


# --- pool ----------------------------------------------------------------------------------


def test_pool_routes_local_names_to_the_local_runner(remotes: Path) -> None:
    async def check() -> None:
        pool = RunnerPool(remotes, local_names=["localhost", "fe"],
                          ssh_defaults=HostAccess(username="oneadmin", port=2222))
        assert pool.for_host("localhost") is pool.local() is pool.for_host("fe")
        h1 = pool.for_host("h1", HostAccess(address="10.0.0.1"))
        assert pool.for_host("h1") is h1  # no access given: the existing runner
        assert pool.for_host("h1", HostAccess(address="10.0.0.1")) is h1
        moved = pool.for_host("h1", HostAccess(address="10.0.0.2"))
        assert moved is not h1 and getattr(moved, "port", None) == 2222
        pool.invalidate()
        await pool.close()

    asyncio.run(check())


def test_pool_fills_host_access_from_defaults() -> None:
    defaults = HostAccess(username="oneadmin", client_keys=("/k",), known_hosts="/kh",
                          remote_dir="/srv/one")
    merged = HostAccess(address="10.0.0.5", port=2200).over(defaults)
    assert merged == HostAccess(address="10.0.0.5", port=2200, username="oneadmin",
                                client_keys=("/k",), known_hosts="/kh", remote_dir="/srv/one")
    assert os.fspath(Path("/srv/one")) == merged.remote_dir
