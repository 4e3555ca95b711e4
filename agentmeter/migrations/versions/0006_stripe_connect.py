"""stripe connect

Revision ID: 0006
Revises: 0003
Create Date: 2026-11-30 03:10:15
"""

import sqlalchemy as sa
from alembic import op

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "stripe_events",
        sa.Column("id", sa.String(length=255), nullable=False),
        sa.Column("account_id", sa.String(length=64), nullable=True),
        sa.Column("type", sa.String(length=128), nullable=False),
        sa.Column("payload", sa.JSON(), nullable=False),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("note", sa.String(length=2000), nullable=False),
        sa.Column("received_at", sa.DateTime(), nullable=False),
        sa.Column("processed_at", sa.DateTime(), nullable=True),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_stripe_events")),
    )
    with op.batch_alter_table("stripe_events", schema=None) as batch_op:
        batch_op.create_index(
            batch_op.f("ix_stripe_events_status_received_at"),
            ["status", "received_at"],
            unique=False,
        )

    op.create_table(
        "stripe_jobs",
        sa.Column(
            "id",
            sa.BigInteger().with_variant(sa.Integer(), "sqlite"),
            autoincrement=True,
            nullable=False,
        ),
        sa.Column("key", sa.String(length=64), nullable=False),
        sa.Column("tenant_id", sa.String(length=32), nullable=False),
        sa.Column("invoice_id", sa.String(length=32), nullable=False),
        sa.Column("kind", sa.String(length=16), nullable=False),
        sa.Column("credit_note_id", sa.String(length=32), nullable=True),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("attempts", sa.Integer(), nullable=False),
        sa.Column("next_attempt_at", sa.DateTime(), nullable=False),
        sa.Column("last_error", sa.String(length=2000), nullable=False),
        sa.Column("progress", sa.JSON(), nullable=False),
        sa.Column("created_at", sa.DateTime(), nullable=False),
        sa.Column("finished_at", sa.DateTime(), nullable=True),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_stripe_jobs")),
        sa.UniqueConstraint("key", name=op.f("uq_stripe_jobs_key")),
    )
    with op.batch_alter_table("stripe_jobs", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_stripe_jobs_invoice_id"), ["invoice_id"], unique=False)
        batch_op.create_index(
            batch_op.f("ix_stripe_jobs_status_next_attempt_at"),
            ["status", "next_attempt_at"],
            unique=False,
        )

    op.create_table(
        "stripe_accounts",
        sa.Column("tenant_id", sa.String(length=32), nullable=False),
        sa.Column("account_id", sa.String(length=64), nullable=False),
        sa.Column("connected_via", sa.String(length=16), nullable=False),
        sa.Column("application_fee_percent", sa.String(length=64), nullable=True),
        sa.Column("connected_at", sa.DateTime(), nullable=False),
        sa.ForeignKeyConstraint(
            ["tenant_id"], ["tenants.id"], name=op.f("fk_stripe_accounts_tenant_id_tenants")
        ),
        sa.PrimaryKeyConstraint("tenant_id", name=op.f("pk_stripe_accounts")),
        sa.UniqueConstraint("account_id", name=op.f("uq_stripe_accounts_account_id")),
    )
    op.create_table(
        "stripe_customers",
        sa.Column("tenant_id", sa.String(length=32), nullable=False),
        sa.Column("customer_id", sa.String(length=256), nullable=False),
        sa.Column("collection_method", sa.String(length=32), nullable=False),
        sa.Column("days_until_due", sa.Integer(), nullable=True),
        sa.Column("account_id", sa.String(length=64), nullable=True),
        sa.Column("stripe_customer_id", sa.String(length=64), nullable=True),
        sa.ForeignKeyConstraint(
            ["tenant_id"], ["tenants.id"], name=op.f("fk_stripe_customers_tenant_id_tenants")
        ),
        sa.PrimaryKeyConstraint("tenant_id", "customer_id", name=op.f("pk_stripe_customers")),
    )
    op.create_table(
        "stripe_oauth_states",
        sa.Column("state_hash", sa.String(length=64), nullable=False),
        sa.Column("tenant_id", sa.String(length=32), nullable=False),
        sa.Column("expires_at", sa.DateTime(), nullable=False),
        sa.Column("used_at", sa.DateTime(), nullable=True),
        sa.ForeignKeyConstraint(
            ["tenant_id"], ["tenants.id"], name=op.f("fk_stripe_oauth_states_tenant_id_tenants")
        ),
        sa.PrimaryKeyConstraint("state_hash", name=op.f("pk_stripe_oauth_states")),
    )
    with op.batch_alter_table("stripe_oauth_states", schema=None) as batch_op:
        batch_op.create_index(
            batch_op.f("ix_stripe_oauth_states_tenant_id"), ["tenant_id"], unique=False
        )

    with op.batch_alter_table("invoices", schema=None) as batch_op:
        batch_op.add_column(sa.Column("stripe_invoice_id", sa.String(length=64), nullable=True))
        batch_op.add_column(
            sa.Column(
                "stripe_sync_status",
                sa.String(length=16),
                server_default="not_connected",
                nullable=False,
            )
        )
        batch_op.add_column(
            sa.Column("stripe_error", sa.String(length=2000), server_default="", nullable=False)
        )
        batch_op.add_column(
            sa.Column(
                "payment_status", sa.String(length=16), server_default="unpaid", nullable=False
            )
        )
        batch_op.add_column(sa.Column("payment_event_at", sa.BigInteger(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("invoices", schema=None) as batch_op:
        batch_op.drop_column("payment_event_at")
        batch_op.drop_column("payment_status")
        batch_op.drop_column("stripe_error")
        batch_op.drop_column("stripe_sync_status")
        batch_op.drop_column("stripe_invoice_id")

    with op.batch_alter_table("stripe_oauth_states", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_stripe_oauth_states_tenant_id"))

    op.drop_table("stripe_oauth_states")
    op.drop_table("stripe_customers")
    op.drop_table("stripe_accounts")
    with op.batch_alter_table("stripe_jobs", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_stripe_jobs_status_next_attempt_at"))
        batch_op.drop_index(batch_op.f("ix_stripe_jobs_invoice_id"))

    op.drop_table("stripe_jobs")
    with op.batch_alter_table("stripe_events", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_stripe_events_status_received_at"))

    op.drop_table("stripe_events")
