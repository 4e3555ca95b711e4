"""`GET /api/v1/jobs` and `GET /api/v1/jobs/{id}`: a tenant sees its own jobs' state only."""

from __future__ import annotations

from sqlalchemy import Engine
from sqlalchemy.orm import Session

from agentmeter.tenants import create_tenant
from billing_api.jobs.service import enqueue
from tests.billing_api.inprocess import api_client


def test_a_tenant_reads_its_jobs_and_never_another_tenants(engine: Engine) -> None:
    mine = create_tenant(engine, "mine")
    theirs = create_tenant(engine, "theirs")
    with Session(engine) as session, session.begin():
        own = enqueue(session, "test.echo", "a", {"secret": "x"}, tenant_id=mine.tenant_id)
        other = enqueue(session, "test.echo", "b", tenant_id=theirs.tenant_id)

    with api_client(engine, mine.admin_key) as client:
        found = client.get(f"/api/v1/jobs/{own}")
        assert found.status_code == 200
        body = found.json()
        assert body["id"] == own
        assert (body["kind"], body["status"], body["attempts"]) == ("test.echo", "pending", 0)
        assert "payload" not in body and "secret" not in found.text

        hidden = client.get(f"/api/v1/jobs/{other}")
        assert hidden.status_code == 404
        assert hidden.json()["error"]["code"] == "not_found"

        listed = client.get("/api/v1/jobs", params={"status": "pending"}).json()
        assert [job["id"] for job in listed] == [own]
        assert client.get("/api/v1/jobs", params={"status": "done"}).json() == []
        assert client.get("/api/v1/jobs", params={"status": "nope"}).status_code == 422
