"""The API's per-key rate limit against a running `agentmeter serve`: 429, `Retry-After`,
the JSON error body, one budget per key, and the setting that turns it off."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from sqlalchemy import Engine

from agentmeter.tenants import create_tenant
from tests.conftest import RunningServer

# Process supervision and in-memory limits do not depend on the store: one backend is enough.
pytestmark = pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)


API_LIMIT = 3  # requests per key and minute


def running(engine: Engine, database_url: str, tmp_path: Path, rate: str) -> RunningServer:
    server = RunningServer(
        database_url=database_url,
        tenant=create_tenant(engine, "api limits"),
        log_path=tmp_path / "server.log",
        env={"AGENTMETER_API_RATE_LIMIT": rate},
    )
    server.start()
    return server


@pytest.fixture
def limited(engine: Engine, database_url: str, tmp_path: Path) -> Iterator[RunningServer]:
    server = running(engine, database_url, tmp_path, f"{API_LIMIT}/minute")
    try:
        yield server
    finally:
        server.stop()


def customers(server: RunningServer, key: str) -> httpx.Response:
    return httpx.get(
        f"{server.api_url}/api/v1/customers",
        headers={"authorization": f"Bearer {key}"},
        timeout=30,
    )


class TestApiRateLimit:
    def test_past_the_limit_is_429_json_with_retry_after(self, limited: RunningServer) -> None:
        for _ in range(API_LIMIT):
            assert customers(limited, limited.tenant.admin_key).status_code == 200

        refused = customers(limited, limited.tenant.admin_key)

        assert refused.status_code == 429
        assert 0 < int(refused.headers["retry-after"]) <= 60
        assert refused.json()["error"]["code"] == "rate_limited"
        assert "retry in" in refused.json()["error"]["message"]

    def test_each_key_has_its_own_budget(self, limited: RunningServer, engine: Engine) -> None:
        for _ in range(API_LIMIT + 1):
            customers(limited, limited.tenant.admin_key)
        other = create_tenant(engine, "another tenant")

        assert customers(limited, other.admin_key).status_code == 200

    def test_health_checks_are_not_counted(self, limited: RunningServer) -> None:
        for _ in range(API_LIMIT + 2):
            assert httpx.get(f"{limited.api_url}/healthz", timeout=30).status_code == 200


def test_an_empty_setting_turns_the_limit_off(
    engine: Engine, database_url: str, tmp_path: Path
) -> None:
    server = running(engine, database_url, tmp_path, "")
    try:
        answers = {customers(server, server.tenant.admin_key).status_code for _ in range(30)}
    finally:
        server.stop()

    assert answers == {200}
