"""A synthetic month for the billing benchmarks: one tenant, N customers, M usage records.

Loaded the fastest way each backend offers (COPY on PostgreSQL, executemany on SQLite),
since loading is not what is measured. November 2026; each span has input, cache-read and
output tokens over four models and three steps; provider cost is set per record.
"""

from __future__ import annotations

import argparse
import os
import random
import sqlite3
import tempfile
import time
import uuid
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from decimal import Decimal

from sqlalchemy import Engine, create_engine, text
from sqlalchemy.engine import make_url
from sqlalchemy.orm import Session
from sqlalchemy.pool import NullPool

from agentmeter.db import make_engine, migrate
from agentmeter.partitions import create_months, months_between
from agentmeter.settings import Settings
from agentmeter.tables import (
    Customer,
    PriceBook,
    PriceComponent,
    PriceVersion,
    to_unix_nano,
)
from agentmeter.tenants import create_tenant
from agentmeter.usage_keys import Dimensions, UsageKeys
from exporter.sql_sink import SPAN_COLUMNS

PERIOD = "2026-11"
START = datetime(2026, 11, 1, tzinfo=UTC)
END = datetime(2026, 12, 1, tzinfo=UTC)
MODELS = (
    ("openai", "gpt-4o"),
    ("openai", "gpt-4o-mini"),
    ("anthropic", "claude-sonnet-4"),
    ("openai", "o3"),
)
STEPS = ("plan", "research", "answer")
# Each span's token meters: input, cache read and output (the others stay NULL).
_TOKENS = {"input_tokens": 0, "cache_read_tokens": 1, "output_tokens": 3}


def fresh_postgres(base_url: str) -> str:
    """A new empty database on the server of `base_url`."""
    name = f"agentmeter_bench_{uuid.uuid4().hex[:8]}"
    admin = create_engine(base_url, isolation_level="AUTOCOMMIT", poolclass=NullPool)
    with admin.connect() as connection:
        connection.execute(text(f'CREATE DATABASE "{name}"'))
    admin.dispose()
    return make_url(base_url).set(database=name).render_as_string(hide_password=False)


def price_book(session: Session, tenant_id: str) -> None:
    """Per-model token prices, a tool fee, and a flat platform fee."""
    session.add(
        PriceBook(id="book", tenant_id=tenant_id, name="standard", currency="USD", is_default=True)
    )
    session.add(
        PriceVersion(
            id="v1", book_id="book", number=1, effective_from=datetime(2026, 1, 1, tzinfo=UTC)
        )
    )
    session.flush()
    components = [
        ("input-default", "input_tokens", {}, "3"),
        ("input-mini", "input_tokens", {"model": "gpt-4o-mini*"}, "0.30"),
        ("cache", "cache_read_tokens", {}, "0.30"),
        ("output-default", "output_tokens", {}, "15"),
        ("output-mini", "output_tokens", {"model": "gpt-4o-mini*"}, "1.20"),
    ]
    for position, (name, meter, filters, price) in enumerate(components):
        session.add(
            PriceComponent(
                id=f"c{position}", version_id="v1", position=position, name=name, meter=meter,
                filters=filters, charge="per_unit", unit_price=Decimal(price), per_units=1_000_000,
            )
        )  # fmt: skip
    session.add(
        PriceComponent(
            id="fee", version_id="v1", position=9, name="platform", meter=None, filters={},
            charge="flat_fee", amount=Decimal("49"),
        )
    )  # fmt: skip


def _rows(
    engine: Engine,
    tenant_id: str,
    customers: int,
    records: int,
    seed: int,
    start: datetime = START,
    end: datetime = END,
) -> Iterator[tuple[object, ...]]:
    """`records` // 3 spans as rows of `usage_spans` (`SPAN_COLUMNS`), each with three
    token meters; their tenant, customer and dimension keys are created first."""
    with engine.begin() as connection:
        keys = UsageKeys(connection)
        tenant_key = keys.tenant(tenant_id)
        customer_keys = keys.customers_of(
            tenant_key, (f"cust-{n:05d}" for n in range(min(customers, records // 3)))
        )
        dimension_ids = keys.dimensions_of(
            Dimensions(provider, model, "chat", "support", step, "", "agent")
            for provider, model in MODELS
            for step in STEPS
        )
    rng = random.Random(seed)
    spans = records // 3
    start_ns, end_ns = to_unix_nano(start), to_unix_nano(end)
    received = time.time_ns()
    for n in range(spans):
        customer = f"cust-{n % customers:05d}"
        provider, model = MODELS[rng.randrange(len(MODELS))]
        step = STEPS[rng.randrange(len(STEPS))]
        when = rng.randrange(start_ns, end_ns)
        tokens = rng.randrange(500, 20_000)
        meters: list[int | None] = [None] * 15  # (tokens, cost, superseded by) per meter
        for meter, quantity in (
            ("input_tokens", tokens),
            ("cache_read_tokens", tokens // 4),
            ("output_tokens", rng.randrange(50, 2_000)),
        ):
            meters[3 * _TOKENS[meter]] = quantity
            meters[3 * _TOKENS[meter] + 1] = quantity * 2_500_000
        dimensions = Dimensions(provider, model, "chat", "support", step, "", "agent")
        yield (
            tenant_key, (n // 4 + 1).to_bytes(16, "big"), n + 1, when, customer_keys[customer],
            dimension_ids[dimensions], received, None, None, None, *meters,
        )  # fmt: skip


def build(
    database_url: str,
    customers: int,
    records: int,
    *,
    start: datetime = START,
    end: datetime = END,
) -> tuple[Engine, str, float]:
    """Migrate, create the tenant, customers, price book and usage spread evenly over
    [start, end) (default November 2026); (engine, tenant, secs)."""
    engine = make_engine(Settings(database_url=database_url))
    migrate(engine)
    tenant_id = create_tenant(engine, "bench").tenant_id
    with Session(engine) as session, session.begin():
        price_book(session, tenant_id)
        session.add_all(
            Customer(tenant_id=tenant_id, id=f"cust-{i:05d}", name=f"Customer {i}")
            for i in range(customers)
        )
    with engine.begin() as schema:  # loaded below the sink: its months first
        create_months(schema, months_between(start, end))
    started = time.perf_counter()
    rows = _rows(engine, tenant_id, customers, records, seed=1, start=start, end=end)
    columns = ",".join(SPAN_COLUMNS)
    if engine.dialect.name == "sqlite":
        path = make_url(database_url).database
        assert path
        connection = sqlite3.connect(path)
        placeholders = ",".join("?" * len(SPAN_COLUMNS))
        with connection:
            connection.executemany(
                f"INSERT INTO usage_spans ({columns}) VALUES ({placeholders})", rows
            )
        connection.close()
    else:
        raw = engine.raw_connection()
        try:
            cursor = raw.cursor()
            with cursor.copy(f"COPY usage_spans ({columns}) FROM STDIN") as copy:
                for row in rows:
                    copy.write_row(row)
            raw.commit()
            # The state autovacuum keeps a store in: hint bits set and the visibility map
            # built, so reads measure the steady state, not the first pass over fresh COPY.
            raw.driver_connection.autocommit = True  # type: ignore[union-attr]
            cursor.execute("VACUUM (ANALYZE) usage_spans")
            cursor.execute("VACUUM (ANALYZE) usage_customers")
        finally:
            raw.close()
    return engine, tenant_id, time.perf_counter() - started


def run_on_backends(
    doc: str, goal: str, run: Callable[..., None], *, requests: bool = False
) -> None:
    """The command line the benchmarks over `build`'s data share: sizes and backends, then
    `run` (label, database URL, customers, records) on each backend asked for. With
    `requests`, also `--requests` (how many times a read benchmark times each read), passed
    to `run` as a fifth argument."""
    parser = argparse.ArgumentParser(description=doc.split("\n\n")[0])
    parser.add_argument("--customers", type=int, default=10_000)
    parser.add_argument("--records", type=int, default=10_000_000)
    if requests:
        parser.add_argument("--requests", type=int, default=100)
    parser.add_argument("--backend", choices=("both", "sqlite", "postgresql"), default="both")
    args = parser.parse_args()
    sizes = (args.customers, args.records, *((args.requests,) if requests else ()))
    print(goal)
    if args.backend in ("both", "postgresql"):
        base = os.environ.get("AGENTMETER_TEST_POSTGRES_URL")
        if base:
            run("postgresql", fresh_postgres(base), *sizes)
        else:
            print("postgresql: skipped (set AGENTMETER_TEST_POSTGRES_URL; see scripts/test.sh)")
    if args.backend in ("both", "sqlite"):
        with tempfile.TemporaryDirectory() as directory:
            run("sqlite", f"sqlite:///{directory}/bench.db", *sizes)
