"""README's copy-paste commands, run as written against a live daemon."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.live import ROOT, LiveNubo
from tests.strict import missing

pytestmark = pytest.mark.slow


def block(language: str, after: str) -> str:
    text = (ROOT / "README.md").read_text()
    section = text[text.index(after):]
    found = re.search(rf"```{language}\n(.*?)```", section, re.S)
    assert found, f"no {language} block after {after!r} in README.md"
    return found.group(1)


def test_first_vm_commands(nubo: LiveNubo, tmp_path: Path) -> None:
    script = block("sh", "## A first VM")
    env = nubo.env()
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env['PATH']}"
    result = subprocess.run(["bash", "-e", "-c", script], cwd=ROOT, env=env, text=True,
                            capture_output=True, timeout=300)
    assert result.returncode == 0, result.stdout + result.stderr
    out = result.stdout
    assert re.search(r"^\s*\d+\s+node1\s", out, re.M), out
    assert "boot → runn" in out or "pend → runn" in out or "prol" in out, out
    assert "→ done" in out, out  # the shutdown played out
    assert "Command execution: vmm/dummy/deploy" in out  # the VM log


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
