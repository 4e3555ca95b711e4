"""invoicing

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-29 17:02:21.273912
"""

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:

    op.create_table(
        "audit_log",
        sa.Column(
            "id",
            sa.BigInteger().with_variant(sa.Integer(), "sqlite"),
            autoincrement=True,
            nullable=False,
        ),
        sa.Column("tenant_id", sa.String(length=32), nullable=False),
        sa.Column("entity", sa.String(length=32), nullable=False),
        sa.Column("entity_id", sa.String(length=64), nullable=False),
        sa.Column("action", sa.String(length=64), nullable=False),
        sa.Column("actor", sa.String(length=200), nullable=False),
        sa.Column("before", sa.JSON(), nullable=True),
        sa.Column("after", sa.JSON(), nullable=True),
        sa.Column("reason", sa.String(length=2000), nullable=False),
        sa.Column("created_at", sa.DateTime(), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_audit_log")),
    )
    with op.batch_alter_table("audit_log", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_audit_log_tenant_id"), ["tenant_id"], unique=False)

    op.create_table(
        "invoice_sequences",
        sa.Column("tenant_id", sa.String(length=32), nullable=False),
        sa.Column("kind", sa.String(length=16), nullable=False),
        sa.Column("year", sa.Integer(), nullable=False),
        sa.Column("last_number", sa.Integer(), nullable=False),
        sa.PrimaryKeyConstraint("tenant_id", "kind", "year", name=op.f("pk_invoice_sequences")),
    )
    op.create_table(
        "billing_exceptions",
        sa.Column("id", sa.String(length=32), nullable=False),
        sa.Column("tenant_id", sa.String(length=32), nullable=False),
        sa.Column("scope", sa.String(length=64), nullable=False),
        sa.Column("invoice_id", sa.String(length=32), nullable=True),
        sa.Column("period", sa.String(length=7), nullable=False),
        sa.Column("customer_id", sa.String(length=256), nullable=False),
        sa.Column("type", sa.String(length=64), nullable=False),
        sa.Column("severity", sa.String(length=16), nullable=False),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("fingerprint", sa.String(length=128), nullable=False),
        sa.Column("message", sa.String(length=2000), nullable=False),
        sa.Column("evidence", sa.JSON(), nullable=False),
        sa.Column("created_at", sa.DateTime(), nullable=False),
        sa.Column("resolved_at", sa.DateTime(), nullable=True),
        sa.Column("resolved_by", sa.String(length=200), nullable=False),
        sa.Column("note", sa.String(length=2000), nullable=False),
        sa.ForeignKeyConstraint(
            ["tenant_id"], ["tenants.id"], name=op.f("fk_billing_exceptions_tenant_id_tenants")
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_billing_exceptions")),
        sa.UniqueConstraint(
            "tenant_id",
            "scope",
            "type",
            "fingerprint",
            name=op.f("uq_billing_exceptions_tenant_id_scope_type_fingerprint"),
        ),
    )
    with op.batch_alter_table("billing_exceptions", schema=None) as batch_op:
        batch_op.create_index(
            batch_op.f("ix_billing_exceptions_invoice_id"), ["invoice_id"], unique=False
        )

    op.create_table(
        "billing_runs",
        sa.Column("id", sa.String(length=32), nullable=False),
        sa.Column("tenant_id", sa.String(length=32), nullable=False),
        sa.Column("period", sa.String(length=7), nullable=False),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("total_customers", sa.Integer(), nullable=False),
        sa.Column("processed_customers", sa.Integer(), nullable=False),
        sa.Column("drafted", sa.Integer(), nullable=False),
        sa.Column("error", sa.String(length=2000), nullable=False),
        sa.Column("created_at", sa.DateTime(), nullable=False),
        sa.Column("finished_at", sa.DateTime(), nullable=True),
        sa.ForeignKeyConstraint(
            ["tenant_id"], ["tenants.id"], name=op.f("fk_billing_runs_tenant_id_tenants")
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_billing_runs")),
    )
    with op.batch_alter_table("billing_runs", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_billing_runs_tenant_id"), ["tenant_id"], unique=False)

    op.create_table(
        "invoices",
        sa.Column("id", sa.String(length=32), nullable=False),
        sa.Column("tenant_id", sa.String(length=32), nullable=False),
        sa.Column("customer_id", sa.String(length=256), nullable=False),
        sa.Column("period", sa.String(length=7), nullable=False),
        sa.Column("period_start", sa.DateTime(), nullable=False),
        sa.Column("period_end", sa.DateTime(), nullable=False),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("number", sa.String(length=64), nullable=True),
        sa.Column("currency", sa.String(length=3), nullable=False),
        sa.Column("price_book_id", sa.String(length=32), nullable=True),
        sa.Column("versions", sa.JSON(), nullable=False),
        sa.Column("usage_micros", sa.JSON(), nullable=False),
        sa.Column("subtotal_minor", sa.BigInteger(), nullable=False),
        sa.Column("credits_minor", sa.BigInteger(), nullable=False),
        sa.Column("total_minor", sa.BigInteger(), nullable=False),
        sa.Column("provider_cost_minor", sa.BigInteger(), nullable=True),
        sa.Column("margin_minor", sa.BigInteger(), nullable=True),
        sa.Column("run_id", sa.String(length=32), nullable=True),
        sa.Column("rated_at", sa.DateTime(), nullable=True),
        sa.Column("created_at", sa.DateTime(), nullable=False),
        sa.Column("finalized_at", sa.DateTime(), nullable=True),
        sa.Column("voided_at", sa.DateTime(), nullable=True),
        sa.Column("void_reason", sa.String(length=2000), nullable=False),
        sa.ForeignKeyConstraint(
            ["tenant_id"], ["tenants.id"], name=op.f("fk_invoices_tenant_id_tenants")
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_invoices")),
        sa.UniqueConstraint(
            "tenant_id",
            "customer_id",
            "period_start",
            name=op.f("uq_invoices_tenant_id_customer_id_period_start"),
        ),
        sa.UniqueConstraint("tenant_id", "number", name=op.f("uq_invoices_tenant_id_number")),
    )
    with op.batch_alter_table("invoices", schema=None) as batch_op:
        batch_op.create_index(
            batch_op.f("ix_invoices_tenant_id_period_status"),
            ["tenant_id", "period", "status"],
            unique=False,
        )

    op.create_table(
        "credit_notes",
        sa.Column("id", sa.String(length=32), nullable=False),
        sa.Column("tenant_id", sa.String(length=32), nullable=False),
        sa.Column("invoice_id", sa.String(length=32), nullable=False),
        sa.Column("number", sa.String(length=64), nullable=False),
        sa.Column("amount_minor", sa.BigInteger(), nullable=False),
        sa.Column("reason", sa.String(length=2000), nullable=False),
        sa.Column("created_at", sa.DateTime(), nullable=False),
        sa.ForeignKeyConstraint(
            ["invoice_id"], ["invoices.id"], name=op.f("fk_credit_notes_invoice_id_invoices")
        ),
        sa.ForeignKeyConstraint(
            ["tenant_id"], ["tenants.id"], name=op.f("fk_credit_notes_tenant_id_tenants")
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_credit_notes")),
    )
    with op.batch_alter_table("credit_notes", schema=None) as batch_op:
        batch_op.create_index(
            batch_op.f("ix_credit_notes_invoice_id"), ["invoice_id"], unique=False
        )

    op.create_table(
        "invoice_lines",
        sa.Column("id", sa.String(length=32), nullable=False),
        sa.Column("invoice_id", sa.String(length=32), nullable=False),
        sa.Column("position", sa.Integer(), nullable=False),
        sa.Column("kind", sa.String(length=16), nullable=False),
        sa.Column("description", sa.String(length=500), nullable=False),
        sa.Column("component_id", sa.String(length=32), nullable=True),
        sa.Column("charge", sa.String(length=32), nullable=True),
        sa.Column("meter", sa.String(length=128), nullable=True),
        sa.Column("version_number", sa.Integer(), nullable=True),
        sa.Column("override_id", sa.String(length=32), nullable=True),
        sa.Column("quantity", sa.String(length=64), nullable=False),
        sa.Column("unit_price", sa.String(length=64), nullable=True),
        sa.Column("per_units", sa.BigInteger(), server_default="1", nullable=False),
        sa.Column("amount_minor", sa.BigInteger(), nullable=False),
        sa.Column("rated_amount_minor", sa.BigInteger(), nullable=True),
        sa.Column("adjustment_reason", sa.String(length=2000), nullable=False),
        sa.Column("provider_cost_minor", sa.BigInteger(), nullable=True),
        sa.Column("margin_minor", sa.BigInteger(), nullable=True),
        sa.Column("adjusts_period", sa.String(length=7), nullable=True),
        sa.Column("details", sa.JSON(), nullable=False),
        sa.ForeignKeyConstraint(
            ["invoice_id"], ["invoices.id"], name=op.f("fk_invoice_lines_invoice_id_invoices")
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_invoice_lines")),
    )
    with op.batch_alter_table("invoice_lines", schema=None) as batch_op:
        batch_op.create_index(
            batch_op.f("ix_invoice_lines_invoice_id"), ["invoice_id"], unique=False
        )

    with op.batch_alter_table("tenants", schema=None) as batch_op:
        batch_op.add_column(
            sa.Column("invoice_prefix", sa.String(length=16), server_default="INV", nullable=False)
        )
        batch_op.add_column(
            sa.Column(
                "late_usage_policy",
                sa.String(length=32),
                server_default="adjust_next",
                nullable=False,
            )
        )
        batch_op.add_column(
            sa.Column("spike_factor", sa.String(length=64), server_default="3", nullable=False)
        )
        batch_op.add_column(
            sa.Column(
                "margin_floor_percent", sa.String(length=64), server_default="0", nullable=False
            )
        )
        batch_op.add_column(sa.Column("review_threshold_minor", sa.BigInteger(), nullable=True))
        batch_op.add_column(sa.Column("brand_name", sa.String(length=200), nullable=True))
        batch_op.add_column(sa.Column("brand_color", sa.String(length=16), nullable=True))
        batch_op.add_column(sa.Column("brand_logo_url", sa.String(length=2000), nullable=True))


def downgrade() -> None:

    with op.batch_alter_table("tenants", schema=None) as batch_op:
        batch_op.drop_column("brand_logo_url")
        batch_op.drop_column("brand_color")
        batch_op.drop_column("brand_name")
        batch_op.drop_column("review_threshold_minor")
        batch_op.drop_column("margin_floor_percent")
        batch_op.drop_column("spike_factor")
        batch_op.drop_column("late_usage_policy")
        batch_op.drop_column("invoice_prefix")

    with op.batch_alter_table("invoice_lines", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_invoice_lines_invoice_id"))

    op.drop_table("invoice_lines")
    with op.batch_alter_table("credit_notes", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_credit_notes_invoice_id"))

    op.drop_table("credit_notes")
    with op.batch_alter_table("invoices", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_invoices_tenant_id_period_status"))

    op.drop_table("invoices")
    with op.batch_alter_table("billing_runs", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_billing_runs_tenant_id"))

    op.drop_table("billing_runs")
    with op.batch_alter_table("billing_exceptions", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_billing_exceptions_invoice_id"))

    op.drop_table("billing_exceptions")
    op.drop_table("invoice_sequences")
    with op.batch_alter_table("audit_log", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_audit_log_tenant_id"))

    op.drop_table("audit_log")
