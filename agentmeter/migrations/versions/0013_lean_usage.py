"""usage: the identity is the primary key, no surrogate id; response ids stored as keys

First step of the lean usage store (issue 13, docs/lean_usage.md). `usage_records` loses
its surrogate `id`, a column and, on PostgreSQL, a primary-key index entry per record
that nothing reads. The identity (tenant, trace, span, meter, end time) becomes the
primary key on both backends, in place of the unique constraint: the same key, so the
same duplicates are dropped. Stored response ids become their 20-character keys
(`agentmeter.response_keys`), as the sink now stores them: the once-per-call rule compares
them only for equality. On PostgreSQL the partitioned table and its month partitions
change in place; SQLite copies the table. Downgrading keeps the keys (the ids are gone).

Revision ID: 0013
Revises: 0012
Create Date: 2026-11-30 10:00:00.000000
"""

import sqlalchemy as sa
from alembic import op

from agentmeter.response_keys import RESPONSE_KEY_LENGTH, response_key

revision = "0013"
down_revision = "0012"
branch_labels = None
depends_on = None

_IDENTITY = ["tenant_id", "trace_id", "span_id", "meter", "time_unix_nano"]
_UNIQUE = "uq_usage_records_identity"
_PRIMARY = "pk_usage_records"


def upgrade() -> None:
    connection = op.get_bind()
    if connection.dialect.name != "postgresql":
        # The same key as the sink's, computed by SQLite through Python's.
        sqlite = connection.connection.driver_connection
        sqlite.create_function("response_key", 1, response_key, deterministic=True)  # type: ignore[union-attr]
        op.execute(
            "UPDATE usage_records SET response_id = response_key(response_id) "
            "WHERE response_id <> ''"
        )
        # SQLite alters a key by copying the table (alembic's batch mode).
        with op.batch_alter_table("usage_records", recreate="always") as batch_op:
            batch_op.drop_constraint(_UNIQUE, type_="unique")
            batch_op.drop_column("id")
            batch_op.create_primary_key(_PRIMARY, _IDENTITY)
        return
    op.execute(
        "UPDATE usage_records SET response_id = left(encode(sha256(convert_to(response_id, "
        f"'UTF8')), 'hex'), {RESPONSE_KEY_LENGTH}) WHERE response_id <> ''"
    )
    op.execute(f"ALTER TABLE usage_records DROP CONSTRAINT {_PRIMARY}")  # (id, time)
    op.execute("ALTER TABLE usage_records DROP COLUMN id")  # and the sequence it owns
    op.execute(
        f"ALTER TABLE usage_records ADD CONSTRAINT {_PRIMARY} PRIMARY KEY ({', '.join(_IDENTITY)})"
    )
    op.execute(f"ALTER TABLE usage_records DROP CONSTRAINT {_UNIQUE}")


def downgrade() -> None:
    if op.get_bind().dialect.name != "postgresql":
        with op.batch_alter_table("usage_records", recreate="always") as batch_op:
            batch_op.drop_constraint(_PRIMARY, type_="primary")
            batch_op.add_column(sa.Column("id", sa.Integer(), nullable=False))
            batch_op.create_primary_key(_PRIMARY, ["id"])
            batch_op.create_unique_constraint(_UNIQUE, _IDENTITY)
        return
    op.execute(
        f"ALTER TABLE usage_records ADD CONSTRAINT {_UNIQUE} UNIQUE ({', '.join(_IDENTITY)})"
    )
    op.execute(f"ALTER TABLE usage_records DROP CONSTRAINT {_PRIMARY}")
    op.execute("ALTER TABLE usage_records ADD COLUMN id bigserial")
    op.execute(
        f"ALTER TABLE usage_records ADD CONSTRAINT {_PRIMARY} PRIMARY KEY (id, time_unix_nano)"
    )
