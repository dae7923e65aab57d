"""RabbitMQ users made the way an operator makes them (`ws-gateway-admin rabbitmq-user`), for permission tests."""

from __future__ import annotations

import subprocess
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from urllib.parse import quote, unquote, urlsplit, urlunsplit

import ws_gateway_admin


def as_user(url: str, user: str, password: str) -> str:
    """`url` with another user's credentials."""
    parts = urlsplit(url)
    netloc = f"{quote(user, safe='')}:{quote(password, safe='')}@{parts.hostname}:{parts.port or 5672}"
    return urlunsplit(parts._replace(netloc=netloc))


def vhost_of(url: str) -> str:
    return unquote(urlsplit(url).path.lstrip("/")) or "/"


@contextmanager
def broker_users(directory: Path) -> Iterator[BrokerUsers]:
    users = BrokerUsers(directory)
    try:
        yield users
    finally:
        for user in users.made:
            subprocess.run(["rabbitmqctl", "-q", "delete_user", user], check=False, capture_output=True, timeout=60)


class BrokerUsers:
    """Makes uniquely named users with `ws-gateway-admin rabbitmq-user`; `broker_users` deletes them."""

    def __init__(self, directory: Path) -> None:
        self._directory = directory
        self.made: list[str] = []

    def make(self, vhost: str, name: str, *extra: str) -> tuple[str, str]:
        """A user for `name` (a service, or with `--role` the gateway's part); returns (user, password)."""
        user, password = f"wsg-test-{uuid.uuid4().hex[:8]}", uuid.uuid4().hex
        self.made.append(user)
        secret = self._directory / f"{user}.password"
        secret.write_text(password + "\n")
        argv = ["rabbitmq-user", name, "--user", user, "--vhost", vhost, "--password-file", str(secret), *extra]
        assert ws_gateway_admin.main(argv) == 0
        return user, password
