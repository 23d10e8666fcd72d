"""A real `nubo serve` process on loopback, for tests that drive the product as users do."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
import xmlrpc.client
from collections.abc import Callable
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent

# DEFAULT_DS_MAD = dummy: the suite registers images with made-up paths, used in place
# (tests/e2e/test_datastores.py asks for the fs driver). LOCALHOST_VMM = dummy: localhost
# pretends (tests/e2e/test_localhost.py lets `auto` choose qemu)
# the seed's fault-tolerance hook, as its slides print it (`HOST HOOK` with a space, `\$HID`)
SEED_HOST_HOOK = """
HOST HOOK = [
name	=	"error",
on	=	"ERROR",
command	=	"host_error.rb",
arguments	=	"\\$HID -r n",
remote	=	no]
"""


FAST_CONF = """
DEFAULT_DS_MAD = dummy
LOCALHOST_VMM = dummy
SCHED_INTERVAL = 1
MAX_DISPATCH = 50
MAX_HOST = 50
MONITORING_INTERVAL = 2
VM_POLLING_INTERVAL = 2
DRIVER_TIMEOUT = 30
MONITOR_TIMEOUT = 10
"""


def call(nubo: LiveNubo, method: str, *args: Any) -> Any:
    """One XML-RPC call as oneadmin: the payload of its `[true, payload, 0]` reply."""
    ok, payload, code = getattr(nubo.rpc(), method)(nubo.session, *args)[:3]
    assert ok, (method, payload, code)
    return payload


def wait_until(what: str, probe: Callable[[], object], timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while not probe():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.05)


class _OneShotTransport(xmlrpc.client.Transport):
    """Closes its connection after every call (no leaked sockets between tests)."""

    def request(self, host, handler, request_body, verbose=False):  # type: ignore[no-untyped-def]
        try:
            return super().request(host, handler, request_body, verbose)
        finally:
            self.close()


def proxy(url: str) -> xmlrpc.client.ServerProxy:
    return xmlrpc.client.ServerProxy(url, transport=_OneShotTransport())


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class LiveNubo:
    """One daemon: its data dir, port, admin password and process."""

    def __init__(self, var: Path, *, db: str = "", conf: str = FAST_CONF,
                 password: str = "admin-secret") -> None:
        self.var = var
        self.db = db
        self.password = password
        self.port = free_port()
        self.occi_xml_port = free_port()  # OpenNebula's OCCI-XML dialect (apis.occi_xml)
        while self.occi_xml_port == self.port:
            self.occi_xml_port = free_port()
        self.proc: subprocess.Popen[bytes] | None = None
        var.mkdir(parents=True, exist_ok=True)
        (var / "nubo.conf").write_text(conf)
        self.log_path = var / "daemon.log"

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/RPC2"

    @property
    def session(self) -> str:
        return f"oneadmin:{self.password}"

    def env(self) -> dict[str, str]:
        env = dict(os.environ)
        env.update(NUBO_VAR=str(self.var), NUBO_PORT=str(self.port),
                   NUBO_OCCI_XML_PORT=str(self.occi_xml_port),
                   NUBO_ADMIN_PASSWORD=self.password, NUBO_URL=self.url,
                   ONE_AUTH=str(self.var / "one_auth"))
        if self.db:
            env["NUBO_DB"] = self.db
        else:
            env.pop("NUBO_DB", None)
        return env

    def start(self, timeout: float = 30.0) -> None:
        log = open(self.log_path, "ab")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "core.cli", "serve"], cwd=ROOT, env=self.env(),
            stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
        )
        log.close()
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                self.proc.wait()
                raise RuntimeError(f"nubo serve exited with {self.proc.returncode}:\n"
                                   + self.log_path.read_text()[-3000:])
            try:
                ok, _, _ = proxy(self.url).one.system.version(self.session)
                if ok:
                    return
            except OSError:
                time.sleep(0.1)
        self.kill()
        raise RuntimeError("nubo serve did not answer in time:\n" + self.log_path.read_text()[-3000:])

    def kill(self) -> None:
        """SIGKILL: no clean-up of any kind, as a crash."""
        if self.proc is not None and self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait(10)

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGINT)
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                self.kill()

    def rpc(self) -> xmlrpc.client.ServerProxy:
        return proxy(self.url)

    def cli(self, *args: str, check: bool = True, input: str | None = None
            ) -> subprocess.CompletedProcess[str]:
        """Run the `nubo` CLI against this daemon."""
        result = subprocess.run(
            [sys.executable, "-m", "core.cli", *args], cwd=ROOT, env=self.env(), text=True,
            capture_output=True, input=input, timeout=120,
        )
        if check and result.returncode != 0:
            raise AssertionError(f"nubo {' '.join(args)} failed ({result.returncode}):\n"
                                 f"{result.stdout}\n{result.stderr}")
        return result

    def wait_vm(self, vm_id: int, state: str, timeout: float = 30.0) -> dict[str, int]:
        """Wait until VM's `STATE`/`LCM_STATE` reaches a named state (e.g. RUNNING, DONE)."""
        import xml.etree.ElementTree as ET

        from core.lifecycle import LcmState, VmState

        deadline = time.monotonic() + timeout
        last = {}
        while time.monotonic() < deadline:
            ok, doc, _ = self.rpc().one.vm.info(self.session, vm_id)
            assert ok, doc
            root = ET.fromstring(doc)
            st, lcm = int(root.findtext("STATE") or 0), int(root.findtext("LCM_STATE") or 0)
            last = {"STATE": st, "LCM_STATE": lcm}
            name = LcmState(lcm).name if st == VmState.ACTIVE else VmState(st).name
            if name == state:
                return last
            time.sleep(0.1)
        raise AssertionError(f"VM {vm_id} did not reach {state}: {last}")
