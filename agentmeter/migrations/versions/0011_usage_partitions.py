"""usage: monthly partitions on PostgreSQL; identity key holds the span's end time

PostgreSQL: `usage_records` becomes a table partitioned by range of `time_unix_nano`, one
partition a UTC month (exporter/partitions.py), with partitions for every month holding
usage and for this month and the three next; the rows are copied over, the id sequence
kept. A partitioned table's unique key must hold its partition key, so the identity
constraint becomes (tenant, trace, span, meter, time) on both backends; every copy of a
span carries the same end time, so it deduplicates the same records.

Revision ID: 0011
Revises: 0010
Create Date: 2026-11-30 07:00:00.000000
"""

from datetime import UTC, datetime

from alembic import op

from agentmeter.partitions import create_months, month_of, next_month

revision = "0011"
down_revision = "0010"
branch_labels = None
depends_on = None

_OLD_KEY = "uq_usage_records_tenant_id_trace_id_span_id_meter"
_NEW_KEY = "uq_usage_records_identity"
_IDENTITY = ["tenant_id", "trace_id", "span_id", "meter"]
_INDEXES = {
    "ix_usage_records_tenant_id_customer_id_time_unix_nano": (
        "tenant_id, customer_id, time_unix_nano"
    ),
    "ix_usage_records_tenant_id_trace_id_parent_span_id": "tenant_id, trace_id, parent_span_id",
    "ix_usage_records_tenant_id_response_id": "tenant_id, response_id",
}


def upgrade() -> None:
    connection = op.get_bind()
    if connection.dialect.name != "postgresql":
        with op.batch_alter_table("usage_records", schema=None) as batch_op:
            batch_op.drop_constraint(_OLD_KEY, type_="unique")
            batch_op.create_unique_constraint(_NEW_KEY, [*_IDENTITY, "time_unix_nano"])
        return
    op.execute("ALTER TABLE usage_records RENAME TO usage_records_unpartitioned")
    op.execute(
        "CREATE TABLE usage_records (LIKE usage_records_unpartitioned INCLUDING DEFAULTS) "
        "PARTITION BY RANGE (time_unix_nano)"
    )
    op.execute("ALTER SEQUENCE usage_records_id_seq OWNED BY usage_records.id")
    now = datetime.now(UTC)
    months = [(now.year, now.month)]
    for _ in range(3):
        months.append(next_month(months[-1]))
    stored = connection.exec_driver_sql(
        "SELECT DISTINCT time_unix_nano / 86400000000000 FROM usage_records_unpartitioned"
    ).scalars()
    months += [month_of(day * 86_400 * 10**9) for day in stored]
    create_months(connection, months, tables=("usage_records",))
    op.execute("INSERT INTO usage_records SELECT * FROM usage_records_unpartitioned")
    op.execute("DROP TABLE usage_records_unpartitioned")
    op.execute(
        "ALTER TABLE usage_records ADD CONSTRAINT pk_usage_records PRIMARY KEY (id, time_unix_nano)"
    )
    op.execute(
        f"ALTER TABLE usage_records ADD CONSTRAINT {_NEW_KEY} "
        "UNIQUE (tenant_id, trace_id, span_id, meter, time_unix_nano)"
    )
    for name, columns in _INDEXES.items():
        op.execute(f"CREATE INDEX {name} ON usage_records ({columns})")


def downgrade() -> None:
    connection = op.get_bind()
    if connection.dialect.name != "postgresql":
        with op.batch_alter_table("usage_records", schema=None) as batch_op:
            batch_op.drop_constraint(_NEW_KEY, type_="unique")
            batch_op.create_unique_constraint(_OLD_KEY, _IDENTITY)
        return
    op.execute("ALTER TABLE usage_records RENAME TO usage_records_partitioned")
    op.execute("CREATE TABLE usage_records (LIKE usage_records_partitioned INCLUDING DEFAULTS)")
    op.execute("ALTER SEQUENCE usage_records_id_seq OWNED BY usage_records.id")
    op.execute("INSERT INTO usage_records SELECT * FROM usage_records_partitioned")
    op.execute("DROP TABLE usage_records_partitioned")
    op.execute("ALTER TABLE usage_records ADD CONSTRAINT pk_usage_records PRIMARY KEY (id)")
    op.execute(
        f"ALTER TABLE usage_records ADD CONSTRAINT {_OLD_KEY} "
        "UNIQUE (tenant_id, trace_id, span_id, meter)"
    )
    for name, columns in _INDEXES.items():
        op.execute(f"CREATE INDEX {name} ON usage_records ({columns})")
