"""Monthly partitions of the usage table on PostgreSQL.

On PostgreSQL the usage tables (`usage_spans` and `usage_meters`, migration 0015) are
partitioned by range of `time_unix_nano` (span end), one partition a calendar month (UTC),
named `usage_spans_YYYYMM` and `usage_meters_YYYYMM`. Migrations create the
partitions of the months already holding usage and of the months ahead; the SQL usage
sink creates any other month's partition on demand, before the transaction that inserts
its first record (`MonthlyPartitions.ensure`); `ensure_months_ahead` does the same ahead of
time for a scheduled job. A partitioned table's unique key must hold the partition key, so
the stored identity is (tenant, trace id, span id, time) (and the meter, in `usage_meters`):
every copy of a span (an exporter's retry, a second receiver) carries the same end time, so
this deduplicates exactly what (tenant, trace id, span id, meter) does.

Old months leave the live tables with `detach_month`: each partition becomes a standalone
table of the same name, no longer read by rating, invoices or the portal, to be archived
(`pg_dump -t`) and dropped by the operator. `compact_month` rebuilds a past month's
indexes while writes go on. See docs/partitions.md.

SQLite has no partitions: creating them is a no-op there; detaching and compacting a month
are refused.
"""

from __future__ import annotations

import re
import threading
from collections.abc import Iterable
from datetime import UTC, datetime
from typing import NamedTuple

from sqlalchemy import Connection, Engine, text
from sqlalchemy.exc import DBAPIError

from agentmeter.tables import to_unix_nano

# The tables partitioned by month; the first one's partitions tell which months exist.
USAGE_TABLES = ("usage_spans", "usage_meters")
# A month's partition, and (suffixed) one detached from its table, kept to archive.
_PARTITION = re.compile(rf"^({'|'.join(USAGE_TABLES)})_(\d{{4}})(\d{{2}})(_detached_\d+)?$")
# One lock id for every partition change: creations are rare, so they simply queue.
_PARTITION_LOCK = 0x5553_4147_4550_4152  # "USAGEPAR"

Month = tuple[int, int]


def month_of(unix_nano: int) -> Month:
    """The UTC calendar month (year, month) of a Unix-nanosecond time."""
    moment = datetime.fromtimestamp(unix_nano // 10**9, UTC)
    return moment.year, moment.month


def next_month(month: Month) -> Month:
    year, number = month
    return (year + 1, 1) if number == 12 else (year, number + 1)


def months_between(start: datetime, end: datetime) -> list[Month]:
    """The months that [start, end) touches."""
    months = [(start.year, start.month)]
    last = month_of(to_unix_nano(end) - 1)
    while months[-1] < last:
        months.append(next_month(months[-1]))
    return months


def month_bounds(month: Month) -> tuple[int, int]:
    """[start, end) of a month in Unix nanoseconds."""
    start = datetime(month[0], month[1], 1, tzinfo=UTC)
    end = datetime(*next_month(month), 1, tzinfo=UTC)
    return to_unix_nano(start), to_unix_nano(end)


def partition_name(month: Month, table: str = USAGE_TABLES[0]) -> str:
    return f"{table}_{month[0]:04d}{month[1]:02d}"


def is_partition(name: str | None) -> bool:
    """Whether a table name is a monthly partition (schema comparison leaves them out)."""
    return bool(name and _PARTITION.match(name))


def include_name(name: str | None, type_: str, parent_names: object) -> bool:
    """Alembic's `include_name` hook: schema comparisons leave the monthly partitions out
    (the models describe the partitioned table, not each month)."""
    return not (type_ == "table" and is_partition(name))


def missing_partition(error: DBAPIError) -> bool:
    """Whether an insert failed because no partition holds its month (SQLSTATE 23514)."""
    return getattr(error.orig, "sqlstate", None) == "23514" and "partition" in str(error.orig)


def partitioned(connection: Connection) -> bool:
    """Whether this database keeps usage in monthly partitions (PostgreSQL)."""
    return connection.dialect.name == "postgresql"


def existing_months(connection: Connection) -> set[Month]:
    """The months whose partitions are attached to the usage tables."""
    rows = connection.execute(
        text(
            "SELECT child.relname FROM pg_inherits "
            "JOIN pg_class child ON child.oid = pg_inherits.inhrelid "
            "JOIN pg_class parent ON parent.oid = pg_inherits.inhparent "
            "WHERE parent.relname = :table AND pg_table_is_visible(parent.oid)"
        ),
        {"table": USAGE_TABLES[0]},
    ).scalars()
    return {(int(m[2]), int(m[3])) for name in rows if (m := _PARTITION.match(name))}


def parse_month(value: str) -> Month:
    """`YYYY-MM` as (year, month); ValueError when it is not one."""
    moment = datetime.strptime(value, "%Y-%m")
    return moment.year, moment.month


def create_months(
    connection: Connection, months: Iterable[Month], tables: tuple[str, ...] = USAGE_TABLES
) -> set[Month]:
    """Create the missing partitions among `months` of `tables` in this transaction
    (serialised with every other partition change); returns the months created. (Migration
    0011 names the table that was partitioned then.)"""
    if not partitioned(connection):
        return set()
    connection.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": _PARTITION_LOCK})
    missing = set(months) - existing_months(connection)
    for month in sorted(missing):
        start, end = month_bounds(month)
        for table in tables:
            connection.exec_driver_sql(
                f"CREATE TABLE {partition_name(month, table)} PARTITION OF {table} "
                f"FOR VALUES FROM ({start}) TO ({end})"
            )
    return missing


def ensure_months_ahead(engine: Engine, now: datetime, ahead: int = 3) -> set[Month]:
    """Create the partitions of this month and the `ahead` next ones (a scheduled job's
    work; ingest creates any other month on demand). Returns the months created."""
    months = [(now.year, now.month)]
    for _ in range(ahead):
        months.append(next_month(months[-1]))
    with engine.begin() as connection:
        return create_months(connection, months)


def detach_month(engine: Engine, month: Month, now: datetime) -> list[str]:
    """Detach a month's partitions from the usage tables and return the tables they become,
    `usage_spans_YYYYMM_detached_<unix seconds>` and its `usage_meters_…`: their records
    are no longer read by anything, and the tables can be archived and dropped. Usage
    arriving later for that month gets new, empty partitions."""
    with engine.begin() as connection:
        _lock_attached(connection, month)
        archived: list[str] = []
        for table in USAGE_TABLES:
            name = partition_name(month, table)
            archived.append(f"{name}_detached_{int(now.timestamp())}")
            connection.exec_driver_sql(f"ALTER TABLE {table} DETACH PARTITION {name}")
            connection.exec_driver_sql(f"ALTER TABLE {name} RENAME TO {archived[-1]}")
    return archived


def _lock_attached(connection: Connection, month: Month) -> None:
    """Serialise this transaction with every other partition change, then make sure the
    month has attached partitions; ValueError (with the reason) when not, or on SQLite."""
    if not partitioned(connection):
        raise ValueError("usage is partitioned by month only on PostgreSQL")
    connection.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": _PARTITION_LOCK})
    if month not in existing_months(connection):
        raise ValueError(f"no attached partition {partition_name(month)}")


class Compaction(NamedTuple):
    """What `compact_month` did: the partitions it rebuilt the indexes of, and their bytes
    (table and indexes) before and after."""

    tables: list[str]
    bytes_before: int
    bytes_after: int


def compact_month(engine: Engine, month: Month) -> Compaction:
    """Rebuild the indexes of a month's partitions (`REINDEX TABLE CONCURRENTLY`: writes and
    reads go on meanwhile). B-tree pages split by ids that arrive in random order are left
    partly empty: a month's indexes take about a third more than rebuilt ones
    (docs/partitions.md). For a month that no longer takes much usage; a month still being
    written fills its pages the same way again."""
    with engine.begin() as connection:
        _lock_attached(connection, month)
    tables = [partition_name(month, table) for table in USAGE_TABLES]
    # REINDEX CONCURRENTLY runs outside any transaction block.
    with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as connection:
        before = _total_bytes(connection, tables)
        for table in tables:
            connection.exec_driver_sql(f"REINDEX TABLE CONCURRENTLY {table}")
        return Compaction(tables, before, _total_bytes(connection, tables))


def _total_bytes(connection: Connection, tables: Iterable[str]) -> int:
    """Bytes of these tables with their indexes."""
    return sum(
        connection.execute(
            text("SELECT pg_total_relation_size(CAST(:table AS regclass))"), {"table": table}
        ).scalar_one()
        for table in tables
    )


class MonthlyPartitions:
    """The sink's view of which months have a partition: a cache of the months known to
    exist. A month detached since gets a new, empty partition after the insert that finds
    none (`forget`, then the exporter's retry). Thread-safe."""

    def __init__(self, engine: Engine) -> None:
        self._engine = engine
        self._known: set[Month] = set()
        self._lock = threading.Lock()

    def ensure(self, times_unix_nano: Iterable[int]) -> None:
        """Make sure every month of these times has a partition, in a short transaction
        of its own (committed before the usage transaction that needs it)."""
        if self._engine.dialect.name != "postgresql":
            return
        months: set[Month] = set()
        start = end = 0  # the bounds of the last month seen: most times fall in it
        for unix_nano in times_unix_nano:
            if not start <= unix_nano < end:
                month = month_of(unix_nano)
                months.add(month)
                start, end = month_bounds(month)
        with self._lock:
            missing = months - self._known
        if not missing:
            return
        with self._engine.begin() as connection:
            create_months(connection, missing)
        with self._lock:
            self._known |= missing

    def forget(self) -> None:
        """Drop the cache (after an insert found no partition: a month was detached)."""
        with self._lock:
            self._known.clear()


__all__ = [
    "USAGE_TABLES",
    "Compaction",
    "MonthlyPartitions",
    "compact_month",
    "create_months",
    "detach_month",
    "ensure_months_ahead",
    "existing_months",
    "include_name",
    "is_partition",
    "missing_partition",
    "month_bounds",
    "month_of",
    "months_between",
    "parse_month",
    "partition_name",
]
