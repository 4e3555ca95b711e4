"""Fixtures shared by every test folder: a database on each backend, migrated.

Domain fixtures belong in the conftest.py of their own folder, not here.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from sqlalchemy import Engine, create_engine, make_url, text
from sqlalchemy.pool import NullPool

from agentmeter.db import make_engine, migrate
from agentmeter.settings import Settings
from agentmeter.tenants import NewTenant, create_tenant

POSTGRES_URL_ENV = "AGENTMETER_TEST_POSTGRES_URL"


def _in_ci() -> bool:
    return os.environ.get("CI", "").lower() not in ("", "0", "false")


@pytest.fixture(
    params=[
        pytest.param("sqlite", id="sqlite"),
        pytest.param("postgresql", id="postgresql", marks=pytest.mark.postgres),
    ]
)
def database_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """The URL of a fresh, empty database, once per backend.

    PostgreSQL gets a new database per test on the server named by
    `AGENTMETER_TEST_POSTGRES_URL` (scripts/test.sh starts one), dropped afterwards.
    Without that server the PostgreSQL case is skipped, except in CI where it fails.
    """
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'agentmeter.db'}"
        return

    base_url = os.environ.get(POSTGRES_URL_ENV)
    if not base_url:
        message = f"{POSTGRES_URL_ENV} is not set; run the suite with scripts/test.sh"
        if _in_ci():
            pytest.fail(message)
        pytest.skip(message)

    name = f"agentmeter_test_{uuid.uuid4().hex[:16]}"
    admin = create_engine(base_url, isolation_level="AUTOCOMMIT", poolclass=NullPool)
    quoted = admin.dialect.identifier_preparer.quote(name)
    try:
        with admin.connect() as connection:
            connection.execute(text(f"CREATE DATABASE {quoted}"))
        try:
            yield make_url(base_url).set(database=name).render_as_string(hide_password=False)
        finally:
            with admin.connect() as connection:
                connection.execute(text(f"DROP DATABASE IF EXISTS {quoted} WITH (FORCE)"))
    finally:
        admin.dispose()


@pytest.fixture
def engine(database_url: str) -> Iterator[Engine]:
    """An engine on `database_url` with every migration applied."""
    engine = make_engine(Settings(database_url=database_url))
    try:
        migrate(engine)
        yield engine
    finally:
        engine.dispose()


@dataclass
class RunningServer:
    """`agentmeter serve` in a child process, on ports picked by the OS, with a tenant.

    `kill()` sends SIGKILL (a crash); `start()` starts it again on the same database and
    the same ports.
    """

    database_url: str
    tenant: NewTenant
    grpc_port: int = 0
    http_port: int = 0
    api_port: int = 0
    process: subprocess.Popen[str] | None = None
    log_path: Path | None = None
    env: dict[str, str] = field(default_factory=dict)  # extra AGENTMETER_* settings

    @property
    def traces_url(self) -> str:
        return f"http://127.0.0.1:{self.http_port}/v1/traces"

    @property
    def grpc_target(self) -> str:
        return f"127.0.0.1:{self.grpc_port}"

    @property
    def api_url(self) -> str:
        return f"http://127.0.0.1:{self.api_port}"

    @property
    def ingest_headers(self) -> dict[str, str]:
        return {"authorization": f"Bearer {self.tenant.ingest_key}"}

    @property
    def admin_headers(self) -> dict[str, str]:
        return {"authorization": f"Bearer {self.tenant.admin_key}"}

    def start(self) -> None:
        assert self.log_path is not None
        env = {**os.environ, **self.env, "AGENTMETER_DATABASE_URL": self.database_url}
        command = [sys.executable, "-m", "agentmeter.cli", "serve"]
        for flag, port in (
            ("--grpc-port", self.grpc_port),
            ("--http-port", self.http_port),
            ("--api-port", self.api_port),
        ):
            command += [flag, str(port)]
        with self.log_path.open("a") as log:
            self.process = subprocess.Popen(
                command, env=env, stdout=subprocess.PIPE, stderr=log, text=True
            )
        assert self.process.stdout is not None
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            line = self.process.stdout.readline()
            if not line:
                raise RuntimeError(f"server exited: {self.log_path.read_text()[-2000:]}")
            event = json.loads(line)
            if event.get("event") == "ready":
                self.grpc_port = event["grpc_port"]
                self.http_port = event["http_port"]
                self.api_port = event["api_port"]
                return
        raise RuntimeError("server did not become ready in 60 s")

    def kill(self) -> None:
        """SIGKILL: no shutdown hooks run, as in a crash."""
        assert self.process is not None
        self.process.send_signal(signal.SIGKILL)
        self.process.wait(timeout=30)

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()


@pytest.fixture
def server(engine: Engine, database_url: str, tmp_path: Path) -> Iterator[RunningServer]:
    """A running `agentmeter serve` on each backend, with one tenant and its keys."""
    running = RunningServer(
        database_url=database_url,
        tenant=create_tenant(engine, "test tenant"),
        log_path=tmp_path / "server.log",
    )
    running.start()
    try:
        yield running
    finally:
        running.stop()
