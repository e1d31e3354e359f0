"""Fixtures for real services: a private Mosquitto from the project's config, a fresh
PostgreSQL database, a Redis key prefix. All removed afterwards.

Outside CI a missing service skips the tests that need it; under ``CI=true`` it fails
them, so CI can never go green by skipping.
"""

from __future__ import annotations

import os
import socket
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from coordinator.devfleet.broker import BrokerError, LocalBroker, mosquitto_binary
from coordinator.setup.credentials import (
    COORDINATOR_USER,
    OPERATOR_USER,
    coordinator_user,
    reader_user,
)
from shared.config.common import MqttConfig

IN_CI = os.environ.get("CI", "").lower() in {"1", "true", "yes"}
PG_ADMIN_URL = os.environ.get("ROLLGUARD_TEST_PG", "postgresql://postgres@127.0.0.1:5432/postgres")
REDIS_URL = os.environ.get("ROLLGUARD_TEST_REDIS", "redis://127.0.0.1:6379/0")
TEST_HOSTS = ["host-a", "host-b", "host-c", "web-1", "web-2", "web-3"]
# Further service users every test broker knows: a second reader, an HA pair.
TEST_SERVICES = [reader_user("second"), coordinator_user("alpha"), coordinator_user("beta")]


def service_missing(what: str) -> None:
    """Skip locally, fail under CI: a test CI needs must never pass by skipping."""
    if IN_CI:
        pytest.fail(f"{what} is required under CI=true but is not available")
    pytest.skip(f"{what} is not available")


def _port_open(host: str, port: int) -> bool:
    try:
        with socket.create_connection((host, port), timeout=1.0):
            return True
    except OSError:
        return False


@dataclass
class Broker:
    """A running private broker and the credentials of every user it knows."""

    server: LocalBroker

    @property
    def port(self) -> int:
        return self.server.port

    def mqtt(self, user: str) -> MqttConfig:
        return MqttConfig(
            host="127.0.0.1",
            port=self.server.port,
            username=user,
            password_file=str(self.server.password_file(user)),
            keepalive=5,
            reconnect_min=0.1,
            reconnect_max=1.0,
        )

    def password(self, user: str) -> str:
        return self.server.password_file(user).read_text().strip()

    def coordinator(self) -> MqttConfig:
        return self.mqtt(COORDINATOR_USER)

    def operator(self) -> MqttConfig:
        return self.mqtt(OPERATOR_USER)

    def add_hosts(self, hosts: list[str]) -> None:
        self.server.add_hosts(hosts)

    def service(self, user: str) -> MqttConfig:
        """Credentials of a further service user (``reader_user(name)``,
        ``coordinator_user(node)``), created on first use: the broker makes a username
        its client id, so every client that runs alongside another needs its own."""
        self.server.add_services([user])
        return self.mqtt(user)


@pytest.fixture
def broker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Broker]:
    """A fresh private Mosquitto per test: tests may stop and restart it."""
    if mosquitto_binary() is None:
        service_missing("the mosquitto binary")
    server = LocalBroker(
        tmp_path_factory.mktemp("broker"), list(TEST_HOSTS), services=list(TEST_SERVICES)
    )
    try:
        server.start()
    except BrokerError as exc:
        service_missing(f"a private mosquitto ({exc})")
    try:
        yield Broker(server)
    finally:
        server.stop()


@pytest.fixture
def pg_url() -> Iterator[str]:
    """A fresh PostgreSQL database, dropped afterwards."""
    try:
        import psycopg
    except ImportError:
        service_missing("psycopg")
    name = f"rollguard_test_{uuid.uuid4().hex[:12]}"
    try:
        with psycopg.connect(PG_ADMIN_URL, autocommit=True, connect_timeout=5) as conn:
            conn.execute(f'CREATE DATABASE "{name}"')
    except psycopg.Error as exc:
        service_missing(f"PostgreSQL at {PG_ADMIN_URL} ({exc})")
    base = PG_ADMIN_URL.rsplit("/", 1)[0]
    try:
        yield f"{base}/{name}"
    finally:
        with psycopg.connect(PG_ADMIN_URL, autocommit=True, connect_timeout=5) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@pytest.fixture
def redis_prefix() -> Iterator[tuple[str, str]]:
    """``(redis_url, prefix)``: a key prefix unique to this test, deleted afterwards."""
    if not _port_open("127.0.0.1", 6379):
        service_missing("Redis at 127.0.0.1:6379")
    import redis

    prefix = f"rgtest:{uuid.uuid4().hex[:12]}"
    client = redis.Redis.from_url(REDIS_URL, socket_timeout=5)
    try:
        yield REDIS_URL, prefix
    finally:
        keys = list(client.scan_iter(match=f"{prefix}*", count=500))
        if keys:
            client.delete(*keys)
        client.close()


@pytest.fixture
def state_dir(tmp_path: Path) -> Path:
    path = tmp_path / "state"
    path.mkdir()
    return path
