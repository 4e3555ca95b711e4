"""rated months: a cache of each customer's rated calendar month, kept exact by triggers

The dashboard's tenant-wide figures (issue 13) read each customer's rated month from
`rated_customer_months` instead of rating 10,000 customers per view. What makes a cached
figure stale is recorded by triggers in the transaction that changes it, whoever the
writer is: `rating_changes` gets (tenant, customer, day) for every usage record
inserted, updated (both its old and new customer and day) or deleted; (tenant, customer,
every day) for a customer registered, removed or moved to another price book; and
(tenant, every customer, from a day) for any change to price books (every day), versions,
components or customer overrides (from the day they take effect: the months before are
priced as they were). `billing_api.rating.cache` recomputes what those mark before it answers.

PostgreSQL: statement-level triggers on the partitioned usage table read transition tables,
so a batch of records costs one INSERT … SELECT DISTINCT; a change row is per transaction
(`writer` = its xid), so concurrent writers never wait on each other's rows. SQLite (one
writer at a time): row-level triggers upsert one row per (tenant, customer, day), setting
it unclaimed again if a reader had claimed it (see `billing_api.rating.cache`).

Revision ID: 0014
Revises: 0013
Create Date: 2026-11-30 13:00:00.000000
"""

import sqlalchemy as sa
from alembic import op

revision = "0014"
down_revision = "0013"
branch_labels = None
depends_on = None

_CHANGES = "rating_changes (tenant_id, customer_id, day, writer, claimed)"
_KEY = "(tenant_id, customer_id, day, writer)"

# The UTC day of a usage record's end time, days since 1970 (integer division on both).
_NANOS_PER_DAY = 86_400 * 10**9
# PostgreSQL records the first day of that day's month: a bulk load (one COPY of a year)
# marks customers × months, not customers × days. SQLite, whose triggers run per row,
# keeps the day (integer division; a month costs a strftime per row).
_PG_MONTH_DAY = (
    "(extract(epoch FROM date_trunc('month', to_timestamp(day * 86400) AT TIME ZONE 'UTC'))"
    " / 86400)::integer"
)


def _pg_day(timestamp: str) -> str:
    """The day number (since 1970) of a stored UTC timestamp, in PostgreSQL."""
    return f"floor(extract(epoch FROM {timestamp}) / 86400)::integer"


_PG_FUNCTIONS = f"""
CREATE FUNCTION rating_changes_of_usage() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO {_CHANGES}
    SELECT DISTINCT tenant_id, customer_id, {_PG_MONTH_DAY}, txid_current(), false
    FROM (SELECT DISTINCT tenant_id, customer_id, time_unix_nano / {_NANOS_PER_DAY} AS day
          FROM changed_rows) AS changed
    ON CONFLICT {_KEY} DO NOTHING;
    RETURN NULL;
END $$;

CREATE FUNCTION rating_changes_of_usage_update() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO {_CHANGES}
    SELECT DISTINCT tenant_id, customer_id, {_PG_MONTH_DAY}, txid_current(), false
    FROM (SELECT tenant_id, customer_id, time_unix_nano / {_NANOS_PER_DAY} AS day FROM old_rows
          UNION SELECT tenant_id, customer_id, time_unix_nano / {_NANOS_PER_DAY} FROM new_rows)
          AS changed
    ON CONFLICT {_KEY} DO NOTHING;
    RETURN NULL;
END $$;

CREATE FUNCTION rating_changes_of_terms() RETURNS trigger LANGUAGE plpgsql AS $$
DECLARE
    changed record;
    tenant text;
    customer text := NULL;
    since integer := NULL;  -- the first day whose terms changed; NULL: every day
BEGIN
    IF TG_OP = 'DELETE' THEN changed := OLD; ELSE changed := NEW; END IF;
    IF TG_TABLE_NAME = 'customers' THEN
        tenant := changed.tenant_id;
        customer := changed.id;
    ELSIF TG_TABLE_NAME = 'price_books' THEN
        tenant := changed.tenant_id;
    ELSIF TG_TABLE_NAME = 'customer_overrides' THEN
        tenant := changed.tenant_id;
        since := {_pg_day("changed.effective_from")};
    ELSIF TG_TABLE_NAME = 'price_versions' THEN
        SELECT b.tenant_id INTO tenant FROM price_books b WHERE b.id = changed.book_id;
        since := {_pg_day("changed.effective_from")};
    ELSE
        SELECT b.tenant_id, {_pg_day("v.effective_from")} INTO tenant, since
        FROM price_versions v JOIN price_books b ON b.id = v.book_id
        WHERE v.id = changed.version_id;
        IF tenant IS NULL THEN
            SELECT o.tenant_id, {_pg_day("o.effective_from")} INTO tenant, since
            FROM customer_overrides o WHERE o.id = changed.override_id;
        END IF;
    END IF;
    IF TG_OP = 'UPDATE' AND TG_TABLE_NAME IN ('price_versions', 'customer_overrides') THEN
        since := least(since, {_pg_day("OLD.effective_from")});
    END IF;
    -- A row deleted with its owner (a version's components) is covered by the owner's.
    IF tenant IS NOT NULL THEN
        INSERT INTO {_CHANGES} VALUES (tenant, customer, since, txid_current(), false)
        ON CONFLICT {_KEY} DO NOTHING;
    END IF;
    RETURN NULL;
END $$;
"""

_PG_TRIGGERS = """
CREATE TRIGGER rating_changes_insert AFTER INSERT ON usage_records
    REFERENCING NEW TABLE AS changed_rows
    FOR EACH STATEMENT EXECUTE FUNCTION rating_changes_of_usage();
CREATE TRIGGER rating_changes_delete AFTER DELETE ON usage_records
    REFERENCING OLD TABLE AS changed_rows
    FOR EACH STATEMENT EXECUTE FUNCTION rating_changes_of_usage();
CREATE TRIGGER rating_changes_update AFTER UPDATE ON usage_records
    REFERENCING OLD TABLE AS old_rows NEW TABLE AS new_rows
    FOR EACH STATEMENT EXECUTE FUNCTION rating_changes_of_usage_update();
CREATE TRIGGER rating_changes_customer AFTER INSERT OR DELETE ON customers
    FOR EACH ROW EXECUTE FUNCTION rating_changes_of_terms();
CREATE TRIGGER rating_changes_customer_book AFTER UPDATE OF price_book_id ON customers
    FOR EACH ROW WHEN (OLD.price_book_id IS DISTINCT FROM NEW.price_book_id)
    EXECUTE FUNCTION rating_changes_of_terms();
"""

_TERMS = ("price_books", "price_versions", "price_components", "customer_overrides")
_USAGE_TRIGGERS = ("rating_changes_insert", "rating_changes_delete", "rating_changes_update")


def _sqlite_upsert(tenant: str, customer: str, day: str, when: str = "true") -> str:
    return (
        f"INSERT INTO {_CHANGES} SELECT {tenant}, {customer}, {day}, 0, false WHERE {when} "
        f"ON CONFLICT {_KEY} DO UPDATE SET claimed = false WHERE claimed;"
    )


def _sqlite_day(row: str) -> str:
    return f"{row}.time_unix_nano / {_NANOS_PER_DAY}"


def _sqlite_tenant_of(table: str, row: str) -> str:
    """The tenant whose prices a row of `table` belongs to, as a scalar expression."""
    if table in ("price_books", "customer_overrides"):
        return f"{row}.tenant_id"
    if table == "price_versions":
        return f"(SELECT tenant_id FROM price_books WHERE id = {row}.book_id)"
    return (
        "coalesce((SELECT b.tenant_id FROM price_versions v JOIN price_books b "
        f"ON b.id = v.book_id WHERE v.id = {row}.version_id), (SELECT tenant_id FROM "
        f"customer_overrides WHERE id = {row}.override_id))"
    )


def _sqlite_day_of(timestamp: str) -> str:
    return f"CAST(strftime('%s', {timestamp}) AS INTEGER) / 86400"


def _sqlite_since(table: str, event: str) -> str:
    """The first day whose terms a change to a row of `table` changed (NULL: every day)."""
    row = "OLD" if event == "DELETE" else "NEW"
    if table == "price_books":
        return "NULL"
    if table == "price_components":
        return (
            f"coalesce((SELECT {_sqlite_day_of('effective_from')} FROM price_versions "
            f"WHERE id = {row}.version_id), (SELECT {_sqlite_day_of('effective_from')} "
            f"FROM customer_overrides WHERE id = {row}.override_id))"
        )
    since = _sqlite_day_of(f"{row}.effective_from")
    if event == "UPDATE":
        return f"min({since}, {_sqlite_day_of('OLD.effective_from')})"
    return since


def _sqlite_triggers() -> dict[str, str]:
    """Trigger name → its CREATE statement."""
    moved = (
        f"OLD.customer_id IS NOT NEW.customer_id OR {_sqlite_day('OLD')} <> {_sqlite_day('NEW')}"
    )
    usage = {
        "INSERT": _sqlite_upsert("NEW.tenant_id", "NEW.customer_id", _sqlite_day("NEW")),
        "DELETE": _sqlite_upsert("OLD.tenant_id", "OLD.customer_id", _sqlite_day("OLD")),
        # The old customer and day too, when they are not the new ones.
        "UPDATE": _sqlite_upsert("NEW.tenant_id", "NEW.customer_id", _sqlite_day("NEW"))
        + _sqlite_upsert("OLD.tenant_id", "OLD.customer_id", _sqlite_day("OLD"), moved),
    }
    triggers = {
        f"rating_changes_{event.lower()}": (
            f"CREATE TRIGGER rating_changes_{event.lower()} AFTER {event} ON usage_records "
            f"BEGIN {body} END"
        )
        for event, body in usage.items()
    }
    for event, row in (("INSERT", "NEW"), ("DELETE", "OLD")):
        name = f"rating_changes_customer_{event.lower()}"
        body = _sqlite_upsert(f"{row}.tenant_id", f"{row}.id", "NULL")
        triggers[name] = f"CREATE TRIGGER {name} AFTER {event} ON customers BEGIN {body} END"
    triggers["rating_changes_customer_book"] = (
        "CREATE TRIGGER rating_changes_customer_book AFTER UPDATE OF price_book_id ON customers "
        "WHEN OLD.price_book_id IS NOT NEW.price_book_id "
        f"BEGIN {_sqlite_upsert('NEW.tenant_id', 'NEW.id', 'NULL')} END"
    )
    for table in _TERMS:
        for event in ("INSERT", "UPDATE", "DELETE"):
            row = "OLD" if event == "DELETE" else "NEW"
            name = f"rating_changes_{table}_{event.lower()}"
            # Every customer (NULL never conflicts, so no upsert); skipped when the owner
            # is already gone, whose own trigger covers it.
            body = (
                f"INSERT INTO {_CHANGES} SELECT tenant, NULL, since, 0, false FROM "
                f"(SELECT {_sqlite_tenant_of(table, row)} AS tenant, "
                f"{_sqlite_since(table, event)} AS since) WHERE tenant IS NOT NULL;"
            )
            triggers[name] = f"CREATE TRIGGER {name} AFTER {event} ON {table} BEGIN {body} END"
    return triggers


def upgrade() -> None:
    op.create_table(
        "rating_changes",
        sa.Column(
            "id",
            sa.BigInteger().with_variant(sa.Integer(), "sqlite"),
            autoincrement=True,
            nullable=False,
        ),
        sa.Column("tenant_id", sa.String(length=32), nullable=False),
        sa.Column("customer_id", sa.String(length=256), nullable=True),
        sa.Column("day", sa.Integer(), nullable=True),
        sa.Column("writer", sa.BigInteger(), server_default="0", nullable=False),
        sa.Column("claimed", sa.Boolean(), server_default=sa.text("false"), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_rating_changes")),
        sa.UniqueConstraint(
            "tenant_id",
            "customer_id",
            "day",
            "writer",
            name=op.f("uq_rating_changes_tenant_id_customer_id_day_writer"),
        ),
    )
    op.create_table(
        "rating_cache_generations",
        sa.Column("tenant_id", sa.String(length=32), nullable=False),
        sa.Column("generation", sa.BigInteger(), nullable=False),
        sa.Column("computing_until", sa.DateTime(), nullable=True),
        sa.PrimaryKeyConstraint("tenant_id", name=op.f("pk_rating_cache_generations")),
    )
    op.create_table(
        "rated_months",
        sa.Column("tenant_id", sa.String(length=32), nullable=False),
        sa.Column("period", sa.String(length=7), nullable=False),
        sa.PrimaryKeyConstraint("tenant_id", "period", name=op.f("pk_rated_months")),
    )
    op.create_table(
        "rated_customer_months",
        sa.Column("tenant_id", sa.String(length=32), nullable=False),
        sa.Column("period", sa.String(length=7), nullable=False),
        sa.Column("customer_id", sa.String(length=256), nullable=False),
        sa.Column("currency", sa.String(length=3), nullable=False),
        sa.Column("subtotal_minor", sa.BigInteger(), nullable=False),
        sa.Column("provider_cost_minor", sa.BigInteger(), nullable=True),
        sa.PrimaryKeyConstraint(
            "tenant_id", "period", "customer_id", name=op.f("pk_rated_customer_months")
        ),
    )
    op.create_table(
        "rated_month_totals",
        sa.Column("tenant_id", sa.String(length=32), nullable=False),
        sa.Column("period", sa.String(length=7), nullable=False),
        sa.Column("currency", sa.String(length=3), nullable=False),
        sa.Column("revenue_minor", sa.BigInteger(), nullable=False),
        sa.Column("provider_cost_minor", sa.BigInteger(), nullable=False),
        sa.Column("margin_minor", sa.BigInteger(), nullable=False),
        sa.PrimaryKeyConstraint(
            "tenant_id", "period", "currency", name=op.f("pk_rated_month_totals")
        ),
    )
    op.create_table(
        "rated_customer_month_usage",
        sa.Column("tenant_id", sa.String(length=32), nullable=False),
        sa.Column("period", sa.String(length=7), nullable=False),
        sa.Column("customer_id", sa.String(length=256), nullable=False),
        sa.Column("meter", sa.String(length=128), nullable=False),
        sa.Column("quantity_micros", sa.BigInteger(), nullable=False),
        sa.PrimaryKeyConstraint(
            "tenant_id",
            "period",
            "customer_id",
            "meter",
            name=op.f("pk_rated_customer_month_usage"),
        ),
    )
    if op.get_bind().dialect.name == "postgresql":
        op.execute(_PG_FUNCTIONS)
        op.execute(_PG_TRIGGERS)
        for table in _TERMS:
            op.execute(
                f"CREATE TRIGGER rating_changes_terms AFTER INSERT OR UPDATE OR DELETE ON {table} "
                "FOR EACH ROW EXECUTE FUNCTION rating_changes_of_terms()"
            )
        return
    for statement in _sqlite_triggers().values():
        op.execute(statement)


def downgrade() -> None:
    if op.get_bind().dialect.name == "postgresql":
        for trigger in _USAGE_TRIGGERS:
            op.execute(f"DROP TRIGGER {trigger} ON usage_records")
        op.execute("DROP TRIGGER rating_changes_customer ON customers")
        op.execute("DROP TRIGGER rating_changes_customer_book ON customers")
        for table in _TERMS:
            op.execute(f"DROP TRIGGER rating_changes_terms ON {table}")
        for function in ("usage", "usage_update", "terms"):
            op.execute(f"DROP FUNCTION rating_changes_of_{function}()")
    else:
        for name in _sqlite_triggers():
            op.execute(f"DROP TRIGGER {name}")
    for table in (
        "rated_customer_month_usage",
        "rated_month_totals",
        "rated_customer_months",
        "rated_months",
        "rating_cache_generations",
    ):
        op.drop_table(table)
    op.drop_table("rating_changes")
