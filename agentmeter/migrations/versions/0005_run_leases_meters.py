"""billing run leases, meter registry

Revision ID: 0005
Revises: 0003
Create Date: 2026-11-30 03:15:00
"""

import sqlalchemy as sa
from alembic import op

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("billing_runs", schema=None) as batch_op:
        batch_op.add_column(
            sa.Column("holder", sa.String(length=64), server_default="", nullable=False)
        )
        batch_op.add_column(sa.Column("heartbeat_at", sa.DateTime(), nullable=True))
        batch_op.create_index(
            batch_op.f("ix_billing_runs_tenant_id_period"), ["tenant_id", "period"], unique=False
        )

    op.create_table(
        "meters",
        sa.Column("tenant_id", sa.String(length=32), nullable=False),
        sa.Column("name", sa.String(length=128), nullable=False),
        sa.Column("origin", sa.String(length=16), nullable=False),
        sa.Column("description", sa.String(length=500), server_default="", nullable=False),
        sa.Column("created_at", sa.DateTime(), nullable=False),
        sa.ForeignKeyConstraint(
            ["tenant_id"], ["tenants.id"], name=op.f("fk_meters_tenant_id_tenants")
        ),
        sa.PrimaryKeyConstraint("tenant_id", "name", name=op.f("pk_meters")),
    )


def downgrade() -> None:
    op.drop_table("meters")
    with op.batch_alter_table("billing_runs", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_billing_runs_tenant_id_period"))
        batch_op.drop_column("heartbeat_at")
        batch_op.drop_column("holder")
