"""Demo data for `agentmeter serve --demo`: a tenant, customers and a month of usage."""

from __future__ import annotations

import json
import random
import secrets
import sys
import uuid
from datetime import UTC, datetime, timedelta
from decimal import Decimal

from sqlalchemy import Engine, func, select
from sqlalchemy.orm import Session

from agentmeter.clock import utcnow
from agentmeter.settings import Settings
from agentmeter.tables import (
    Customer,
    PriceBook,
    PriceComponent,
    PriceVersion,
    ProviderCostOverride,
    UsageRow,
    to_unix_nano,
)
from agentmeter.tenants import create_tenant, find_tenant, issue_keys
from billing_api.auth import Caller, Role
from billing_api.stripe import service as stripe_sync
from billing_api.stripe.states import SyncStatus
from exporter.provider_costs import ProviderCostCatalog
from exporter.sql_sink import SqlUsageSink
from otel_processor.usage import SOURCE_CUSTOM, SOURCE_LLM, SOURCE_TOOL, UsageBatch, UsageRecord

DEMO_TENANT = "Demo Builder"
DEMO_SIGN_IN = "demo@agentmeter.localhost"
DEMO_CUSTOMERS = {"acme": "Acme Inc", "globex": "Globex Corp", "initech": "Initech"}
_MODELS = (("openai", "gpt-4o-mini"), ("openai", "gpt-4o"), ("anthropic", "claude-sonnet-4-0"))
_STEPS = ("plan", "research", "answer")


def seed_demo(engine: Engine) -> str:
    """Create the demo tenant and its usage once; print fresh keys for it every time.
    Returns the tenant id."""
    tenant_id = find_tenant(engine, DEMO_TENANT)
    keys = (
        create_tenant(engine, DEMO_TENANT) if tenant_id is None else issue_keys(engine, tenant_id)
    )
    with Session(engine) as session, session.begin():
        count = session.scalar(
            select(func.count()).select_from(UsageRow).where(UsageRow.tenant_id == keys.tenant_id)
        )
        if not count:
            for customer_id, name in DEMO_CUSTOMERS.items():
                session.add(Customer(tenant_id=keys.tenant_id, id=customer_id, name=name))
            _demo_price_book(session, keys.tenant_id)
    if not count:
        SqlUsageSink(engine, ProviderCostCatalog()).write(keys.tenant_id, _demo_usage())
    demo = {"event": "demo", "tenant_id": keys.tenant_id, "ingest_key": keys.ingest_key}
    demo["admin_key"] = keys.admin_key
    # Where the demo's invoices go when finalized: "not_connected" until an account is.
    with Session(engine) as session:
        demo_caller = Caller(tenant_id=keys.tenant_id, actor="demo", role=Role.ADMIN)
        account = stripe_sync.get_connection(session, demo_caller, None).account_id
    demo["stripe"] = account or SyncStatus.NOT_CONNECTED
    demo.update(_demo_sign_in(engine, keys.tenant_id))
    sys.stdout.write(json.dumps(demo) + "\n")
    return keys.tenant_id


def print_portal_link(engine: Engine, settings: Settings, tenant_id: str, base_url: str) -> None:
    """Print one customer portal link of the demo tenant (valid 24 hours) as a JSON line."""
    from billing_api.portal.sessions import DEFAULT_EXPIRES_IN, PortalTokens
    from billing_api.web.secrets import signing_keys

    customer_id = next(iter(DEMO_CUSTOMERS))
    caller = Caller(tenant_id=tenant_id, actor="demo", role=Role.ADMIN)
    tokens = PortalTokens(signing_keys(engine, settings))
    with Session(engine) as session, session.begin():
        issued = tokens.issue(session, caller, customer_id, DEFAULT_EXPIRES_IN, utcnow())
    link = {"event": "portal_link", "customer_id": customer_id}
    link["url"] = f"{base_url}/portal/open?token={issued.token}"
    sys.stdout.write(json.dumps(link) + "\n")
    sys.stdout.flush()


def _demo_sign_in(engine: Engine, tenant_id: str) -> dict[str, str]:
    """A dashboard admin for the demo tenant, with a fresh password on every start."""
    from billing_api.dashboard.accounts import create_user, set_password

    password = secrets.token_urlsafe(12)
    with Session(engine) as session, session.begin():
        if not set_password(session, tenant_id, DEMO_SIGN_IN, password):
            create_user(session, tenant_id, DEMO_SIGN_IN, password, "admin")
    return {"dashboard_email": DEMO_SIGN_IN, "dashboard_password": password}


def _demo_price_book(session: Session, tenant_id: str) -> None:
    """Pay-as-you-go tokens, a cheaper rate for mini models, searches with an allowance,
    and a platform fee: enough to show estimates, invoices and margins."""
    book_id = f"demo{tenant_id[:28]}"
    session.add(
        PriceBook(id=book_id, tenant_id=tenant_id, name="Standard", currency="USD", is_default=True)
    )
    version_id = f"{book_id[:30]}v1"
    start = datetime(2026, 1, 1, tzinfo=UTC)
    session.add(PriceVersion(id=version_id, book_id=book_id, number=1, effective_from=start))
    session.flush()
    components: list[tuple[str, str | None, dict[str, str], str, dict[str, str | int]]] = [
        ("input", "input_tokens", {}, "per_unit", {"unit_price": "5", "per_units": 1_000_000}),
        ("mini input", "input_tokens", {"model": "*mini*"}, "per_unit",
         {"unit_price": "0.40", "per_units": 1_000_000}),
        ("cached input", "cache_read_tokens", {}, "per_unit",
         {"unit_price": "1", "per_units": 1_000_000}),
        ("output", "output_tokens", {}, "per_unit", {"unit_price": "20", "per_units": 1_000_000}),
        ("searches", "web_searches", {}, "allowance",
         {"included_quantity": "50", "unit_price": "0.02"}),
        ("platform", None, {}, "flat_fee", {"amount": "29"}),
    ]  # fmt: skip
    for position, (name, meter, filters, charge, fields) in enumerate(components):
        session.add(
            PriceComponent(
                id=uuid.uuid4().hex,
                version_id=version_id,
                position=position,
                name=name,
                meter=meter,
                filters=filters,
                charge=charge,
                per_units=int(fields.get("per_units", 1)),
                **{k: Decimal(str(v)) for k, v in fields.items() if k != "per_units"},
            )
        )
    # What the search API costs the builder, so margins show on searches too.
    session.add(
        ProviderCostOverride(
            id=uuid.uuid4().hex,
            tenant_id=tenant_id,
            provider="*",
            model="*",
            meter="web_searches",
            unit_cost_usd=Decimal("0.005"),
            per_units=1,
            effective_from=start,
        )
    )


def _demo_usage() -> UsageBatch:
    rng = random.Random(7)
    now = utcnow()
    records: list[UsageRecord] = []
    for n in range(1, 601):
        provider, model = rng.choice(_MODELS)
        step = rng.choice(_STEPS)
        call = UsageRecord(
            trace_id=f"{n:032x}",
            span_id=f"{n:016x}",
            meter="input_tokens",
            quantity=rng.randrange(200, 20_000),
            customer_id=rng.choice([*DEMO_CUSTOMERS, "unregistered-co"]),
            time_unix_nano=to_unix_nano(now - timedelta(minutes=rng.randrange(60 * 24 * 30))),
            provider=provider,
            model=model,
            operation="chat",
            agent_name="support-agent",
            step=step,
            service_name="support-agent",
            source=SOURCE_LLM,
        )
        assert isinstance(call.quantity, int)
        records += [
            call,
            call._replace(meter="cache_read_tokens", quantity=call.quantity // 3),
            call._replace(meter="output_tokens", quantity=rng.randrange(50, 2_000)),
        ]
        if step == "research":
            tool = call._replace(
                span_id=f"{n:015x}f",
                meter="tool_calls",
                quantity=1,
                provider="",
                model="",
                operation="execute_tool",
                tool="web_search",
                source=SOURCE_TOOL,
            )
            records += [tool, tool._replace(meter="web_searches", source=SOURCE_CUSTOM)]
    return UsageBatch(records=records)
