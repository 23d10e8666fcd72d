"""How a command is declared: its parser (always with --json) and the function it runs."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable
from pathlib import Path
from typing import NoReturn, TypeAlias

from core import template
from core.cli.client import POOLS, Client, CliError, resolve
from core.cli.output import error
from core.errors import InvalidRequest

Run = Callable[[Client, argparse.Namespace], int]
Subparsers: TypeAlias = "argparse._SubParsersAction[argparse.ArgumentParser]"


class Parser(argparse.ArgumentParser):
    """argparse that reports a usage error as one `nubo: error:` line and exits 1."""

    def error(self, message: str) -> NoReturn:
        sys.stderr.write(f"nubo: error: {message} (see `{self.prog} --help`)\n")
        sys.exit(1)


def group(sub: Subparsers, name: str, help_text: str) -> Subparsers:
    """`nubo <name> ...`: a resource whose verbs are subcommands."""
    parser = sub.add_parser(name, help=help_text, description=help_text)
    verbs: Subparsers = parser.add_subparsers(dest="verb", metavar="VERB", required=True,
                                              parser_class=Parser)
    return verbs


def command(sub: Subparsers, name: str, help_text: str, run: Run,
            description: str | None = None) -> argparse.ArgumentParser:
    parser: argparse.ArgumentParser = sub.add_parser(
        name, help=help_text, description=description or help_text,
        formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--json", action="store_true",
                        help="print machine-readable JSON instead of text")
    parser.set_defaults(run=run)
    return parser


def read_source(name: str) -> str:
    """The contents of FILE, or standard input for `-`."""
    if name == "-":
        return sys.stdin.read()
    try:
        return Path(name).read_text()
    except OSError as exc:
        raise CliError(f"cannot read {name}: {exc.strerror or exc}") from None


def attribute(spec: str) -> tuple[str, template.Value]:
    """`NAME=VALUE` (`NAME=[K=v, ...]` for a vector) from an --attr option."""
    name, sep, value = spec.partition("=")
    name = name.strip()
    if not sep or not name:
        raise CliError(f"--attr wants NAME=VALUE, not {spec!r}")
    try:
        if value.lstrip().startswith("["):
            ((parsed_name, parsed),) = template.parse(f"{name} = {value}")
            return parsed_name, parsed
        return template.Template([(name, value)]).attrs[0]
    except (InvalidRequest, ValueError) as exc:
        raise CliError(f"--attr {spec!r}: {exc}") from None


def parse_template(text: str, source: str) -> template.Template:
    try:
        return template.parse(text)
    except InvalidRequest as exc:
        raise CliError(f"{source}: {exc}") from None


def for_each(client: Client, kind: str, refs: list[str], act: Callable[[int], object]) -> int:
    """Act on several objects; each failure is reported and the others still run."""
    failed = 0
    for ref in refs:
        try:
            act(resolve(client, kind, ref))
        except CliError as exc:
            if len(refs) == 1:
                raise
            label = f"{POOLS[kind][3]} {ref}"
            error(str(exc) if label in str(exc) else f"{label}: {exc}")
            failed += 1
    return 1 if failed else 0
