"""`nubo`: the command line. Everything but `serve` talks to the daemon over XML-RPC.

One module per resource (`hosts`, `vms`, `images`, `templates`, `users`), each
registering its verbs; `client` is the only way to the daemon, `views` turns its XML
documents into dicts, `output` prints them. A failure is one `nubo: error:` line on
stderr and exit status 1, never a traceback (NUBO_DEBUG=1 shows one for bugs).
"""

from __future__ import annotations

import argparse
import os
import sys

from core.cli import datastores, hooks, hosts, images, lab, templates, users, vms, vnets
from core.cli.client import Client, CliError
from core.cli.commands import Parser
from core.cli.output import error

__all__ = ["main"]

EPILOG = """\
environment:
  NUBO_URL   the daemon's XML-RPC endpoint (default http://127.0.0.1:4567/RPC2)
  ONE_AUTH   file holding user:password (default $NUBO_VAR/one_auth, with NUBO_VAR
             defaulting to ./var, else ~/.one/one_auth)
"""


def build_parser() -> argparse.ArgumentParser:
    parser = Parser(prog="nubo", description="Nubo private cloud", epilog=EPILOG,
                    formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    sub.add_parser("serve", help="run the cloud (daemon and front doors) in the foreground")
    for module in (hosts, vms, images, datastores, templates, users, vnets, hooks, lab):
        module.register(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command == "serve":
        from apis.server import serve  # the one place core reaches into the front doors

        serve()
        return 0
    try:
        # commands that act on this machine (`nubo lab`) need no daemon and no credentials
        client = Client.from_environment() if getattr(args, "needs_client", True) else None
        return int(args.run(client, args))
    except CliError as exc:
        error(str(exc))
    except KeyboardInterrupt:
        error("interrupted")
        return 130
    except BrokenPipeError:
        # the reader went away (`nubo vm list | head`): stop quietly
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
    except Exception as exc:
        if os.environ.get("NUBO_DEBUG"):
            raise
        error(f"unexpected {type(exc).__name__}: {exc} (NUBO_DEBUG=1 shows the traceback)")
    return 1
