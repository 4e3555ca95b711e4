"""`agentmeter jobs run` as a subprocess: it runs the queued jobs once and prints counts."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from datetime import UTC, datetime
from pathlib import Path

from sqlalchemy import Engine, select
from sqlalchemy.orm import Session

from agentmeter.tables import Job
from agentmeter.tenants import create_tenant
from billing_api.pricing.recost import enqueue_recost

AGENTMETER = Path(sys.executable).with_name("agentmeter")


def test_runs_the_due_jobs_once_and_prints_the_counts(engine: Engine, database_url: str) -> None:
    tenant_id = create_tenant(engine, "builder").tenant_id
    with Session(engine) as session, session.begin():
        job_id = enqueue_recost(session, tenant_id, datetime(2026, 1, 1, tzinfo=UTC))
    env = {**os.environ, "AGENTMETER_DATABASE_URL": database_url}

    done = subprocess.run(
        [str(AGENTMETER), "jobs", "run"], env=env, capture_output=True, timeout=120, check=False
    )

    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout) == {"done": 1, "retrying": 0, "dead": 0, "lost": 0}
    with Session(engine) as session:
        assert session.scalar(select(Job.status).where(Job.id == job_id)) == "done"
