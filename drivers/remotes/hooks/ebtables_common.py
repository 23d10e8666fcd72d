"""What ebtables-kvm and ebtables-flush share: running ebtables (as root, else through
`sudo -n`), reading the bridge FORWARD chain, OpenNebula's error block."""

from __future__ import annotations

import os
import subprocess
import sys


def fail(message: str) -> None:
    sys.stderr.write(f"ERROR MESSAGE --8<------\n{message}\nERROR MESSAGE ------>8--\n")
    sys.exit(1)


def say(message: str) -> None:
    print(message, flush=True)


def ebtables(*args: str) -> str:
    argv = ["ebtables", *args] if os.geteuid() == 0 else ["sudo", "-n", "ebtables", *args]
    try:
        done = subprocess.run(argv, capture_output=True, text=True, check=False)
    except FileNotFoundError:
        fail(f"{argv[0]} is not installed on this host")
    if done.returncode != 0:
        fail(f"{' '.join(argv)}: {(done.stderr or done.stdout).strip()}")
    return done.stdout


def listed() -> list[tuple[int, list[str]]]:
    """The FORWARD chain's rules: (number, words) as `ebtables -L FORWARD --Ln` prints them."""
    rules = []
    for line in ebtables("-L", "FORWARD", "--Ln").splitlines():
        number, _, rule = line.strip().partition(" ")
        if number.isdigit():
            rules.append((int(number), rule.split()))
    return rules
