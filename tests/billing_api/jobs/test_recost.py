"""Provider cost changes recost stored usage in a job, never inside the request, and
records ingested around a change always end with the new rates."""

from __future__ import annotations

import threading
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

from fastapi.testclient import TestClient
from sqlalchemy import Engine, select

from agentmeter.tables import UsageRow, to_unix_nano
from agentmeter.tenants import NewTenant, create_tenant
from billing_api.jobs.kinds import job_registry
from billing_api.jobs.worker import run_due_jobs
from exporter.provider_costs import NO_OVERRIDES, CostOverrides, ProviderCostCatalog
from exporter.recost import recost_usage
from exporter.sql_sink import SqlUsageSink
from otel_processor.usage import UsageBatch, UsageRecord
from tests.billing_api.inprocess import api_client

WHEN = datetime(2026, 1, 15, tzinfo=UTC)
MTOK = 1_000_000
# $2 per 1M input tokens of the house model (genai-prices does not know it: no cost else).
RATE = {
    "provider": "house",
    "model": "house-*",
    "meter": "input_tokens",
    "unit_cost_usd": "2",
    "per_units": MTOK,
    "effective_from": "2026-01-01T00:00:00Z",
}
TWO_USD = 2 * 10**12  # in pico-USD


def record(number: int, when: datetime = WHEN) -> UsageRecord:
    return UsageRecord(
        trace_id=f"{number:032x}",
        span_id=f"{number:016x}",
        meter="input_tokens",
        quantity=Decimal(MTOK),
        customer_id="acme",
        time_unix_nano=to_unix_nano(when),
        provider="house",
        model="house-llm-1",
    )


def costs(engine: Engine) -> dict[str, int | None]:
    with engine.connect() as connection:
        rows = connection.execute(select(UsageRow.span_id, UsageRow.provider_cost_pico))
        return {str(int(span_id, 16)): cost for span_id, cost in rows}


def recost_jobs(client: TestClient) -> list[dict[str, Any]]:
    answer = client.get("/api/v1/jobs", params={"kind": "pricing.recost"})
    assert answer.status_code == 200
    jobs: list[dict[str, Any]] = answer.json()
    return jobs


def tenant(engine: Engine) -> NewTenant:
    return create_tenant(engine, "recost tenant")


class TestRecostIsAJob:
    def test_the_request_only_queues_the_recost_and_the_job_applies_it(
        self, engine: Engine
    ) -> None:
        keys = tenant(engine)
        sink = SqlUsageSink(engine, ProviderCostCatalog())
        sink.write(keys.tenant_id, UsageBatch([record(1, datetime(2025, 12, 31, tzinfo=UTC))]))
        sink.write(keys.tenant_id, UsageBatch([record(2)]))
        registry = job_registry()

        with api_client(engine, keys.admin_key) as client:
            created = client.post("/api/v1/provider-costs", json=RATE)
            assert created.status_code == 201
            assert set(created.json()) == {
                "id",
                "provider",
                "model",
                "meter",
                "unit_cost_usd",
                "per_units",
                "effective_from",
                "created_at",
            }
            # Answered before any recost: stored usage still has its old cost.
            assert costs(engine) == {"1": None, "2": None}
            (job,) = recost_jobs(client)
            assert (job["status"], job["attempts"]) == ("pending", 0)

            assert run_due_jobs(engine, registry).done == 1
            # Usage before the rate's start is untouched.
            assert costs(engine) == {"1": None, "2": TWO_USD}
            assert client.get(f"/api/v1/jobs/{job['id']}").json()["status"] == "done"

            deleted = client.delete(f"/api/v1/provider-costs/{created.json()['id']}")
            assert deleted.status_code == 204
            assert costs(engine) == {"1": None, "2": TWO_USD}
            assert run_due_jobs(engine, registry).done == 1
            assert costs(engine) == {"1": None, "2": None}
            assert [j["status"] for j in recost_jobs(client)] == ["done", "done"]

    def test_changes_from_one_start_before_the_recost_runs_queue_one_recost(
        self, engine: Engine
    ) -> None:
        keys = tenant(engine)
        with api_client(engine, keys.admin_key) as client:
            assert client.post("/api/v1/provider-costs", json=RATE).status_code == 201
            other = {**RATE, "meter": "output_tokens"}
            assert client.post("/api/v1/provider-costs", json=other).status_code == 201
            later = {**RATE, "effective_from": "2026-01-10T00:00:00Z", "unit_cost_usd": "3"}
            assert client.post("/api/v1/provider-costs", json=later).status_code == 201

            assert len(recost_jobs(client)) == 2  # one per start
            assert run_due_jobs(engine, job_registry()).done == 2


class ChangingCatalog(ProviderCostCatalog):
    """A catalog that, once, runs `change` right after the sink costed a batch with the
    overrides it read (before the sink writes): the moment a concurrent change can land."""

    def __init__(self, change: Any) -> None:
        super().__init__()
        self._change = change

    def costs(self, records: Any, overrides: CostOverrides = NO_OVERRIDES) -> list[int | None]:
        costed = super().costs(records, overrides)
        change, self._change = self._change, None
        if change is not None:
            change()
        return costed


class TestRecostUnderConcurrentIngest:
    def test_a_batch_costed_before_a_change_is_stored_with_the_new_rate(
        self, engine: Engine
    ) -> None:
        """Ingest reads the overrides, then a rate is added and its recost runs to the end,
        then ingest writes: the records must not keep the stale (missing) cost."""
        keys = tenant(engine)
        registry = job_registry()
        with api_client(engine, keys.admin_key) as client:

            def change() -> None:
                assert client.post("/api/v1/provider-costs", json=RATE).status_code == 201
                assert run_due_jobs(engine, registry).done == 1

            sink = SqlUsageSink(engine, ChangingCatalog(change))
            sink.write(keys.tenant_id, UsageBatch([record(1)]))

        assert costs(engine) == {"1": TWO_USD}

    def test_records_arriving_while_the_recost_runs_end_with_the_new_rate(
        self, engine: Engine
    ) -> None:
        """Ingest keeps writing (another thread) while the recost walks its pages one span
        at a time: whatever the interleaving, every record ends at the new rate."""
        keys = tenant(engine)
        sink = SqlUsageSink(engine, ProviderCostCatalog())
        sink.write(keys.tenant_id, UsageBatch([record(n) for n in range(1, 21)]))
        with api_client(engine, keys.admin_key) as client:
            assert client.post("/api/v1/provider-costs", json=RATE).status_code == 201
        errors: list[BaseException] = []

        def ingest() -> None:
            try:
                for number in range(21, 41):
                    sink.write(keys.tenant_id, UsageBatch([record(number)]))
            except BaseException as error:  # surfaced below
                errors.append(error)

        writer = threading.Thread(target=ingest)
        writer.start()
        recost_usage(engine, keys.tenant_id, batch_size=1)
        writer.join()

        assert errors == []
        assert costs(engine) == {str(n): TWO_USD for n in range(1, 41)}
