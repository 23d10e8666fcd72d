"""SshRunner and RunnerPool against real OpenSSH servers in network-namespace hosts."""

from __future__ import annotations

import asyncio
import os
import shlex
import subprocess
import time
import uuid
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any, TypeVar

import pytest

from drivers.lab import Lab, clean_stale
from drivers.runner import (
    HASH_FILE,
    DriverResult,
    HostAccess,
    RunnerPool,
    SshRunner,
    SyncFailed,
    error_block,
)
from tests.drivers.conftest import write_script
from tests.drivers.documents import Recorder, host_document, vm_document
from tests.drivers.test_local import SHOW_ARGS, SHOWN_ARGS, TRICKY_ARGS

T = TypeVar("T")


def fresh_access(lab: Lab, name: str = "h1", **changes: Any) -> HostAccess:
    """Access to a host with a remote dir nobody used yet."""
    remote = f"{lab.host(name).dir}/remote-{uuid.uuid4().hex[:8]}"
    return lab.access(name, remote_dir=remote, **changes)


def with_runner(access: HostAccess, remotes: Path, body: Callable[[SshRunner], Awaitable[T]],
                **kw: Any) -> T:
    async def go() -> T:
        runner = SshRunner.from_access("h1", access, remotes_dir=remotes, **kw)
        try:
            return await body(runner)
        finally:
            await runner.close()

    return asyncio.run(go())


def accepted(lab: Lab, name: str = "h1") -> int:
    """Connections the host's sshd accepted so far."""
    return (lab.host(name).dir / "sshd.log").read_text().count("Accepted publickey")


def probe(runner: SshRunner, log: Recorder | None = None, **kw: Any) -> Awaitable[DriverResult]:
    return runner.run("im", "", "run_probes", ["dummy", "1", "h1"],
                      stdin=host_document(1, "h1"), log=log, **kw)


def test_first_call_syncs_the_tree_then_reuses_it(lab: Lab, remotes: Path) -> None:
    access = fresh_access(lab)
    first, second = Recorder(), Recorder()

    async def body(runner: SshRunner) -> None:
        assert (await probe(runner, first)).stdout.startswith("HYPERVISOR=dummy ")
        assert (await probe(runner, second)).ok

    with_runner(access, remotes, body)
    copied = f"Copying remotes to h1:{access.remote_dir}"
    assert copied in first.messages("I") and copied not in second.messages()
    remote = Path(access.remote_dir)
    assert os.access(remote / "vmm/dummy/deploy", os.X_OK)
    assert not os.access(remote / "vmm/dummy/VERSION", os.X_OK)
    digest = (remote / HASH_FILE).read_text().strip()
    # A new connection (a restarted daemon) finds the same hash: nothing is copied.
    again = Recorder()
    with_runner(access, remotes, lambda r: probe(r, again))
    assert copied not in again.messages()
    assert (remote / HASH_FILE).read_text().strip() == digest


def test_changed_tree_is_resynced_after_invalidate(lab: Lab, remotes: Path) -> None:
    access = fresh_access(lab)
    remote = Path(access.remote_dir)

    async def body(runner: SshRunner) -> None:
        assert (await probe(runner)).ok
        write_script(remotes, "vmm/mydrv/poll", "#!/bin/sh\necho STATE=a MYDRV=1\n")
        (remotes / "tm/dummy/mvds").unlink()
        stale = await runner.run("vmm", "mydrv", "poll", [], timeout=10)
        assert stale.ok  # not there yet: exit 42, sync, retry (even without invalidate)
        assert (remote / "tm/dummy/mvds").exists() is False
        (remotes / "vmm/mydrv/poll").write_text("#!/bin/sh\necho STATE=a MYDRV=2\n")
        assert (await runner.run("vmm", "mydrv", "poll", [])).stdout == "STATE=a MYDRV=1\n"
        runner.invalidate()  # `nubo host sync`
        log = Recorder()
        assert (await runner.run("vmm", "mydrv", "poll", [], log=log)).stdout == "STATE=a MYDRV=2\n"
        assert any(m.startswith("Copying remotes") for m in log.messages())

    with_runner(access, remotes, body)
    assert os.access(remote / "vmm/mydrv/poll", os.X_OK)


def test_removed_files_are_deleted_on_the_host_and_foreign_files_kept(lab: Lab,
                                                                     remotes: Path) -> None:
    access = fresh_access(lab)
    remote = Path(access.remote_dir)

    async def body(runner: SshRunner) -> None:
        await runner.sync()
        (remote / "notes.txt").write_text("the admin's file\n")
        for name in os.listdir(remotes / "tm/dummy"):
            (remotes / "tm/dummy" / name).unlink()
        (remotes / "tm/dummy").rmdir()
        runner.invalidate()
        await runner.sync()

    with_runner(access, remotes, body)
    assert not (remote / "tm/dummy").exists()
    assert (remote / "vmm/dummy/deploy").exists() and (remote / "notes.txt").exists()


def test_missing_remote_script_exit_42_syncs_and_retries(lab: Lab, remotes: Path) -> None:
    access = fresh_access(lab)
    remote = Path(access.remote_dir)
    ds = lab.host("h1").datastores / uuid.uuid4().hex[:8]

    async def body(runner: SshRunner) -> DriverResult:
        assert (await probe(runner)).ok
        (remote / "vmm/dummy/deploy").unlink()  # someone wiped it on the host
        return await runner.run("vmm", "dummy", "deploy", ["/d", "h1", "7", "h1"], log=log,
                                stdin=vm_document(7, [("h1", ds)]))

    log = Recorder()
    result = with_runner(access, remotes, body)
    assert (result.rc, result.stdout) == (0, "dummy-7\n")
    assert "vmm/dummy/deploy missing on h1: syncing remotes and retrying" in log.messages()
    assert f"Copying remotes to h1:{access.remote_dir}" in log.messages()
    assert (remote / "vmm/dummy/deploy").exists()


def test_script_missing_everywhere_fails_after_one_retry(lab: Lab, remotes: Path) -> None:
    result = with_runner(fresh_access(lab), remotes, lambda r: r.run("vmm", "dummy", "resize", []))
    assert result.rc == 42 and result.error.startswith("nubo: script missing: ")


def test_dummy_lifecycle_over_ssh(lab: Lab, remotes: Path) -> None:
    ds = lab.host("h1").datastores / uuid.uuid4().hex[:8]

    async def body(runner: SshRunner) -> list[DriverResult]:
        doc = vm_document(8, [("h1", ds)], CPU=2, MEMORY=64, DUMMY_FAIL="reboot")
        return [
            await runner.run("vmm", "dummy", action, [*args, "8", "h1"], stdin=doc)
            for action, args in [("deploy", ["/d", "h1"]), ("poll", ["dummy-8", "h1"]),
                                 ("reboot", ["dummy-8", "h1"]), ("shutdown", ["dummy-8", "h1"])]
        ]

    deploy, poll, reboot, shutdown = with_runner(fresh_access(lab), remotes, body)
    assert deploy.stdout == "dummy-8\n" and shutdown.ok
    assert poll.stdout == "STATE=a USEDCPU=20 USEDMEMORY=65536 NETRX=0 NETTX=0\n"
    assert (reboot.rc, reboot.error) == (1, "dummy: injected failure of reboot")
    assert (ds / "0/8/dummy.json").exists()


def test_many_concurrent_calls_share_one_connection(lab: Lab, remotes: Path) -> None:
    before = accepted(lab)
    write_script(remotes, "vmm/mydrv/poll", '#!/bin/sh\nsleep 0.2\necho "STATE=a N=$1"\n')

    async def body(runner: SshRunner) -> tuple[list[DriverResult], float]:
        started = time.monotonic()
        results = await asyncio.gather(*(
            runner.run("vmm", "mydrv", "poll", [str(i)], stdin=b"<VM/>") for i in range(40)
        ))
        return list(results), time.monotonic() - started

    results, elapsed = with_runner(fresh_access(lab), remotes, body, max_channels=20)
    assert [r.stdout for r in results] == [f"STATE=a N={i}\n" for i in range(40)]
    assert accepted(lab) - before == 1
    assert elapsed < 40 * 0.2 / 4  # really concurrent (20 channels: ~0.4 s plus the sync)


def test_timeout_kills_the_remote_action(lab: Lab, remotes: Path) -> None:
    pidfile = lab.host("h1").dir / f"{uuid.uuid4().hex[:8]}.pid"
    write_script(remotes, "vmm/mydrv/deploy", '#!/bin/sh\necho $$ > "$1"\nsleep 60 & wait\n')

    async def body(runner: SshRunner) -> tuple[DriverResult, float, DriverResult]:
        await runner.sync()
        started = time.monotonic()
        result = await runner.run("vmm", "mydrv", "deploy", [str(pidfile)], timeout=0.5)
        elapsed = time.monotonic() - started
        return result, elapsed, await probe(runner)  # the connection is still usable

    result, elapsed, after = with_runner(fresh_access(lab), remotes, body)
    assert (result.rc, result.error) == (124, "timed out after 0.5 s")
    assert elapsed < 3 and after.ok
    pid = int(pidfile.read_text())
    deadline = time.monotonic() + 2
    while os.path.exists(f"/proc/{pid}") and time.monotonic() < deadline:
        time.sleep(0.02)
    assert not os.path.exists(f"/proc/{pid}")


def test_unreachable_hosts_give_rc_255_and_a_clear_error(lab: Lab, remotes: Path) -> None:
    refused = with_runner(fresh_access(lab, port=2222), remotes, probe)
    assert refused.rc == 255
    assert refused.error == "cannot reach host h1 (10.213.0.11:2222): Connection refused"

    async def silent() -> DriverResult:
        runner = SshRunner(name="ghost", address="10.213.0.250", remotes_dir=remotes,
                           netns=lab.netns, connect_timeout=0.3)
        try:
            return await runner.run("vmm", "dummy", "poll", ["x", "ghost", "1", "ghost"])
        finally:
            await runner.close()

    started = time.monotonic()
    ghost = asyncio.run(silent())
    assert (ghost.rc, ghost.error) == (
        255, "cannot reach host ghost (10.213.0.250:22): connection timed out")
    assert time.monotonic() - started < 3


def test_wrong_key_or_unknown_host_key_is_refused(lab: Lab, remotes: Path,
                                                  tmp_path: Path) -> None:
    other = tmp_path / "known_hosts"
    other.write_text((lab.known_hosts.read_text().splitlines()[1]).replace("10.213.0.12",
                                                                          "10.213.0.11") + "\n")
    spoofed = with_runner(fresh_access(lab, known_hosts=str(other)), remotes, probe)
    assert spoofed.rc == 255 and spoofed.error.startswith("cannot reach host h1 (10.213.0.11:22)")
    wrong_user = with_runner(fresh_access(lab, username="nobody"), remotes, probe)
    assert wrong_user.rc == 255 and "Permission denied" in wrong_user.error


def test_sync_failure_raises_sync_failed(lab: Lab, remotes: Path) -> None:
    async def body(runner: SshRunner) -> None:
        with pytest.raises(SyncFailed) as caught:
            await runner.sync()
        assert caught.value.result.rc == 255

    with_runner(fresh_access(lab, port=2222), remotes, body)


def test_pool_reaches_lab_hosts_and_resyncs_all_after_invalidate(lab: Lab,
                                                                 remotes: Path) -> None:
    tag = uuid.uuid4().hex[:8]
    defaults = HostAccess(username=lab.user, client_keys=(str(lab.client_key),),
                          known_hosts=str(lab.known_hosts), netns=lab.netns)

    async def body() -> list[str]:
        pool = RunnerPool(remotes, ssh_defaults=defaults)
        try:
            for host in lab.hosts:
                access = HostAccess(address=host.address, remote_dir=f"{host.dir}/pool-{tag}")
                assert (await pool.for_host(host.name, access).run(
                    "im", "", "run_probes", ["dummy", "0", host.name])).ok
            write_script(remotes, "im/dummy.d/zz-extra", "#!/bin/sh\necho EXTRA=yes\n")
            pool.invalidate()
            outs = [(await pool.for_host(h.name).run("im", "", "run_probes",
                                                     ["dummy", "0", h.name])).stdout
                    for h in lab.hosts]
            local = await pool.for_host("localhost").run("im", "", "run_probes",
                                                         ["dummy", "0", "localhost"])
            return [*outs, local.stdout]
        finally:
            await pool.close()

    outs = asyncio.run(body())
    assert all(out.rstrip().endswith("EXTRA=yes") for out in outs)
    assert "HOSTNAME=h2 " in outs[1]


def test_a_dropped_connection_is_recreated(lab: Lab, remotes: Path) -> None:
    listener = lab.host("h1").sshd
    assert listener is not None
    before = accepted(lab)

    def sessions() -> set[int]:
        found = set()
        for task in Path(f"/proc/{listener.pid}/task").iterdir():
            found.update(int(p) for p in (task / "children").read_text().split())
        return found

    async def body(runner: SshRunner) -> DriverResult:
        existing = sessions()
        assert (await probe(runner)).ok
        for pid in sessions() - existing:  # this connection's sshd: the host "reboots"
            os.kill(pid, 9)
        await asyncio.sleep(0.1)
        return await probe(runner)

    assert with_runner(fresh_access(lab), remotes, body).ok
    assert accepted(lab) - before == 2


# --- execute: an absolute command of the host, no remotes sync ----------------------------


def host_bin(lab: Lab, name: str = "h1") -> Path:
    """A fresh directory of the host's own for commands (the lab shares the filesystem)."""
    return lab.host(name).dir / f"bin-{uuid.uuid4().hex[:8]}"


def test_execute_on_the_host_passes_argv_stdin_and_env_intact(lab: Lab, remotes: Path) -> None:
    show = write_script(host_bin(lab), "show args", SHOW_ARGS + 'echo "over=${SSH_CONNECTION%% *}"\n')
    access = fresh_access(lab)
    log = Recorder()

    async def body(runner: SshRunner) -> list[DriverResult]:
        return [
            await runner.execute([str(show), *TRICKY_ARGS], stdin=b"<VM/>", log=log,
                                 env={"NUBO_HOOK_VAR": "a b'c\"$d", "NUBO_TEST_LABEL": "x1"}),
            await runner.execute([str(show)], timeout=10),
        ]

    full, bare = with_runner(access, remotes, body)
    assert (full.rc, full.stderr) == (0, "")
    assert full.stdout == (SHOWN_ARGS + "stdin=<VM/>\nvar=a b'c\"$d label=x1\n"
                           "over=10.213.0.10\n")  # ran in an ssh session from the front-end
    assert bare.stdout == "stdin=\nvar=unset label=unset\nover=10.213.0.10\n"
    assert log.records == [
        ("I", f"Command execution: {shlex.join([str(show), *TRICKY_ARGS])}"),
        ("I", f"{show} succeeded"),
    ]
    assert not Path(access.remote_dir).exists()  # nothing was synced


def test_execute_on_the_host_logs_severities_and_a_missing_command_is_127(
        lab: Lab, remotes: Path) -> None:
    where = host_bin(lab)
    hook = write_script(where, "hook", '#!/bin/sh\necho "DEBUG: hook: $1" >&2\n'
                        'echo "ERROR: hook: failed on $1" >&2\nexit 3\n')
    (where / "plain").write_text("#!/bin/sh\n")
    log = Recorder()

    async def body(runner: SshRunner) -> list[DriverResult]:
        return [await runner.execute([str(hook), "one 7"], log=log),
                await runner.execute([str(where / "nope"), "x"]),
                await runner.execute([str(where / "plain")]),
                await runner.execute(["ebtables-kvm"])]

    failed, missing, plain, relative = with_runner(fresh_access(lab), remotes, body)
    assert (failed.rc, failed.error) == (3, "hook: failed on one 7")
    assert log.records[1:] == [("D", "hook: one 7"), ("E", "hook: failed on one 7"),
                               ("E", f"{hook} failed: hook: failed on one 7")]
    message = f"command missing: {where / 'nope'}"
    assert (missing.rc, missing.error, missing.stderr) == (127, message, error_block(message))
    assert (plain.rc, plain.error) == (127, f"command missing: {where / 'plain'}")
    assert (relative.rc, relative.error) == (
        126, "command must be an absolute path, not 'ebtables-kvm'")


def test_execute_timeout_kills_the_remote_process_group(lab: Lab, remotes: Path) -> None:
    where = host_bin(lab)
    pids = where / "pids"
    hook = write_script(where, "slow", '#!/bin/sh\nsleep 60 &\necho "$$ $!" > "$1"\nwait\n')

    async def body(runner: SshRunner) -> tuple[DriverResult, float, DriverResult]:
        started = time.monotonic()
        result = await runner.execute([str(hook), str(pids)], timeout=0.5,
                                      env={"NUBO_HOOK_VAR": "x"})
        elapsed = time.monotonic() - started
        return result, elapsed, await runner.execute(["/bin/true"])  # still usable

    result, elapsed, after = with_runner(fresh_access(lab), remotes, body)
    assert (result.rc, result.error) == (124, "timed out after 0.5 s")
    assert elapsed < 3 and after.ok
    for pid in map(int, pids.read_text().split()):  # the hook and its child
        deadline = time.monotonic() + 2
        while os.path.exists(f"/proc/{pid}") and time.monotonic() < deadline:
            time.sleep(0.02)
        assert not os.path.exists(f"/proc/{pid}")


def test_execute_on_an_unreachable_host_is_255(lab: Lab, remotes: Path) -> None:
    log = Recorder()
    result = with_runner(fresh_access(lab, port=2222), remotes,
                         lambda r: r.execute(["/bin/true"], log=log))
    error = "cannot reach host h1 (10.213.0.11:2222): Connection refused"
    assert (result.rc, result.error) == (255, error)
    assert log.records[-1] == ("E", f"/bin/true failed: {error}")


def test_lab_removes_namespaces_left_by_dead_runs(lab: Lab) -> None:
    dead = subprocess.Popen(["true"])  # noqa: S603, S607
    dead.wait()
    ns = f"nubo-t{dead.pid}-fabric"
    subprocess.run(["ip", "netns", "add", ns], check=True)  # noqa: S603, S607
    assert ns in clean_stale()
    assert not os.path.exists(f"/run/netns/{ns}")
    assert os.path.exists(f"/run/netns/{lab.netns}")  # ours is alive: kept


# --- heartbeats ---------------------------------------------------------------------------


def test_a_heartbeat_is_answered_while_every_action_channel_is_busy(lab: Lab,
                                                                   remotes: Path) -> None:
    write_script(remotes, "vmm/mydrv/deploy", "#!/bin/sh\nsleep 3\n")

    async def body(runner: SshRunner) -> tuple[DriverResult, float, list[DriverResult]]:
        await runner.sync()
        busy = [asyncio.ensure_future(runner.run("vmm", "mydrv", "deploy", [], timeout=10))
                for _ in range(2)]
        await asyncio.sleep(0.5)  # both channels taken
        started = time.monotonic()
        beat = await runner.beat(1.0)
        return beat, time.monotonic() - started, list(await asyncio.gather(*busy))

    beat, elapsed, actions = with_runner(fresh_access(lab), remotes, body, max_channels=2)
    assert beat.ok, beat.error
    assert elapsed < 1.0  # it did not wait for a channel
    assert all(a.ok for a in actions)


def test_a_heartbeat_to_a_cut_or_closed_host_fails_within_its_timeout(lab: Lab,
                                                                      remotes: Path) -> None:
    h1 = lab.host("h1")

    async def body(runner: SshRunner) -> list[tuple[DriverResult, float]]:
        results = []
        assert (await runner.beat(2.0)).ok
        h1.cut()
        try:
            started = time.monotonic()
            results.append((await runner.beat(0.5), time.monotonic() - started))
        finally:
            h1.mend()
        results.append((await runner.beat(5.0), 0.0))  # the same connection lives on
        return results

    (cut, elapsed), (mended, _) = with_runner(fresh_access(lab), remotes, body)
    assert (cut.rc, cut.error) == (124, "host h1 (10.213.0.11:22) did not answer within 0.5 s")
    assert elapsed < 1.5
    assert mended.ok, mended.error
    closed = with_runner(fresh_access(lab, port=2222), remotes, lambda r: r.beat(2.0))
    assert (closed.rc, closed.error) == (
        255, "cannot reach host h1 (10.213.0.11:2222): Connection refused")


def test_abort_fails_what_runs_on_the_connection_at_once(lab: Lab, remotes: Path) -> None:
    write_script(remotes, "vmm/mydrv/deploy", "#!/bin/sh\nsleep 20\n")

    async def body(runner: SshRunner) -> tuple[DriverResult, float, DriverResult]:
        await runner.sync()
        running = asyncio.ensure_future(runner.run("vmm", "mydrv", "deploy", [], timeout=30))
        await asyncio.sleep(0.5)
        started = time.monotonic()
        await runner.abort()
        failed = await running
        return failed, time.monotonic() - started, await runner.beat(5.0)

    failed, elapsed, beat = with_runner(fresh_access(lab), remotes, body)
    assert failed.rc == 255 and failed.error.startswith("lost connection to host h1")
    assert elapsed < 2
    assert beat.ok  # the next call connects afresh
