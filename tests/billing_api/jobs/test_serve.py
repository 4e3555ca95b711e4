"""`agentmeter serve` runs queued jobs in its background loop: a provider cost change made
over HTTP is recosted by the server itself, with no worker in the test process."""

from __future__ import annotations

import httpx
from sqlalchemy import Engine

from exporter.provider_costs import ProviderCostCatalog
from exporter.sql_sink import SqlUsageSink
from otel_processor.usage import UsageBatch
from tests.billing_api.jobs.test_recost import RATE, TWO_USD, costs, record
from tests.conftest import RunningServer
from tests.polling import wait_until


def test_the_server_runs_the_recost_a_change_queued(server: RunningServer, engine: Engine) -> None:
    server.stop()
    server.env["AGENTMETER_BACKGROUND_INTERVAL_SECONDS"] = "0.2"
    server.start()
    SqlUsageSink(engine, ProviderCostCatalog()).write(
        server.tenant.tenant_id, UsageBatch([record(1)])
    )
    assert costs(engine) == {"1": None}

    with httpx.Client(base_url=server.api_url, headers=server.admin_headers, timeout=30) as api:
        assert api.post("/api/v1/provider-costs", json=RATE).status_code == 201

        def recosted() -> bool:
            jobs = api.get("/api/v1/jobs", params={"kind": "pricing.recost"}).json()
            return [job["status"] for job in jobs] == ["done"]

        wait_until(recosted, timeout=60, what="the server to run the recost job")

    assert costs(engine) == {"1": TWO_USD}
