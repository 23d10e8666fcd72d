"""README's copy-paste commands, run as written against a live daemon."""

from __future__ import annotations

import os
import re
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from tests.live import FAST_CONF, ROOT, LiveNubo
from tests.strict import missing

pytestmark = pytest.mark.slow


def block(language: str, after: str) -> str:
    text = (ROOT / "README.md").read_text()
    section = text[text.index(after):]
    found = re.search(rf"```{language}\n(.*?)```", section, re.S)
    assert found, f"no {language} block after {after!r} in README.md"
    return found.group(1)


def test_first_vm_commands(tmp_path: Path) -> None:
    """On what `make run` gives (localhost on qemu, the fs datastore), with short intervals."""
    conf = FAST_CONF.replace("DEFAULT_DS_MAD = dummy\n", "").replace("LOCALHOST_VMM = dummy\n", "")
    nubo = LiveNubo(tmp_path / "var", conf=conf)
    nubo.start()
    try:
        script = block("sh", "## A first VM")
        env = nubo.env()
        env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env['PATH']}"
        result = subprocess.run(["bash", "-e", "-c", script], cwd=ROOT, env=env, text=True,
                                capture_output=True, timeout=600)
        assert result.returncode == 0, result.stdout + result.stderr
        assert "Host localhost runs VMs with qemu" in nubo.log_path.read_text()
        out = result.stdout
        assert re.search(r"^\s*\d+\s+localhost\s", out, re.M), out
        assert "lock → rdy" in out, out  # the image copied into the datastore
        assert "boot → runn" in out or "prol → runn" in out, out
        assert "→ done" in out, out  # the shutdown played out
        ok, pool, _ = nubo.rpc().one.vmpool.info(nubo.session, -2, -1, -1, -2)  # DONE too
        assert ok, pool
        tiny = re.search(r"<ID>(\d+)</ID>(?:(?!</VM>).)*<NAME>tiny</NAME>", pool, re.S)
        assert tiny, pool
        log = nubo.cli("vm", "log", tiny.group(1)).stdout
        for action in ("deploy", "save", "restore", "shutdown"):
            assert f"vmm/qemu/{action}" in log, action
    finally:
        nubo.stop()
        for proc in Path("/proc").iterdir():  # a guest a failed run left behind
            try:
                if proc.name.isdigit() and str(nubo.var).encode() in (proc / "cmdline").read_bytes():
                    os.kill(int(proc.name), signal.SIGKILL)
            except OSError:
                pass


def test_pyone_snippet(nubo: LiveNubo, tmp_path: Path) -> None:
    code = block("python", "works unchanged:")
    code = code.replace("http://127.0.0.1:4567/RPC2", nubo.url)
    code = code.replace('"var/one_auth"', repr(str(nubo.var / "one_auth")))
    result = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, text=True,
                            capture_output=True, timeout=60)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() in {"1", "3"}  # PENDING or already ACTIVE


def test_occi_commands(nubo: LiveNubo) -> None:
    """README's OCCI curl block, after the first-VM block registered image `base`."""
    if shutil.which("curl") is None:
        missing("curl")
    script = block("sh", "compute needs exactly one `os_tpl`")
    script = script.replace("http://127.0.0.1:4567", f"http://127.0.0.1:{nubo.port}")
    script = script.replace("var/one_auth", str(nubo.var / "one_auth"))
    nubo.rpc().one.image.allocate(nubo.session, 'NAME = "base"\nPATH = "/b.img"\n', 1)  # or it exists
    result = subprocess.run(["bash", "-euo", "pipefail", "-c", script], cwd=ROOT, text=True,
                            capture_output=True, timeout=120)
    assert result.returncode == 0, result.stdout + result.stderr
    out = result.stdout
    assert "HTTP/1.1 200" in out and 'occi.compute.hostname="web.example"' in out
    assert re.search(r"^http://127\.0\.0\.1:\d+/compute/\d+$", out, re.M), out  # uri-list
    assert '"kind": "http://schemas.ogf.org/occi/infrastructure#compute"' in out
