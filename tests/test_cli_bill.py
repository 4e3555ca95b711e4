"""`agentmeter bill --period 2026-11` as a subprocess on SQLite and PostgreSQL: the JSON
line it prints, the progress bar on stderr, the drafts it writes, and its refusals.

Prices (USD): input_tokens 3.00 per 10^6, output_tokens 12.00 per 10^6, platform 49.00.
Drafts, by hand (cents): acme 1 234 567 in / 345 678 out → 3.703701 → 370, 4.148136 →
415, + 4900 = 5685; globex (no usage) 4900; hooli (not registered) 100 000 / 10 000 →
30 + 12 + 4900 = 4942.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import uuid
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path

import pytest
from sqlalchemy import Engine, func, select
from sqlalchemy.orm import Session

from agentmeter.tables import (
    BillingRun,
    Customer,
    Invoice,
    PriceBook,
    PriceComponent,
    PriceVersion,
    to_unix_nano,
)
from agentmeter.tenants import create_tenant
from exporter.sql_sink import SqlUsageSink
from otel_processor.usage import UsageBatch, UsageRecord

AGENTMETER = Path(sys.executable).with_name("agentmeter")


def bill(database_url: str, *args: str) -> subprocess.CompletedProcess[str]:
    """`agentmeter bill …` on the database, as an operator runs it. Output is decoded
    without newline translation, so the progress bar's carriage returns stay visible."""
    env = {**os.environ, "AGENTMETER_DATABASE_URL": database_url}
    done = subprocess.run(
        [str(AGENTMETER), "bill", *args], env=env, capture_output=True, timeout=120, check=False
    )
    return subprocess.CompletedProcess(
        done.args, done.returncode, done.stdout.decode(), done.stderr.decode()
    )


def setup_tenant(engine: Engine, name: str = "builder") -> str:
    tenant_id = create_tenant(engine, name).tenant_id
    book_id, version_id = uuid.uuid4().hex, uuid.uuid4().hex
    with Session(engine) as session, session.begin():
        session.add(
            PriceBook(id=book_id, tenant_id=tenant_id, name="b", currency="USD", is_default=True)
        )
        session.add_all(
            [
                Customer(tenant_id=tenant_id, id="acme", name="Acme Inc"),
                Customer(tenant_id=tenant_id, id="globex", name="Globex"),
            ]
        )
        session.flush()
        session.add(
            PriceVersion(
                id=version_id,
                book_id=book_id,
                number=1,
                effective_from=datetime(2026, 1, 1, tzinfo=UTC),
            )
        )
        session.flush()
        components = [
            ("input", "input_tokens", "per_unit", Decimal("3.00"), None),
            ("output", "output_tokens", "per_unit", Decimal("12.00"), None),
            ("platform", None, "flat_fee", None, Decimal("49.00")),
        ]
        for position, (name_, meter, charge, price, amount) in enumerate(components):
            session.add(
                PriceComponent(
                    id=uuid.uuid4().hex,
                    version_id=version_id,
                    position=position,
                    name=name_,
                    meter=meter,
                    filters={},
                    charge=charge,
                    unit_price=price,
                    per_units=1_000_000,
                    amount=amount,
                )
            )
    at = to_unix_nano(datetime(2026, 11, 12, tzinfo=UTC))
    records = []
    for n, (customer, tokens_in, tokens_out) in enumerate(
        [("acme", 1_234_567, 345_678), ("hooli", 100_000, 10_000)], start=1
    ):
        trace, span = f"{n:032x}", f"{n:016x}"
        records += [
            UsageRecord(trace, span, "input_tokens", tokens_in, customer, at),
            UsageRecord(trace, span, "output_tokens", tokens_out, customer, at),
        ]
    SqlUsageSink(engine).write(tenant_id, UsageBatch(records))
    return tenant_id


def subtotals(engine: Engine, tenant_id: str) -> dict[str, tuple[str, int]]:
    with Session(engine) as session:
        rows = session.execute(
            select(Invoice.customer_id, Invoice.status, Invoice.subtotal_minor).where(
                Invoice.tenant_id == tenant_id
            )
        ).all()
    return {customer: (status, subtotal) for customer, status, subtotal in rows}


def runs(engine: Engine) -> int:
    with Session(engine) as session:
        return int(session.scalar(select(func.count()).select_from(BillingRun)) or 0)


class TestBill:
    def test_drafts_the_month_and_reports(self, engine: Engine, database_url: str) -> None:
        tenant_id = setup_tenant(engine)
        done = bill(database_url, "--period", "2026-11")
        assert done.returncode == 0, done.stderr
        (line,) = done.stdout.splitlines()
        report = json.loads(line)
        assert set(report) == {"run_id", "period", "status", "customers", "drafted"}
        assert (report["period"], report["status"]) == ("2026-11", "completed")
        # acme and globex registered, hooli with usage.
        assert (report["customers"], report["drafted"]) == (3, 3)
        # The progress bar, redrawn in place, full at the end.
        assert f"\r[{'#' * 30}] 3/3 customers\n" in done.stderr
        assert subtotals(engine, tenant_id) == {
            "acme": ("draft", 5685),
            "globex": ("draft", 4900),
            "hooli": ("draft", 4942),
        }
        with Session(engine) as session:
            run = session.get(BillingRun, report["run_id"])
            assert run is not None
            assert (run.status, run.processed_customers, run.drafted) == ("completed", 3, 3)

        # Again: the same drafts, not new ones.
        again = bill(database_url, "--period", "2026-11", "--tenant", tenant_id)
        assert again.returncode == 0, again.stderr
        assert json.loads(again.stdout)["drafted"] == 3
        assert subtotals(engine, tenant_id) == {
            "acme": ("draft", 5685),
            "globex": ("draft", 4900),
            "hooli": ("draft", 4942),
        }

    @pytest.mark.parametrize("period", ["2026-13", "november", "2026-1"])
    def test_bad_period_exits_2(self, engine: Engine, database_url: str, period: str) -> None:
        setup_tenant(engine)
        done = bill(database_url, "--period", period)
        assert done.returncode == 2
        assert done.stdout == ""
        assert "period must look like 2026-11" in done.stderr
        assert repr(period) in done.stderr
        assert "Traceback" not in done.stderr
        assert runs(engine) == 0

    def test_missing_period_exits_2(self, engine: Engine, database_url: str) -> None:
        done = bill(database_url)
        assert done.returncode == 2
        assert "--period" in done.stderr

    def test_several_tenants_need_one_named(self, engine: Engine, database_url: str) -> None:
        first = setup_tenant(engine, "first")
        setup_tenant(engine, "second")
        done = bill(database_url, "--period", "2026-11")
        assert done.returncode == 2
        assert "several tenants: name one with --tenant" in done.stderr
        assert runs(engine) == 0
        named = bill(database_url, "--period", "2026-11", "--tenant", first)
        assert named.returncode == 0, named.stderr
        assert json.loads(named.stdout)["drafted"] == 3

    def test_unknown_tenant_exits_2(self, engine: Engine, database_url: str) -> None:
        setup_tenant(engine)
        done = bill(database_url, "--period", "2026-11", "--tenant", "no-such-tenant")
        assert done.returncode == 2
        assert "no-such-tenant" in done.stderr
        assert "Traceback" not in done.stderr

    def test_no_tenant_says_so(self, engine: Engine, database_url: str) -> None:
        done = bill(database_url, "--period", "2026-11")
        assert done.returncode == 2
        assert "several" not in done.stderr
        assert "no tenant" in done.stderr.lower()
