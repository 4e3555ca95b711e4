"""Fixtures shared by every test folder: a database on each backend, migrated.

Domain fixtures belong in the conftest.py of their own folder, not here.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from playwright.sync_api import Browser, sync_playwright
from sqlalchemy import Engine, create_engine, make_url, text
from sqlalchemy.pool import NullPool

from agentmeter.db import make_engine, migrate
from agentmeter.settings import Settings
from agentmeter.tenants import NewTenant, create_tenant

POSTGRES_URL_ENV = "AGENTMETER_TEST_POSTGRES_URL"


def _in_ci() -> bool:
    return os.environ.get("CI", "").lower() not in ("", "0", "false")


BACKENDS = [
    pytest.param("sqlite", id="sqlite"),
    pytest.param("postgresql", id="postgresql", marks=pytest.mark.postgres),
]


def _postgres_base_url() -> str:
    base_url = os.environ.get(POSTGRES_URL_ENV)
    if not base_url:
        message = f"{POSTGRES_URL_ENV} is not set; run the suite with scripts/test.sh"
        if _in_ci():
            pytest.fail(message)
        pytest.skip(message)
    return base_url


@contextmanager
def _postgres_database(template: str | None = None) -> Iterator[str]:
    """A new PostgreSQL database (a copy of `template` if given), dropped afterwards."""
    base_url = _postgres_base_url()
    name = f"agentmeter_test_{uuid.uuid4().hex[:16]}"
    admin = create_engine(base_url, isolation_level="AUTOCOMMIT", poolclass=NullPool)
    quote = admin.dialect.identifier_preparer.quote
    copy = f" TEMPLATE {quote(template)}" if template else ""
    try:
        with admin.connect() as connection:
            connection.execute(text(f"CREATE DATABASE {quote(name)}{copy}"))
        try:
            yield make_url(base_url).set(database=name).render_as_string(hide_password=False)
        finally:
            with admin.connect() as connection:
                connection.execute(text(f"DROP DATABASE IF EXISTS {quote(name)} WITH (FORCE)"))
    finally:
        admin.dispose()


def _migrated(url: str) -> None:
    engine = make_engine(Settings(database_url=url))
    try:
        migrate(engine)
    finally:
        engine.dispose()


@pytest.fixture(scope="session")
def migrated_templates(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, str]]:
    """Databases migrated once per session, copied for each test: migrating every test's
    database anew cost more than most tests. Keys: "sqlite" (a file), "postgresql" (a
    database name), the latter only when a PostgreSQL server is configured."""
    sqlite_file = tmp_path_factory.mktemp("template") / "agentmeter.db"
    _migrated(f"sqlite:///{sqlite_file}")
    templates = {"sqlite": str(sqlite_file)}
    if not os.environ.get(POSTGRES_URL_ENV):
        yield templates
        return
    with _postgres_database() as url:
        _migrated(url)
        database = make_url(url).database
        assert database
        templates["postgresql"] = database
        yield templates


@pytest.fixture(params=BACKENDS)
def empty_database_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """The URL of a fresh, empty database, once per backend (for migration tests).

    PostgreSQL databases live on the server named by `AGENTMETER_TEST_POSTGRES_URL`
    (scripts/test.sh starts one). Without it the PostgreSQL case is skipped, except in CI
    where it fails.
    """
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'agentmeter.db'}"
        return
    with _postgres_database() as url:
        yield url


@pytest.fixture(params=BACKENDS)
def database_url(
    request: pytest.FixtureRequest, tmp_path: Path, migrated_templates: dict[str, str]
) -> Iterator[str]:
    """The URL of a fresh database at the newest migration, once per backend; dropped (or
    deleted with tmp_path) afterwards."""
    if request.param == "sqlite":
        path = tmp_path / "agentmeter.db"
        shutil.copyfile(migrated_templates["sqlite"], path)
        yield f"sqlite:///{path}"
        return
    _postgres_base_url()
    with _postgres_database(template=migrated_templates["postgresql"]) as url:
        yield url


@pytest.fixture
def engine(database_url: str) -> Iterator[Engine]:
    """An engine on `database_url` (already migrated)."""
    engine = make_engine(Settings(database_url=database_url))
    try:
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


# --- Browser (pages of the portal and the dashboard) ---------------------------------------

CHROMIUM = "/usr/bin/chromium"
# No internet here: these flags stop Chromium's own background connections.
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
SCREENSHOTS = Path(__file__).parent / "output" / "screenshots"


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    """Debian's Chromium, headless, driven by Playwright (tests open their own contexts);
    never a browser Playwright downloads. One per test module, not per session: while the
    sync API is alive it marks an event loop as running in the main thread, so every later
    test calling `asyncio.run` (the agent and instrumentation tests) would fail."""
    with sync_playwright() as playwright:
        chromium = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            yield chromium
        finally:
            chromium.close()


@pytest.fixture(scope="session")
def screenshot_dir() -> Path:
    """Where browser tests save screenshots of every page (git-ignored), to be looked at."""
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    return SCREENSHOTS
