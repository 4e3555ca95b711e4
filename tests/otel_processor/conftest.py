"""Fixtures shared by the OTLP/gRPC and OTLP/HTTP receiver tests."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import Engine

from agentmeter.tenants import create_tenant
from tests.conftest import RunningServer
from tests.receiver_scenarios import INGEST_LIMIT, SMALL_LIMIT


@pytest.fixture
def small_server(engine: Engine, database_url: str, tmp_path: Path) -> Iterator[RunningServer]:
    """A server refusing requests over 64 KiB (after decompression)."""
    running = RunningServer(
        database_url=database_url,
        tenant=create_tenant(engine, "small limits"),
        log_path=tmp_path / "small-server.log",
        env={"AGENTMETER_MAX_REQUEST_BYTES": str(SMALL_LIMIT)},
    )
    running.start()
    try:
        yield running
    finally:
        running.stop()


@pytest.fixture
def limited_server(engine: Engine, database_url: str, tmp_path: Path) -> Iterator[RunningServer]:
    """A server taking at most `INGEST_LIMIT` exports per ingest key and minute."""
    running = RunningServer(
        database_url=database_url,
        tenant=create_tenant(engine, "rate limited"),
        log_path=tmp_path / "limited-server.log",
        env={"AGENTMETER_INGEST_RATE_LIMIT": f"{INGEST_LIMIT}/minute"},
    )
    running.start()
    try:
        yield running
    finally:
        running.stop()
