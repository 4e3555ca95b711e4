"""pricing credits budgets

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-29 16:57:44.383342
"""

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:

    op.create_table(
        "budget_alerts",
        sa.Column(
            "id",
            sa.BigInteger().with_variant(sa.Integer(), "sqlite"),
            autoincrement=True,
            nullable=False,
        ),
        sa.Column("tenant_id", sa.String(length=32), nullable=False),
        sa.Column("customer_id", sa.String(length=256), nullable=False),
        sa.Column("period_start", sa.DateTime(), nullable=False),
        sa.Column("threshold", sa.Integer(), nullable=False),
        sa.Column("spend_minor", sa.BigInteger(), nullable=False),
        sa.Column("limit_minor", sa.BigInteger(), nullable=False),
        sa.Column("created_at", sa.DateTime(), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_budget_alerts")),
        sa.UniqueConstraint(
            "tenant_id",
            "customer_id",
            "period_start",
            "threshold",
            name=op.f("uq_budget_alerts_tenant_id_customer_id_period_start_threshold"),
        ),
    )
    op.create_table(
        "webhook_deliveries",
        sa.Column("id", sa.String(length=32), nullable=False),
        sa.Column("tenant_id", sa.String(length=32), nullable=False),
        sa.Column("event_type", sa.String(length=64), nullable=False),
        sa.Column("payload", sa.JSON(), nullable=False),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("attempts", sa.Integer(), nullable=False),
        sa.Column("next_attempt_at", sa.DateTime(), nullable=False),
        sa.Column("last_error", sa.String(length=2000), nullable=False),
        sa.Column("created_at", sa.DateTime(), nullable=False),
        sa.Column("delivered_at", sa.DateTime(), nullable=True),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_webhook_deliveries")),
    )
    with op.batch_alter_table("webhook_deliveries", schema=None) as batch_op:
        batch_op.create_index(
            batch_op.f("ix_webhook_deliveries_tenant_id"), ["tenant_id"], unique=False
        )

    op.create_table(
        "budgets",
        sa.Column("tenant_id", sa.String(length=32), nullable=False),
        sa.Column("customer_id", sa.String(length=256), nullable=False),
        sa.Column("currency", sa.String(length=3), nullable=False),
        sa.Column("limit_minor", sa.BigInteger(), nullable=False),
        sa.Column("thresholds", sa.JSON(), nullable=False),
        sa.Column("created_at", sa.DateTime(), nullable=False),
        sa.ForeignKeyConstraint(
            ["tenant_id"], ["tenants.id"], name=op.f("fk_budgets_tenant_id_tenants")
        ),
        sa.PrimaryKeyConstraint("tenant_id", "customer_id", name=op.f("pk_budgets")),
    )
    op.create_table(
        "credit_grants",
        sa.Column("id", sa.String(length=32), nullable=False),
        sa.Column("tenant_id", sa.String(length=32), nullable=False),
        sa.Column("customer_id", sa.String(length=256), nullable=False),
        sa.Column("currency", sa.String(length=3), nullable=False),
        sa.Column("amount_minor", sa.BigInteger(), nullable=False),
        sa.Column("priority", sa.Integer(), nullable=False),
        sa.Column("granted_at", sa.DateTime(), nullable=False),
        sa.Column("expires_at", sa.DateTime(), nullable=True),
        sa.Column("description", sa.String(length=500), nullable=False),
        sa.Column("voided_at", sa.DateTime(), nullable=True),
        sa.ForeignKeyConstraint(
            ["tenant_id"], ["tenants.id"], name=op.f("fk_credit_grants_tenant_id_tenants")
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_credit_grants")),
    )
    with op.batch_alter_table("credit_grants", schema=None) as batch_op:
        batch_op.create_index(
            batch_op.f("ix_credit_grants_tenant_id_customer_id"),
            ["tenant_id", "customer_id"],
            unique=False,
        )

    op.create_table(
        "customer_overrides",
        sa.Column("id", sa.String(length=32), nullable=False),
        sa.Column("tenant_id", sa.String(length=32), nullable=False),
        sa.Column("customer_id", sa.String(length=256), nullable=False),
        sa.Column("effective_from", sa.DateTime(), nullable=False),
        sa.Column("effective_until", sa.DateTime(), nullable=True),
        sa.Column("note", sa.String(length=2000), nullable=False),
        sa.Column("created_at", sa.DateTime(), nullable=False),
        sa.ForeignKeyConstraint(
            ["tenant_id"], ["tenants.id"], name=op.f("fk_customer_overrides_tenant_id_tenants")
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_customer_overrides")),
    )
    with op.batch_alter_table("customer_overrides", schema=None) as batch_op:
        batch_op.create_index(
            batch_op.f("ix_customer_overrides_tenant_id_customer_id"),
            ["tenant_id", "customer_id"],
            unique=False,
        )

    op.create_table(
        "price_books",
        sa.Column("id", sa.String(length=32), nullable=False),
        sa.Column("tenant_id", sa.String(length=32), nullable=False),
        sa.Column("name", sa.String(length=200), nullable=False),
        sa.Column("currency", sa.String(length=3), nullable=False),
        sa.Column("is_default", sa.Boolean(), nullable=False),
        sa.Column("usd_rate", sa.String(length=64), nullable=False),
        sa.Column("created_at", sa.DateTime(), nullable=False),
        sa.ForeignKeyConstraint(
            ["tenant_id"], ["tenants.id"], name=op.f("fk_price_books_tenant_id_tenants")
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_price_books")),
        sa.UniqueConstraint("tenant_id", "name", name=op.f("uq_price_books_tenant_id_name")),
    )
    with op.batch_alter_table("price_books", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_price_books_tenant_id"), ["tenant_id"], unique=False)

    op.create_table(
        "provider_cost_overrides",
        sa.Column("id", sa.String(length=32), nullable=False),
        sa.Column("tenant_id", sa.String(length=32), nullable=False),
        sa.Column("provider", sa.String(length=128), nullable=False),
        sa.Column("model", sa.String(length=256), nullable=False),
        sa.Column("meter", sa.String(length=128), nullable=False),
        sa.Column("unit_cost_usd", sa.String(length=64), nullable=False),
        sa.Column("per_units", sa.BigInteger(), nullable=False),
        sa.Column("effective_from", sa.DateTime(), nullable=False),
        sa.Column("created_at", sa.DateTime(), nullable=False),
        sa.ForeignKeyConstraint(
            ["tenant_id"], ["tenants.id"], name=op.f("fk_provider_cost_overrides_tenant_id_tenants")
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_provider_cost_overrides")),
    )
    with op.batch_alter_table("provider_cost_overrides", schema=None) as batch_op:
        batch_op.create_index(
            batch_op.f("ix_provider_cost_overrides_tenant_id"), ["tenant_id"], unique=False
        )

    op.create_table(
        "credit_ledger",
        sa.Column(
            "id",
            sa.BigInteger().with_variant(sa.Integer(), "sqlite"),
            autoincrement=True,
            nullable=False,
        ),
        sa.Column("tenant_id", sa.String(length=32), nullable=False),
        sa.Column("customer_id", sa.String(length=256), nullable=False),
        sa.Column("grant_id", sa.String(length=32), nullable=False),
        sa.Column("kind", sa.String(length=16), nullable=False),
        sa.Column("amount_minor", sa.BigInteger(), nullable=False),
        sa.Column("invoice_id", sa.String(length=32), nullable=True),
        sa.Column("note", sa.String(length=500), nullable=False),
        sa.Column("created_at", sa.DateTime(), nullable=False),
        sa.ForeignKeyConstraint(
            ["grant_id"], ["credit_grants.id"], name=op.f("fk_credit_ledger_grant_id_credit_grants")
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_credit_ledger")),
    )
    with op.batch_alter_table("credit_ledger", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_credit_ledger_grant_id"), ["grant_id"], unique=False)
        batch_op.create_index(
            batch_op.f("ix_credit_ledger_tenant_id_customer_id"),
            ["tenant_id", "customer_id"],
            unique=False,
        )

    op.create_table(
        "price_versions",
        sa.Column("id", sa.String(length=32), nullable=False),
        sa.Column("book_id", sa.String(length=32), nullable=False),
        sa.Column("number", sa.Integer(), nullable=False),
        sa.Column("effective_from", sa.DateTime(), nullable=False),
        sa.Column("locked_at", sa.DateTime(), nullable=True),
        sa.Column("created_at", sa.DateTime(), nullable=False),
        sa.ForeignKeyConstraint(
            ["book_id"], ["price_books.id"], name=op.f("fk_price_versions_book_id_price_books")
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_price_versions")),
        sa.UniqueConstraint(
            "book_id", "effective_from", name=op.f("uq_price_versions_book_id_effective_from")
        ),
        sa.UniqueConstraint("book_id", "number", name=op.f("uq_price_versions_book_id_number")),
    )
    with op.batch_alter_table("price_versions", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_price_versions_book_id"), ["book_id"], unique=False)

    op.create_table(
        "price_components",
        sa.Column("id", sa.String(length=32), nullable=False),
        sa.Column("version_id", sa.String(length=32), nullable=True),
        sa.Column("override_id", sa.String(length=32), nullable=True),
        sa.Column("position", sa.Integer(), nullable=False),
        sa.Column("name", sa.String(length=200), nullable=False),
        sa.Column("meter", sa.String(length=128), nullable=True),
        sa.Column("filters", sa.JSON(), nullable=False),
        sa.Column("charge", sa.String(length=32), nullable=False),
        sa.Column("unit_price", sa.String(length=64), nullable=True),
        sa.Column("per_units", sa.BigInteger(), nullable=False),
        sa.Column("tiers", sa.JSON(), nullable=True),
        sa.Column("package_size", sa.BigInteger(), nullable=True),
        sa.Column("included_quantity", sa.String(length=64), nullable=True),
        sa.Column("amount", sa.String(length=64), nullable=True),
        sa.Column("markup", sa.String(length=64), nullable=True),
        sa.Column("priority", sa.Integer(), nullable=False),
        sa.ForeignKeyConstraint(
            ["override_id"],
            ["customer_overrides.id"],
            name=op.f("fk_price_components_override_id_customer_overrides"),
        ),
        sa.ForeignKeyConstraint(
            ["version_id"],
            ["price_versions.id"],
            name=op.f("fk_price_components_version_id_price_versions"),
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_price_components")),
    )
    with op.batch_alter_table("price_components", schema=None) as batch_op:
        batch_op.create_index(
            batch_op.f("ix_price_components_override_id"), ["override_id"], unique=False
        )
        batch_op.create_index(
            batch_op.f("ix_price_components_version_id"), ["version_id"], unique=False
        )

    with op.batch_alter_table("customers", schema=None) as batch_op:
        batch_op.add_column(sa.Column("price_book_id", sa.String(length=32), nullable=True))
        batch_op.add_column(
            sa.Column("billing_day", sa.Integer(), nullable=False, server_default="1")
        )
        batch_op.create_foreign_key(
            batch_op.f("fk_customers_price_book_id_price_books"),
            "price_books",
            ["price_book_id"],
            ["id"],
        )

    with op.batch_alter_table("tenants", schema=None) as batch_op:
        batch_op.add_column(sa.Column("webhook_url", sa.String(length=2000), nullable=True))
        batch_op.add_column(sa.Column("webhook_secret", sa.String(length=128), nullable=True))

    with op.batch_alter_table("usage_records", schema=None) as batch_op:
        batch_op.add_column(sa.Column("provider_cost_pico", sa.BigInteger(), nullable=True))


def downgrade() -> None:

    with op.batch_alter_table("usage_records", schema=None) as batch_op:
        batch_op.drop_column("provider_cost_pico")

    with op.batch_alter_table("tenants", schema=None) as batch_op:
        batch_op.drop_column("webhook_secret")
        batch_op.drop_column("webhook_url")

    with op.batch_alter_table("customers", schema=None) as batch_op:
        batch_op.drop_constraint(
            batch_op.f("fk_customers_price_book_id_price_books"), type_="foreignkey"
        )
        batch_op.drop_column("billing_day")
        batch_op.drop_column("price_book_id")

    with op.batch_alter_table("price_components", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_price_components_version_id"))
        batch_op.drop_index(batch_op.f("ix_price_components_override_id"))

    op.drop_table("price_components")
    with op.batch_alter_table("price_versions", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_price_versions_book_id"))

    op.drop_table("price_versions")
    with op.batch_alter_table("credit_ledger", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_credit_ledger_tenant_id_customer_id"))
        batch_op.drop_index(batch_op.f("ix_credit_ledger_grant_id"))

    op.drop_table("credit_ledger")
    with op.batch_alter_table("provider_cost_overrides", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_provider_cost_overrides_tenant_id"))

    op.drop_table("provider_cost_overrides")
    with op.batch_alter_table("price_books", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_price_books_tenant_id"))

    op.drop_table("price_books")
    with op.batch_alter_table("customer_overrides", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_customer_overrides_tenant_id_customer_id"))

    op.drop_table("customer_overrides")
    with op.batch_alter_table("credit_grants", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_credit_grants_tenant_id_customer_id"))

    op.drop_table("credit_grants")
    op.drop_table("budgets")
    with op.batch_alter_table("webhook_deliveries", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_webhook_deliveries_tenant_id"))

    op.drop_table("webhook_deliveries")
    op.drop_table("budget_alerts")
