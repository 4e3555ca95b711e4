"""Issue 14: only a database that cannot serve now is "unavailable" (503 with Retry-After,
gRPC UNAVAILABLE: the client retries). A schema or programming error (SQLite raises the same
`OperationalError` for "no such table" as for "database is locked") is a bug: the API answers
500 `internal_error` without the exception's text, ingest answers OTLP/HTTP 500 and gRPC
INTERNAL (collectors do not retry those forever), and the traceback is logged."""

from __future__ import annotations

import json
import logging
import sqlite3
from collections.abc import Iterator
from pathlib import Path

import grpc
import httpx
import pytest
from google.rpc import code_pb2, status_pb2
from sqlalchemy import Engine, create_engine, text
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.pool import NullPool

from agentmeter.db import is_retryable, make_engine, migrate
from agentmeter.settings import Settings
from agentmeter.tables import Customer, usage_spans
from agentmeter.tenants import create_tenant
from tests import receiver_scenarios as scenarios
from tests.billing_api.inprocess import api_client
from tests.conftest import RunningServer
from tests.store_outages import postgresql_refusing_connections

EXPORT = "/opentelemetry.proto.collector.trace.v1.TraceService/Export"
INTERNAL_BODY = {
    "error": {"code": "internal_error", "message": "internal error; see the server log"}
}


def raised(engine: Engine, statement: str) -> SQLAlchemyError:
    """The error `statement` raises on `engine`."""
    with pytest.raises(SQLAlchemyError) as caught, engine.begin() as connection:
        connection.execute(text(statement))
    return caught.value


class TestIsRetryable:
    def test_sqlite_schema_and_programming_errors_are_not(self, tmp_path: Path) -> None:
        engine = create_engine(f"sqlite:///{tmp_path / 'x.db'}", poolclass=NullPool)
        with engine.begin() as connection:
            connection.execute(text("CREATE TABLE t (id INTEGER PRIMARY KEY, v TEXT NOT NULL)"))
        for statement in (
            "SELECT * FROM no_such_table",
            "SELECT no_such_column FROM t",
            "SELEC 1",
            "INSERT INTO t (id, v) VALUES (1, NULL)",
        ):
            assert not is_retryable(raised(engine, statement)), statement

    def test_a_locked_sqlite_database_is(self, tmp_path: Path) -> None:
        path = tmp_path / "locked.db"
        holder = sqlite3.connect(path, isolation_level=None)
        holder.execute("CREATE TABLE t (v TEXT)")
        holder.execute("BEGIN EXCLUSIVE")
        try:
            engine = create_engine(
                f"sqlite:///{path}", connect_args={"timeout": 0.1}, poolclass=NullPool
            )
            error = raised(engine, "INSERT INTO t VALUES ('x')")
        finally:
            holder.close()
        assert "database is locked" in str(error)
        assert is_retryable(error)

    def test_an_sqlite_file_that_cannot_be_opened_is(self, tmp_path: Path) -> None:
        engine = create_engine(f"sqlite:///{tmp_path / 'missing' / 'x.db'}", poolclass=NullPool)
        error = raised(engine, "SELECT 1")
        assert "unable to open database file" in str(error)
        assert is_retryable(error)

    @pytest.mark.postgres
    @pytest.mark.parametrize("database_url", ["postgresql"], indirect=True)
    def test_postgresql(self, engine: Engine, database_url: str) -> None:
        assert not is_retryable(raised(engine, "SELECT * FROM no_such_table"))
        assert not is_retryable(raised(engine, "SELECT 1/0"))
        # A backend terminated by an administrator (SQLSTATE 57P01).
        with pytest.raises(SQLAlchemyError) as terminated, engine.connect() as connection:
            connection.execute(text("SELECT pg_terminate_backend(pg_backend_pid())"))
        assert is_retryable(terminated.value)
        # A database refusing connections, then a port nobody listens on.
        with postgresql_refusing_connections(database_url):
            refused = make_engine(Settings(database_url=database_url))
            assert is_retryable(raised(refused, "SELECT 1"))
            refused.dispose()
        nobody = create_engine("postgresql+psycopg://nobody@127.0.0.1:1/none", poolclass=NullPool)
        assert is_retryable(raised(nobody, "SELECT 1"))


# --- A schema bug under a running `agentmeter serve` ---------------------------------------


@pytest.fixture
def broken_server(tmp_path: Path) -> Iterator[RunningServer]:
    """A server on SQLite whose usage and customers tables were dropped after it started
    (as a missing migration would leave them)."""
    path = tmp_path / "broken.db"
    engine = make_engine(Settings(database_url=f"sqlite:///{path}"))
    migrate(engine)
    running = RunningServer(
        database_url=f"sqlite:///{path}",
        tenant=create_tenant(engine, "broken"),
        log_path=tmp_path / "broken-server.log",
    )
    engine.dispose()
    running.start()
    try:
        with sqlite3.connect(path, isolation_level=None) as connection:
            for table in (usage_spans.name, Customer.__tablename__):
                connection.execute(f"DROP TABLE {table}")
        yield running
    finally:
        running.stop()


def logged_errors(server: RunningServer, logger: str) -> list[dict[str, str]]:
    assert server.log_path is not None
    lines = [json.loads(line) for line in server.log_path.read_text().splitlines() if line]
    return [e for e in lines if e.get("logger") == logger and e.get("level") == "error"]


def test_a_schema_bug_is_an_internal_error_never_unavailable(broken_server: RunningServer) -> None:
    over_http = httpx.post(
        broken_server.traces_url,
        content=scenarios.ONE_CHAT.body,
        headers={**broken_server.ingest_headers, "content-type": "application/x-protobuf"},
        timeout=30,
    )
    assert over_http.status_code == 500, over_http.content
    assert "retry-after" not in over_http.headers
    status = status_pb2.Status.FromString(over_http.content)
    assert status.code == code_pb2.INTERNAL
    assert "no such table" not in status.message

    with grpc.insecure_channel(broken_server.grpc_target) as channel:
        export = channel.unary_unary(EXPORT, request_serializer=None, response_deserializer=None)
        with pytest.raises(grpc.RpcError) as over_grpc:
            export(
                scenarios.ONE_CHAT.body,
                metadata=(("authorization", f"Bearer {broken_server.tenant.ingest_key}"),),
                timeout=30,
            )
    assert over_grpc.value.code() == grpc.StatusCode.INTERNAL

    api = httpx.get(
        f"{broken_server.api_url}/api/v1/customers/acme",
        headers=broken_server.admin_headers,
        timeout=30,
    )
    assert api.status_code == 500, api.text
    assert api.json() == INTERNAL_BODY

    ingest_errors = logged_errors(broken_server, "agentmeter.ingest")
    assert len(ingest_errors) == 2, ingest_errors  # one per transport
    assert all("no such table" in e["exception"] for e in ingest_errors)
    (api_error,) = logged_errors(broken_server, "agentmeter.api")
    assert api_error["path"] == "/api/v1/customers/acme"
    assert "Traceback" in api_error["exception"]
    assert "no such table: customers" in api_error["exception"]


# --- The API in-process ----------------------------------------------------------------------


def test_api_answers_a_dropped_column_with_500_and_logs_it(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    path = tmp_path / "api.db"
    engine = make_engine(Settings(database_url=f"sqlite:///{path}"))
    migrate(engine)
    tenant = create_tenant(engine, "t")
    with api_client(engine, tenant.admin_key) as api:
        assert api.post("/api/v1/customers", json={"id": "acme", "name": "Acme"}).is_success
        with sqlite3.connect(path, isolation_level=None) as connection:
            connection.execute(f"ALTER TABLE {Customer.__tablename__} DROP COLUMN email")
        with caplog.at_level(logging.ERROR, logger="agentmeter.api"):
            answer = api.get("/api/v1/customers/acme")
    engine.dispose()
    assert answer.status_code == 500
    assert answer.json() == INTERNAL_BODY
    (record,) = [r for r in caplog.records if r.name == "agentmeter.api"]
    assert record.exc_info is not None
    assert "no such column" in str(record.exc_info[1])


def test_api_answers_a_locked_database_with_503_and_retry_after(tmp_path: Path) -> None:
    path = tmp_path / "locked.db"
    settings = Settings(database_url=f"sqlite:///{path}", sqlite_busy_timeout_seconds=0.2)
    engine = make_engine(settings)
    migrate(engine)
    tenant = create_tenant(engine, "t")
    holder = sqlite3.connect(path, isolation_level=None)
    try:
        with api_client(engine, tenant.admin_key, settings) as api:
            holder.execute("BEGIN EXCLUSIVE")
            refused = api.post("/api/v1/customers", json={"id": "acme", "name": "Acme"})
            holder.execute("ROLLBACK")
            accepted = api.post("/api/v1/customers", json={"id": "acme", "name": "Acme"})
    finally:
        holder.close()
        engine.dispose()
    assert refused.status_code == 503, refused.text
    assert refused.json()["error"]["code"] == "unavailable"
    assert int(refused.headers["retry-after"]) > 0
    assert accepted.status_code == 201, accepted.text


@pytest.mark.postgres
@pytest.mark.parametrize("database_url", ["postgresql"], indirect=True)
def test_api_answers_a_postgresql_outage_with_503(engine: Engine, database_url: str) -> None:
    tenant = create_tenant(engine, "t")
    with api_client(engine, tenant.admin_key) as api:
        with postgresql_refusing_connections(database_url):
            refused = api.get("/api/v1/customers")
        assert refused.status_code == 503, refused.text
        assert refused.json()["error"]["code"] == "unavailable"
        assert int(refused.headers["retry-after"]) > 0
        assert api.get("/api/v1/customers").status_code == 200
