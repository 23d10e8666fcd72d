"""`nubo user ...`: oneuser's verbs, plus `keys` for the EC2 front door."""

from __future__ import annotations

import argparse
import sys

from core.cli import views
from core.cli.client import Client, CliError, resolve
from core.cli.commands import Subparsers, command, group
from core.cli.output import Column, emit, emit_id, emit_json, emit_rows, section, template_text

COLUMNS = [
    Column("ID", lambda u: str(u["id"]), right=True),
    Column("GROUP", lambda u: u["group"]),
    Column("NAME", lambda u: u["name"]),
    Column("AUTH", lambda u: u["auth_driver"]),
    Column("ENABLED", lambda u: "yes" if u["enabled"] else "no"),
]


def _user_id(client: Client, ref: str | None) -> int:
    """The user named or numbered, or -1: OpenNebula's "the caller"."""
    return -1 if ref is None else resolve(client, "user", ref)


def _password(given: str) -> str:
    """The password argument; `-` reads it from the first line of standard input."""
    if given != "-":
        return given
    line = sys.stdin.readline().rstrip("\r\n")
    if not line:
        raise CliError("no password on standard input")
    return line


def create(client: Client, args: argparse.Namespace) -> int:
    user_id = int(client.call("one.user.allocate", args.name, _password(args.password),
                              args.driver))
    return emit_id(user_id, args.json)


def list_users(client: Client, args: argparse.Namespace) -> int:
    users = views.pool(client.document("one.userpool.info"), "USER", views.user)
    return emit_rows(COLUMNS, users, args.json)


def show(client: Client, args: argparse.Namespace) -> int:
    u = views.user(client.document("one.user.info", _user_id(client, args.user)))
    if args.json:
        emit_json(u)
        return 0
    fields: list[tuple[str, object]] = [
        ("ID", u["id"]), ("NAME", u["name"]), ("GROUP", u["group"]),
        ("AUTH_DRIVER", u["auth_driver"]), ("PASSWORD", u["password"]),
        ("ENABLED", "Yes" if u["enabled"] else "No"),
    ]
    emit((section(f"USER {u['id']} INFORMATION", fields) + "\n\nUSER TEMPLATE\n"
          + template_text(u["template"])).rstrip())
    return 0


def passwd(client: Client, args: argparse.Namespace) -> int:
    client.call("one.user.passwd", _user_id(client, args.user), _password(args.password))
    return 0


def keys(client: Client, args: argparse.Namespace) -> int:
    reply = client.call("one.user.ec2keys", _user_id(client, args.user))
    if not isinstance(reply, list) or len(reply) != 2:
        raise CliError(f"one.user.ec2keys: unexpected reply {reply!r}")
    access, secret = str(reply[0]), str(reply[1])
    if args.json:
        emit_json({"AWS_ACCESS_KEY_ID": access, "AWS_SECRET_ACCESS_KEY": secret})
    else:
        # keys use only [A-Za-z0-9_-]: `export $(nubo user keys)` takes the lines as they are
        emit(f"AWS_ACCESS_KEY_ID={access}\nAWS_SECRET_ACCESS_KEY={secret}")
    return 0


def token(client: Client, args: argparse.Namespace) -> int:
    name = args.user or client.credentials.session.partition(":")[0]
    value = str(client.call("one.user.login", name, "", -1 if args.revoke else args.expire, -1))
    if args.revoke:
        return 0
    if args.json:
        emit_json({"token": value, "expires_in": args.expire})
    else:
        emit(value)
    return 0


def register(sub: Subparsers) -> None:
    verbs = group(sub, "user", "manage users")
    p = command(verbs, "create", "create a user; prints its ID", create)
    p.add_argument("name", metavar="NAME")
    p.add_argument("password", metavar="PASSWORD", help="its password; - reads it from stdin")
    p.add_argument("--driver", default="core", choices=["core", "public"],
                   help="authentication driver (default core)")
    command(verbs, "list", "list users", list_users)
    p = command(verbs, "show", "show a user (default: you)", show)
    p.add_argument("user", nargs="?", metavar="ID|NAME")
    p = command(verbs, "token", "print a login token (OCCI's X-Auth-Token) for you", token,
                description=(
                    "Print a token that stands in for your password until it expires:\n\n"
                    "  curl -H \"X-Auth-Token: $(nubo user token)\" http://127.0.0.1:4567/-/\n\n"
                    "Admins may name another user. --revoke ends all of that user's tokens."))
    p.add_argument("user", nargs="?", metavar="NAME", help="default: you")
    p.add_argument("--expire", type=int, default=3600, metavar="S",
                   help="seconds the token lives (default 3600, at most 30 days)")
    p.add_argument("--revoke", action="store_true", help="revoke the user's tokens instead")
    p = command(verbs, "passwd", "change a user's password", passwd)
    p.add_argument("user", metavar="ID|NAME")
    p.add_argument("password", metavar="PASSWORD", help="the new password; - reads it from stdin")
    p = command(verbs, "keys", "print a user's EC2 keys as shell variables (default: you)",
                keys, description=(
                    "Print the EC2 access key and secret as two shell assignments:\n\n"
                    "  export $(nubo user keys)  # then aws --endpoint-url ... works"))
    p.add_argument("user", nargs="?", metavar="ID|NAME")
