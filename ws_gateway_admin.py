"""`ws-gateway-admin`: operator commands that need no running gateway.

`ws-gateway-admin rabbitmq-user SERVICE` creates (or updates) a RabbitMQ user that may read only SERVICE's
queues, through `rabbitmqctl` on the broker's host (no management plugin needed); `--role worker` and
`--role api` make the gateway's own users; `--print` prints the exact commands instead of running them. The
permissions come from `shared.permissions`, the table in README "Security". A password is never printed in an
error and never logged; a generated one is written once to standard output, nothing else is.
"""

from __future__ import annotations

import argparse
import json
import re
import secrets
import shlex
import subprocess
import sys
from collections.abc import Callable, Sequence
from pathlib import Path

from shared.permissions import Permissions, api_permissions, consumer_permissions, worker_permissions

SERVICE_PATTERN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")  # shared.api.ServiceName
PASSWORD_VARIABLE = "RABBITMQ_PASSWORD"
Runner = Callable[[list[str]], subprocess.CompletedProcess[str]]


class AdminError(Exception):
    """A command cannot be carried out; the message says what to do."""


def _run(command: list[str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(command, check=False, capture_output=True, text=True, timeout=120)


def permissions_for(role: str, name: str) -> Permissions:
    if role == "worker":
        return worker_permissions()
    if role == "api":
        return api_permissions()
    if not SERVICE_PATTERN.match(name):
        raise AdminError(f"{name!r} is not a service name (letters, digits, '_', '.', '-'; at most 64)")
    return consumer_permissions(name)


def planned_commands(ctl: list[str], user: str, vhost: str, permissions: Permissions, password: str) -> list[str]:
    """The shell commands `--print` shows; `password` is a shell expression, not a password."""
    q = shlex.quote
    base = " ".join(q(part) for part in ctl)
    return [
        f"{base} add_user {q(user)} {password} || {base} change_password {q(user)} {password}",
        f"{base} set_permissions -p {q(vhost)} {q(user)} "
        + " ".join(q(regex) for regex in (permissions.configure, permissions.write, permissions.read)),
        f"{base} set_user_tags {q(user)}",
    ]


class Rabbitmqctl:
    def __init__(self, ctl: list[str], run: Runner) -> None:
        self._ctl = ctl
        self._run = run

    def __call__(self, action: str, *args: str) -> str:
        result = self._run([*self._ctl, "-q", action, *args])
        if result.returncode != 0:
            # Only the action and rabbitmqctl's own words: the arguments may hold the password.
            raise AdminError(f"rabbitmqctl {action} failed: {result.stderr.strip() or result.stdout.strip()}")
        return result.stdout

    def users(self) -> set[str]:
        listed = json.loads(self("list_users", "--formatter", "json") or "[]")
        return {entry["user"] for entry in listed}


def apply(ctl: Rabbitmqctl, user: str, vhost: str, permissions: Permissions, password: str) -> str:
    """Create or update `user` with exactly `permissions` on `vhost` and no tags; returns what it did."""
    existed = user in ctl.users()
    if existed:
        ctl("change_password", user, password)
    else:
        ctl("add_user", user, password)
    ctl("set_permissions", "-p", vhost, user, permissions.configure, permissions.write, permissions.read)
    ctl("set_user_tags", user)  # no management or administrator tag
    return "updated" if existed else "created"


def rabbitmq_user(args: argparse.Namespace, run: Runner) -> int:
    permissions = permissions_for(args.role, args.name)
    user = args.user or args.name
    ctl_command = shlex.split(args.rabbitmqctl)
    if args.print:
        password = f'"$(cat {shlex.quote(args.password_file)})"' if args.password_file else f'"${PASSWORD_VARIABLE}"'
        what = f"consumer of service {args.name}" if args.role == "consumer" else f"the gateway's {args.role}"
        print(f"# RabbitMQ user {user}: {what}, on vhost {args.vhost}")
        if not args.password_file:
            print(f"# set {PASSWORD_VARIABLE} first")
        for line in planned_commands(ctl_command, user, args.vhost, permissions, password):
            print(line)
        return 0
    generated = args.password_file is None
    if args.password_file is not None:
        try:
            password = Path(args.password_file).read_text(encoding="utf-8").strip()
        except OSError as error:
            raise AdminError(f"cannot read --password-file {args.password_file}: {error.strerror}") from None
        if not password:
            raise AdminError(f"--password-file {args.password_file} is empty")
    else:
        password = secrets.token_urlsafe(24)
    done = apply(Rabbitmqctl(ctl_command, run), user, args.vhost, permissions, password)
    print(
        f"ws-gateway-admin: user {user} {done}: on vhost {args.vhost} configure {permissions.configure!r}, "
        f"write {permissions.write!r}, read {permissions.read!r}, no tags",
        file=sys.stderr,
    )
    if generated:
        print(password)  # the only copy: store it in the consumer's secret store now
    return 0


def parser() -> argparse.ArgumentParser:
    top = argparse.ArgumentParser(prog="ws-gateway-admin", description=__doc__.split("\n\n")[0])
    commands = top.add_subparsers(dest="command", required=True)
    user = commands.add_parser(
        "rabbitmq-user",
        help="create or update a RabbitMQ user with the least permissions its part needs",
        description="Consumers (the default role) may only read their service's queues "
        "ws-gateway.SERVICE.{channel}; they declare passively and cannot publish, bind or read another "
        "service's queue. The generated password (when --password-file is not given) goes to standard output.",
    )
    user.add_argument("name", metavar="SERVICE", help="the consuming service (for --role worker|api: the user name)")
    user.add_argument("--role", choices=("consumer", "worker", "api"), default="consumer")
    user.add_argument("--user", help="the RabbitMQ user name (default: SERVICE)")
    user.add_argument("--vhost", default="/", help="the vhost the gateway uses (default: /)")
    user.add_argument("--password-file", help="read the password from this file instead of generating one")
    user.add_argument("--print", action="store_true", help="print the rabbitmqctl commands instead of running them")
    user.add_argument(
        "--rabbitmqctl",
        default="rabbitmqctl",
        help="how to call rabbitmqctl (e.g. 'docker compose exec -T rabbitmq rabbitmqctl')",
    )
    return top


def main(argv: Sequence[str] | None = None, run: Runner = _run) -> int:
    args = parser().parse_args(argv)
    try:
        return rabbitmq_user(args, run)
    except AdminError as error:
        print(f"ws-gateway-admin: {error}", file=sys.stderr)
        return 1
    except FileNotFoundError as error:
        print(f"ws-gateway-admin: cannot run {error.filename}: is RabbitMQ's CLI installed here?", file=sys.stderr)
        return 1


def entry_point() -> None:
    raise SystemExit(main())


if __name__ == "__main__":
    entry_point()
