"""Invoicing under concurrency, in-process on SQLite and PostgreSQL: billing runs of the same
period at once converge on one draft per customer; finalizations from many threads take
gapless, unique numbers; a finalization that rolls back gives its number back.

Each thread uses its own Session and transaction, as request handlers and run workers do.
On SQLite a transaction that read before writing can get "database is locked" when another
writer committed in between (SQLite's snapshot rule, not a wait the busy timeout covers);
finalizing threads retry the whole transaction then, as a client would.
"""

from __future__ import annotations

import contextlib
import threading
import time
import uuid
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any, TypeVar

import pytest
from sqlalchemy import Engine, event, func, select
from sqlalchemy.exc import OperationalError
from sqlalchemy.orm import Session

from agentmeter.tables import (
    BillingException,
    BillingRun,
    Customer,
    Invoice,
    InvoiceLine,
    InvoiceSequence,
    PriceBook,
    PriceComponent,
    PriceVersion,
)
from agentmeter.tenants import create_tenant
from billing_api.credits.service import balance as credit_balance
from billing_api.credits.service import grant_credits
from billing_api.errors import ConflictError, UnprocessableError
from billing_api.invoicing import repository
from billing_api.invoicing.finalize import create_credit_note, finalize_invoice
from billing_api.invoicing.runs import execute_run, start_run
from exporter.sql_sink import SqlUsageSink
from otel_processor.usage import UsageBatch, UsageRecord
from tests.billing_api.callers import staff

PERIOD = "2026-11"
FINALIZED_AT = datetime(2026, 12, 2, 9, 0, tzinfo=UTC)  # numbers carry this year: 2026
T = TypeVar("T")


# --- Setting up a tenant -------------------------------------------------------------------


def add_book(engine: Engine, tenant_id: str, components: Sequence[dict[str, Any]]) -> None:
    """The tenant's default USD book, one version from 2026-01-01, as ORM rows."""
    book_id, version_id = uuid.uuid4().hex, uuid.uuid4().hex
    with Session(engine) as session, session.begin():
        session.add(PriceBook(id=book_id, tenant_id=tenant_id, name="standard", currency="USD"))
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
        for position, fields in enumerate(components):
            session.add(
                PriceComponent(
                    id=uuid.uuid4().hex,
                    version_id=version_id,
                    position=position,
                    filters={},
                    **fields,
                )
            )
    with Session(engine) as session, session.begin():
        book = session.get(PriceBook, book_id)
        assert book is not None
        book.is_default = True


INPUT = {
    "name": "input",
    "meter": "input_tokens",
    "charge": "per_unit",
    "unit_price": Decimal("3.00"),
    "per_units": 1_000_000,
}
OUTPUT = {
    "name": "output",
    "meter": "output_tokens",
    "charge": "per_unit",
    "unit_price": Decimal("12.00"),
    "per_units": 1_000_000,
}
PLATFORM = {"name": "platform", "charge": "flat_fee", "amount": Decimal("49.00")}


def add_customers(engine: Engine, tenant_id: str, ids: Sequence[str]) -> None:
    with Session(engine) as session, session.begin():
        session.add_all(Customer(tenant_id=tenant_id, id=i, name=i.title()) for i in ids)


def chat(n: int, customer: str, input_tokens: int, output_tokens: int) -> list[UsageRecord]:
    at = int(datetime(2026, 11, 10, tzinfo=UTC).timestamp()) * 10**9 + n
    trace, span = f"{n:032x}", f"{n:016x}"
    common = {"provider": "openai", "model": "gpt-4o", "operation": "chat"}
    return [
        UsageRecord(trace, span, "input_tokens", input_tokens, customer, at, **common),
        UsageRecord(trace, span, "output_tokens", output_tokens, customer, at, **common),
    ]


def invoices_of(engine: Engine, tenant_id: str) -> list[Invoice]:
    with Session(engine) as session:
        return list(
            session.scalars(
                select(Invoice).where(Invoice.tenant_id == tenant_id).order_by(Invoice.customer_id)
            )
        )


def new_run(engine: Engine, tenant_id: str) -> str:
    with Session(engine) as session, session.begin():
        return start_run(session, staff(tenant_id), PERIOD).id


def retry_locked(engine: Engine, work: Callable[[], T]) -> T:
    """Run `work` (one whole transaction), again while SQLite says the database is locked."""
    deadline = time.monotonic() + 60
    while True:
        try:
            return work()
        except OperationalError as error:
            locked = engine.dialect.name == "sqlite" and "database is locked" in str(error)
            if not locked or time.monotonic() > deadline:
                raise
            time.sleep(0.01)


def finalize_one(engine: Engine, tenant_id: str, invoice_id: str) -> str:
    def work() -> str:
        with Session(engine) as session, session.begin():
            invoice = finalize_invoice(session, staff(tenant_id), invoice_id, now=FINALIZED_AT)
            assert invoice.number is not None
            return invoice.number

    return retry_locked(engine, work)


def number(n: int) -> str:
    return f"INV-2026-{n:06d}"


@contextlib.contextmanager
def held_at_first(engine: Engine, matches: Callable[[str, Any], bool]) -> Iterator[None]:
    """Hold each of two threads just before the first statement of its own that `matches`
    (SQL text, parameters) until the other thread gets to one too: the interleaving a
    race needs, every time. A thread that never gets there (it waits for a lock the first
    one holds, as on PostgreSQL) lets the first go on after 3 s."""
    hold = threading.Barrier(2, timeout=3)
    held: set[int] = set()

    def before(
        conn: Any, cursor: Any, statement: str, parameters: Any, context: Any, many: bool
    ) -> None:
        if threading.get_ident() not in held and matches(statement, parameters):
            held.add(threading.get_ident())
            with contextlib.suppress(threading.BrokenBarrierError):
                hold.wait()

    event.listen(engine, "before_cursor_execute", before)
    try:
        yield
    finally:
        event.remove(engine, "before_cursor_execute", before)


def is_write(statement: str, parameters: Any) -> bool:
    return statement.startswith(("INSERT", "UPDATE"))


def is_run_level_exception(statement: str, parameters: Any) -> bool:
    return statement.startswith("INSERT INTO billing_exceptions") and "run:" in repr(parameters)


# --- Tests ---------------------------------------------------------------------------------


def run_at_once(engine: Engine, tenant: str, runs: Sequence[str]) -> list[BaseException]:
    """Execute the runs in threads started together; the errors they raised."""
    start = threading.Barrier(len(runs))
    errors: list[BaseException] = []

    def work(run_id: str) -> None:
        start.wait()
        try:
            execute_run(engine, tenant, run_id)
        except BaseException as error:  # reported by the caller
            errors.append(error)

    threads = [threading.Thread(target=work, args=(run_id,)) for run_id in runs]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=120)
    return errors


def run_statuses(engine: Engine, tenant: str) -> list[str]:
    with Session(engine) as session:
        return list(
            session.scalars(select(BillingRun.status).where(BillingRun.tenant_id == tenant))
        )


class TestConcurrentRuns:
    def test_two_runs_of_one_period_draft_once(self, engine: Engine) -> None:
        tenant = create_tenant(engine, "runs at once").tenant_id
        add_book(engine, tenant, [INPUT, OUTPUT, PLATFORM])
        ids = [f"customer-{i:02d}" for i in range(30)]
        add_customers(engine, tenant, ids)
        records: list[UsageRecord] = []
        for i, customer in enumerate(ids):
            records += chat(i + 1, customer, (i + 1) * 100_000, 12_345)
        # Five customers also made tool calls, which no component prices: a blocking
        # exception each, raised by both runs on the same invoices.
        at = records[0].time_unix_nano
        records += [
            UsageRecord(f"{200 + i:032x}", f"{200 + i:016x}", "tool_calls", 3, c, at, tool="web")
            for i, c in enumerate(ids[:5])
        ]
        SqlUsageSink(engine).write(tenant, UsageBatch(records))

        errors = run_at_once(engine, tenant, [new_run(engine, tenant), new_run(engine, tenant)])
        assert errors == []
        assert run_statuses(engine, tenant) == ["completed", "completed"]

        drafts = invoices_of(engine, tenant)
        assert [d.customer_id for d in drafts] == ids
        # customer i: input (i+1) × 100 000 × 3.00 / 10^6 = 0.30 × (i+1) → 30 × (i+1);
        # output 12 345 × 12.00 / 10^6 = 0.14814 → 15; platform 4900.
        expected = {c: 30 * (i + 1) + 15 + 4900 for i, c in enumerate(ids)}
        assert {d.customer_id: d.subtotal_minor for d in drafts} == expected
        with Session(engine) as session:
            lines = session.execute(
                select(InvoiceLine.invoice_id, func.count())
                .join(Invoice, Invoice.id == InvoiceLine.invoice_id)
                .where(Invoice.tenant_id == tenant)
                .group_by(InvoiceLine.invoice_id)
            ).all()
            assert sorted(count for _, count in lines) == [3] * len(drafts)
            raised = session.execute(
                select(BillingException.customer_id, BillingException.type).where(
                    BillingException.tenant_id == tenant
                )
            ).all()
        # Once each: the tool calls, and the unknown provider cost of each customer's two
        # usage lines (the sink here stores no provider cost).
        assert sorted(r for r in raised if r[1] == "unpriced_usage") == [
            (c, "unpriced_usage") for c in ids[:5]
        ]
        assert sorted(r for r in raised if r[1] != "unpriced_usage") == sorted(
            (c, "unknown_provider_cost") for c in ids for _ in range(2)
        )

    def test_two_runs_raise_run_level_exceptions_once(self, engine: Engine) -> None:
        """Both runs are held just before inserting their first run-level exception (on
        PostgreSQL the second waits for the tenant lock instead, then sees the first's)."""
        tenant = create_tenant(engine, "run-level exceptions at once").tenant_id
        add_book(engine, tenant, [INPUT, OUTPUT, PLATFORM])
        add_customers(engine, tenant, ["acme"])
        records = chat(1, "acme", 100_000, 12_345)
        records += chat(2, "unregistered", 100_000, 12_345)
        records += chat(3, "", 1_000, 10)  # unattributed
        SqlUsageSink(engine).write(tenant, UsageBatch(records))

        runs = [new_run(engine, tenant), new_run(engine, tenant)]
        with held_at_first(engine, is_run_level_exception):
            errors = run_at_once(engine, tenant, runs)
        assert errors == []
        assert run_statuses(engine, tenant) == ["completed", "completed"]
        assert [(d.customer_id, d.subtotal_minor) for d in invoices_of(engine, tenant)] == [
            ("acme", 30 + 15 + 4900),
            ("unregistered", 30 + 15 + 4900),
        ]
        with Session(engine) as session:
            run_level = session.execute(
                select(BillingException.type, BillingException.status).where(
                    BillingException.tenant_id == tenant, BillingException.invoice_id.is_(None)
                )
            ).all()
        assert sorted(run_level) == [
            ("unattributed_usage", "open"),
            ("unregistered_customer", "open"),
        ]


class TestConcurrentFinalization:
    def test_twenty_finalizations_from_eight_threads_are_gapless(self, engine: Engine) -> None:
        tenant = create_tenant(engine, "many finalizations").tenant_id
        add_book(engine, tenant, [PLATFORM])
        ids = [f"customer-{i:02d}" for i in range(20)]
        add_customers(engine, tenant, ids)
        execute_run(engine, tenant, new_run(engine, tenant))
        drafts = invoices_of(engine, tenant)
        assert len(drafts) == 20 and {d.subtotal_minor for d in drafts} == {4900}

        start = threading.Barrier(8)

        def work(invoice_ids: list[str]) -> list[tuple[str, str]]:
            start.wait()
            return [(i, finalize_one(engine, tenant, i)) for i in invoice_ids]

        shares = [[d.id for d in drafts[k::8]] for k in range(8)]
        with ThreadPoolExecutor(max_workers=8) as pool:
            results = [pair for share in pool.map(work, shares) for pair in share]

        numbers = [n for _, n in results]
        assert sorted(numbers) == [number(n) for n in range(1, 21)]
        final = {i.id: i for i in invoices_of(engine, tenant)}
        assert {i: final[i].number for i, _ in results} == dict(results)
        assert {i.status for i in final.values()} == {"finalized"}
        with Session(engine) as session:
            sequence = session.get(InvoiceSequence, (tenant, "invoice", 2026))
            assert sequence is not None and sequence.last_number == 20


class TestFinalizingOneDraftTwice:
    def test_one_number_one_credit_draw(self, engine: Engine) -> None:
        """Two finalizations of the same draft (a double click), each held just before its
        first write (on PostgreSQL the second waits for the invoice's row lock instead)."""
        tenant = create_tenant(engine, "double click").tenant_id
        add_book(engine, tenant, [PLATFORM])
        add_customers(engine, tenant, ["acme"])
        with Session(engine) as session, session.begin():
            grant_credits(
                session,
                staff(tenant),
                "acme",
                currency="USD",
                amount_minor=2000,
                now=datetime(2026, 11, 1, tzinfo=UTC),
            )
        execute_run(engine, tenant, new_run(engine, tenant))
        (draft,) = invoices_of(engine, tenant)

        def attempt(_: int) -> str:
            try:
                return finalize_one(engine, tenant, draft.id)
            except ConflictError:
                return "conflict"

        with held_at_first(engine, is_write), ThreadPoolExecutor(max_workers=2) as pool:
            outcomes = sorted(pool.map(attempt, range(2)))

        assert outcomes == ["INV-2026-000001", "conflict"]
        (final,) = invoices_of(engine, tenant)
        # 4900 − 2000 of credit = 2900, drawn once.
        assert (final.number, final.credits_minor, final.total_minor) == (number(1), 2000, 2900)
        with Session(engine) as session:
            sequence = session.get(InvoiceSequence, (tenant, "invoice", 2026))
            assert sequence is not None and sequence.last_number == 1
            balance = credit_balance(
                session, staff(tenant), "acme", datetime(2026, 12, 1, tzinfo=UTC)
            )
        assert balance == {"USD": 0}


class TestCreditNotesAtOnce:
    def test_never_more_than_the_total(self, engine: Engine) -> None:
        tenant = create_tenant(engine, "credit notes at once").tenant_id
        add_book(engine, tenant, [PLATFORM])
        add_customers(engine, tenant, ["acme"])
        execute_run(engine, tenant, new_run(engine, tenant))
        (draft,) = invoices_of(engine, tenant)
        finalize_one(engine, tenant, draft.id)  # 4900

        def credit(_: int) -> str:
            def work() -> str:
                with Session(engine) as session, session.begin():
                    note = create_credit_note(
                        session,
                        staff(tenant),
                        draft.id,
                        amount=Decimal("30.00"),
                        reason="outage",
                        now=FINALIZED_AT,
                    )
                    return note.number

            try:
                return retry_locked(engine, work)
            except UnprocessableError:
                return "refused"

        with held_at_first(engine, is_write), ThreadPoolExecutor(max_workers=2) as pool:
            outcomes = sorted(pool.map(credit, range(2)))
        assert outcomes == ["INV-CN-2026-000001", "refused"]
        with Session(engine) as session:
            notes = repository.credit_notes(session, draft.id)
        assert [n.amount_minor for n in notes] == [3000]


class TestRolledBackFinalization:
    def test_rollback_gives_the_number_back(self, engine: Engine) -> None:
        tenant = create_tenant(engine, "rollback").tenant_id
        add_book(engine, tenant, [PLATFORM])
        add_customers(engine, tenant, ["acme", "globex"])
        execute_run(engine, tenant, new_run(engine, tenant))
        acme, globex = invoices_of(engine, tenant)

        with (
            pytest.raises(RuntimeError, match="after finalize"),
            Session(engine) as session,
            session.begin(),
        ):
            taken = finalize_invoice(session, staff(tenant), acme.id, now=FINALIZED_AT)
            assert taken.number == number(1)
            raise RuntimeError("crash after finalize")

        back = {i.id: i for i in invoices_of(engine, tenant)}
        assert (back[acme.id].status, back[acme.id].number) == ("draft", None)
        assert finalize_one(engine, tenant, globex.id) == number(1)
        assert finalize_one(engine, tenant, acme.id) == number(2)

    def test_waiting_finalization_takes_the_number_of_one_rolled_back(self, engine: Engine) -> None:
        """A holds number 1 in an open transaction; B waits for it; A rolls back; B gets 1."""
        tenant = create_tenant(engine, "rollback while waiting").tenant_id
        add_book(engine, tenant, [PLATFORM])
        add_customers(engine, tenant, ["acme", "globex"])
        execute_run(engine, tenant, new_run(engine, tenant))
        acme, globex = invoices_of(engine, tenant)

        holding, release = threading.Event(), threading.Event()
        seen: list[str | None] = []

        def first() -> None:
            try:
                with Session(engine) as session, session.begin():
                    taken = finalize_invoice(session, staff(tenant), acme.id, now=FINALIZED_AT)
                    seen.append(taken.number)
                    holding.set()
                    assert release.wait(timeout=60)
                    raise RuntimeError("roll back")
            except RuntimeError:
                return

        a = threading.Thread(target=first)
        a.start()
        assert holding.wait(timeout=60)
        with ThreadPoolExecutor(max_workers=1) as pool:
            b = pool.submit(finalize_one, engine, tenant, globex.id)
            time.sleep(0.5)
            assert not b.done(), "B took a number while A still held the sequence"
            release.set()
            a.join(timeout=60)
            assert b.result(timeout=60) == number(1)
        assert seen == [number(1)]
        final = {i.id: i for i in invoices_of(engine, tenant)}
        assert (final[acme.id].status, final[acme.id].number) == ("draft", None)
        assert finalize_one(engine, tenant, acme.id) == number(2)
