"""Fixtures of the driver tests: the shipped remotes tree, a writable copy of it, and a lab
of network-namespace hosts with real OpenSSH servers (drivers/lab.py)."""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest

from drivers.lab import Lab, LabUnavailable, create_hosts
from drivers.runner import LocalRunner
from tests.strict import missing

REMOTES = Path(__file__).resolve().parents[2] / "drivers" / "remotes"
# Scripts start with `#!/usr/bin/env python3`: resolve it to the system interpreter rather
# than whatever shims the developer's PATH holds (pyenv's cost ~90 ms per action).
SYSTEM_PATH = {"PATH": "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"}


def write_script(root: Path, rel: str, text: str) -> Path:
    path = root / rel
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    path.chmod(0o755)
    return path


@pytest.fixture
def remotes(tmp_path: Path) -> Path:
    """A private copy of drivers/remotes that a test may change."""
    copy = tmp_path / "remotes"
    shutil.copytree(REMOTES, copy, symlinks=True, ignore=shutil.ignore_patterns("__pycache__"))
    return copy


@pytest.fixture
def local(remotes: Path) -> LocalRunner:
    return LocalRunner(remotes, env=SYSTEM_PATH)


@pytest.fixture(scope="session")
def lab(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Lab]:
    try:
        # shared: <workdir>/shared on every host at one path (tm/shared, tm/qcow2)
        made = create_hosts(2, tmp_path_factory.mktemp("lab"), shared=True)
    except LabUnavailable as exc:
        missing(f"the namespace lab ({exc})")
    try:
        yield made
    finally:
        made.destroy()
