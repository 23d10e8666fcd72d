"""What the network drivers and the seed's hooks share on a host: OpenNebula's error block
(the dispatcher shows the text between its markers as the action's error) and commands
run as argument lists, as root or else through `sudo -n`."""

from __future__ import annotations

import os
import subprocess
import sys
from typing import NoReturn

ERROR_BEGIN = "ERROR MESSAGE --8<------"
ERROR_END = "ERROR MESSAGE ------>8--"


def fail(message: str) -> NoReturn:
    sys.stderr.write(f"{ERROR_BEGIN}\n{message}\n{ERROR_END}\n")
    sys.exit(1)


def run(argv: list[str], *, stdin: str | None = None, check: bool = True,
        prefix: str = "") -> subprocess.CompletedProcess[str]:
    """Run `argv` (through `sudo -n` unless root). A missing program fails the action; so
    does a non-zero exit when `check`, with the command and its answer (after `prefix`)."""
    full = argv if os.geteuid() == 0 else ["sudo", "-n", *argv]
    try:
        done = subprocess.run(full, input=stdin, capture_output=True, text=True, check=False)
    except FileNotFoundError:
        fail(f"{prefix}{full[0]} is not installed on this host")
    if check and done.returncode != 0:
        fail(f"{prefix}{' '.join(full)}: {(done.stderr or done.stdout).strip()}")
    return done
