"""provider calls billed once, agent spans

Revision ID: 0004
Revises: 0003
Create Date: 2026-11-30 03:30:00.000000
"""

import sqlalchemy as sa
from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("usage_records", schema=None) as batch_op:
        batch_op.add_column(
            sa.Column("parent_span_id", sa.String(length=16), server_default="", nullable=False)
        )
        batch_op.add_column(
            sa.Column("response_id", sa.String(length=256), server_default="", nullable=False)
        )
        batch_op.add_column(
            sa.Column("superseded_by", sa.String(length=16), server_default="", nullable=False)
        )
        batch_op.create_index(
            batch_op.f("ix_usage_records_tenant_id_trace_id_parent_span_id"),
            ["tenant_id", "trace_id", "parent_span_id"],
            unique=False,
        )
        batch_op.create_index(
            batch_op.f("ix_usage_records_tenant_id_response_id"),
            ["tenant_id", "response_id"],
            unique=False,
        )
    op.create_table(
        "agent_spans",
        sa.Column("tenant_id", sa.String(length=32), nullable=False),
        sa.Column("trace_id", sa.String(length=32), nullable=False),
        sa.Column("span_id", sa.String(length=16), nullable=False),
        sa.Column("parent_span_id", sa.String(length=16), nullable=False),
        sa.Column("agent_name", sa.String(length=256), nullable=False),
        sa.PrimaryKeyConstraint("tenant_id", "trace_id", "span_id", name=op.f("pk_agent_spans")),
    )


def downgrade() -> None:
    op.drop_table("agent_spans")
    with op.batch_alter_table("usage_records", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_usage_records_tenant_id_response_id"))
        batch_op.drop_index(batch_op.f("ix_usage_records_tenant_id_trace_id_parent_span_id"))
        batch_op.drop_column("superseded_by")
        batch_op.drop_column("response_id")
        batch_op.drop_column("parent_span_id")
