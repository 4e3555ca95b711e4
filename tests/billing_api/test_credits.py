"""Prepaid credit: the application rule (pure), the ledger on each backend, concurrent
draws, and the credits API against a running `agentmeter serve`."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import Engine, func, select
from sqlalchemy.orm import Session

from agentmeter.tables import CreditGrant, CreditLedgerEntry, Customer
from agentmeter.tenants import create_tenant
from billing_api.credits import service
from billing_api.credits.schemas import CreditGrantCreate
from billing_api.credits.service import CreditDraw, GrantBalance, plan_credit_application
from billing_api.errors import ConflictError, NotFoundError, UnprocessableError
from tests.billing_api.callers import staff
from tests.billing_api.inprocess import api_client

PERIOD_START = datetime(2026, 11, 1, tzinfo=UTC)
PERIOD_END = datetime(2026, 12, 1, tzinfo=UTC)


def grant(
    grant_id: str,
    remaining: int,
    *,
    priority: int = 0,
    currency: str = "USD",
    granted_at: datetime = datetime(2026, 10, 1, tzinfo=UTC),
    expires_at: datetime | None = None,
    voided_at: datetime | None = None,
) -> GrantBalance:
    return GrantBalance(
        id=grant_id,
        currency=currency,
        priority=priority,
        granted_at=granted_at,
        expires_at=expires_at,
        voided_at=voided_at,
        remaining_minor=remaining,
    )


def day(n: int, month: int = 11) -> datetime:
    return datetime(2026, month, n, tzinfo=UTC)


# --- The application rule --------------------------------------------------------------


@pytest.mark.parametrize(
    ("total", "grants", "expected"),
    [
        pytest.param(500, [grant("a", 1000)], [("a", 500)], id="one grant covers all"),
        pytest.param(1500, [grant("a", 1000)], [("a", 1000)], id="rest stays on invoice"),
        pytest.param(0, [grant("a", 1000)], [], id="nothing to pay"),
        pytest.param(-100, [grant("a", 1000)], [], id="negative total draws nothing"),
        pytest.param(
            700,
            [grant("low", 500, priority=5), grant("high", 500, priority=1)],
            [("high", 500), ("low", 200)],
            id="lower priority number first",
        ),
        pytest.param(
            700,
            [grant("neg", 500, priority=-1), grant("zero", 500)],
            [("neg", 500), ("zero", 200)],
            id="negative priority before zero",
        ),
        pytest.param(
            700,
            [
                grant("never", 500),
                grant("late", 500, expires_at=day(1, 12) + timedelta(days=60)),
                grant("soon", 500, expires_at=day(1, 12) + timedelta(days=1)),
            ],
            [("soon", 500), ("late", 200)],
            id="same priority: soonest expiry first, no expiry last",
        ),
        pytest.param(
            700,
            [grant("never", 500), grant("expiring", 500, priority=2, expires_at=day(2, 12))],
            [("never", 500), ("expiring", 200)],
            id="priority outranks expiry",
        ),
        pytest.param(
            700,
            [
                grant("b-new", 500, granted_at=day(10, 10)),
                grant("a-old", 500, granted_at=day(5, 10)),
            ],
            [("a-old", 500), ("b-new", 200)],
            id="same priority and expiry: oldest grant first",
        ),
        pytest.param(
            700,
            [grant("b", 500), grant("a", 500)],
            [("a", 500), ("b", 200)],
            id="all equal: by id",
        ),
        pytest.param(
            700,
            [
                grant("mid-period", 500, expires_at=day(15)),
                grant("at-end", 500, expires_at=PERIOD_END),
                grant("after-end", 500, expires_at=PERIOD_END + timedelta(seconds=1)),
            ],
            [("after-end", 500)],
            id="expired mid-period or exactly at the invoice date: not usable",
        ),
        pytest.param(
            300,
            [grant("eur", 500, currency="EUR"), grant("usd", 500)],
            [("usd", 300)],
            id="only the invoice's currency",
        ),
        pytest.param(
            300,
            [grant("void", 500, voided_at=day(2)), grant("ok", 500, priority=9)],
            [("ok", 300)],
            id="voided grants are skipped",
        ),
        pytest.param(
            300,
            [
                grant("future", 500, granted_at=PERIOD_END + timedelta(days=1)),
                grant("ok", 500, priority=9),
            ],
            [("ok", 300)],
            id="granted after the invoice date: not usable",
        ),
        pytest.param(
            300,
            [grant("granted-at-end", 500, granted_at=PERIOD_END)],
            [("granted-at-end", 300)],
            id="granted exactly at the invoice date: usable",
        ),
        pytest.param(
            300,
            [grant("empty", 0), grant("ok", 500, priority=9)],
            [("ok", 300)],
            id="depleted grants are skipped",
        ),
    ],
)
def test_plan_credit_application(
    total: int, grants: list[GrantBalance], expected: list[tuple[str, int]]
) -> None:
    plan = plan_credit_application(total, grants, PERIOD_END, currency="USD")
    assert plan == [CreditDraw(g, a) for g, a in expected]
    assert sum(d.amount_minor for d in plan) <= max(total, 0)


# --- The ledger on each backend ---------------------------------------------------------


@pytest.fixture
def customer(engine: Engine) -> tuple[str, str]:
    tenant_id = create_tenant(engine, "credits").tenant_id
    with Session(engine) as session, session.begin():
        session.add(Customer(tenant_id=tenant_id, id="acme", name="Acme"))
    return tenant_id, "acme"


def give(
    engine: Engine,
    tenant_id: str,
    amount: str,
    now: datetime,
    **fields: Any,
) -> str:
    body = CreditGrantCreate.model_validate({"amount": amount, "currency": "USD", **fields})
    with Session(engine) as session, session.begin():
        created, _ = service.grant_credits(
            session,
            staff(tenant_id),
            "acme",
            currency=body.currency,
            amount_minor=body.amount_minor,
            now=now,
            priority=body.priority,
            expires_at=body.expires_at,
            description=body.description,
        )
        return created.id


def balance(engine: Engine, tenant_id: str, at: datetime) -> dict[str, int]:
    with Session(engine) as session:
        return service.balance(session, staff(tenant_id), "acme", at)


def kinds(engine: Engine, tenant_id: str) -> list[tuple[str, int, str | None]]:
    with Session(engine) as session:
        return [
            (e.kind, e.amount_minor, e.invoice_id)
            for e, _ in service.ledger(session, staff(tenant_id), "acme")
        ]


class TestLedger:
    def test_grant_apply_reverse(self, engine: Engine, customer: tuple[str, str]) -> None:
        tenant_id, _ = customer
        now = datetime.now(UTC)
        usd = give(engine, tenant_id, "100.00", now)
        give(engine, tenant_id, "50", now, currency="EUR")
        assert balance(engine, tenant_id, now) == {"EUR": 5000, "USD": 10000}

        with Session(engine) as session, session.begin():
            preview = service.preview_credits(session, tenant_id, "acme", "usd", 3000, now)
            assert preview == [CreditDraw(usd, 3000)]
            applied = service.apply_credits(session, tenant_id, "acme", "USD", 3000, now, "inv1")
        assert applied == preview
        assert balance(engine, tenant_id, datetime.now(UTC)) == {"EUR": 5000, "USD": 7000}

        # Applying to the same invoice again draws nothing more.
        with Session(engine) as session, session.begin():
            again = service.apply_credits(session, tenant_id, "acme", "USD", 9000, now, "inv1")
        assert again == applied
        assert balance(engine, tenant_id, datetime.now(UTC))["USD"] == 7000

        for _ in range(2):  # idempotent
            with Session(engine) as session, session.begin():
                service.reverse_credits(session, tenant_id, "inv1")
        assert balance(engine, tenant_id, datetime.now(UTC))["USD"] == 10000
        assert kinds(engine, tenant_id) == [
            ("grant", 10000, None),
            ("grant", 5000, None),
            ("draw", -3000, "inv1"),
            ("reversal", 3000, "inv1"),
        ]

    def test_draws_across_grants_in_order(self, engine: Engine, customer: tuple[str, str]) -> None:
        tenant_id, _ = customer
        now = datetime.now(UTC)
        later = give(engine, tenant_id, "10", now, priority=1)
        first = give(engine, tenant_id, "10", now, expires_at=now + timedelta(days=3))
        with Session(engine) as session, session.begin():
            drawn = service.apply_credits(session, tenant_id, "acme", "USD", 1500, now, "inv1")
        assert drawn == [CreditDraw(first, 1000), CreditDraw(later, 500)]
        with Session(engine) as session:
            remaining = dict(
                (g.id, r) for g, r in service.list_grants(session, staff(tenant_id), "acme")
            )
        assert remaining == {first: 0, later: 500}

    def test_void(self, engine: Engine, customer: tuple[str, str]) -> None:
        tenant_id, _ = customer
        now = datetime.now(UTC)
        grant_id = give(engine, tenant_id, "20", now)
        with Session(engine) as session, session.begin():
            service.apply_credits(session, tenant_id, "acme", "USD", 500, now, "inv1")
        with Session(engine) as session, session.begin():
            voided, remaining = service.void_grant(
                session, staff(tenant_id), "acme", grant_id, "refunded", now
            )
            assert voided.voided_at is not None and remaining == 0
        assert balance(engine, tenant_id, datetime.now(UTC)) == {"USD": 0}
        assert kinds(engine, tenant_id)[-1] == ("void", -1500, None)
        with Session(engine) as session, session.begin(), pytest.raises(ConflictError):
            service.void_grant(session, staff(tenant_id), "acme", grant_id, "again", now)
        with Session(engine) as session, session.begin(), pytest.raises(NotFoundError):
            service.void_grant(session, staff(tenant_id), "acme", "nope", "x", now)
        # The voided invoice's credit goes back to the grant, and leaves with the void.
        with Session(engine) as session, session.begin():
            service.reverse_credits(session, tenant_id, "inv1")
        assert kinds(engine, tenant_id)[-2:] == [("reversal", 500, "inv1"), ("void", -500, "inv1")]
        assert balance(engine, tenant_id, datetime.now(UTC)) == {"USD": 0}

    def test_expire_is_recorded_once(self, engine: Engine, customer: tuple[str, str]) -> None:
        tenant_id, _ = customer
        now = datetime.now(UTC)
        expires = now + timedelta(hours=1)
        grant_id = give(engine, tenant_id, "30", now, expires_at=expires)
        give(engine, tenant_id, "5", now)
        with Session(engine) as session, session.begin():
            service.apply_credits(session, tenant_id, "acme", "USD", 1000, now, "inv1")

        # Before expiry nothing happens; the balance at a later instant already leaves it out.
        with Session(engine) as session, session.begin():
            assert service.expire_credits(session, tenant_id, now) == []
        assert balance(engine, tenant_id, now + timedelta(minutes=1)) == {"USD": 2500}
        assert balance(engine, tenant_id, expires) == {"USD": 500}

        after = expires + timedelta(seconds=1)
        assert service.expire_all_credits(engine, after) == 1
        for _ in range(2):
            with Session(engine) as session, session.begin():
                assert service.expire_credits(session, tenant_id, after) == []
        assert service.expire_all_credits(engine, after) == 0
        expired = [k for k in kinds(engine, tenant_id) if k[0] == "expire"]
        assert expired == [("expire", -2000, None)]
        assert balance(engine, tenant_id, after) == {"USD": 500}

        # An expired grant cannot pay; a reversal onto it expires again at once.
        with Session(engine) as session, session.begin():
            assert service.preview_credits(session, tenant_id, "acme", "USD", 9999, after) == [
                CreditDraw(
                    next(
                        g.id
                        for g, _ in service.list_grants(session, staff(tenant_id), "acme")
                        if g.id != grant_id
                    ),
                    500,
                )
            ]
            service.reverse_credits(session, tenant_id, "inv1", now=after)
        assert kinds(engine, tenant_id)[-2:] == [
            ("reversal", 1000, "inv1"),
            ("expire", -1000, "inv1"),
        ]
        with Session(engine) as session:
            total = session.scalar(
                select(func.sum(CreditLedgerEntry.amount_minor)).where(
                    CreditLedgerEntry.grant_id == grant_id
                )
            )
        assert total == 0

    def test_validation(self, engine: Engine, customer: tuple[str, str]) -> None:
        tenant_id, _ = customer
        now = datetime.now(UTC)
        with pytest.raises(UnprocessableError):
            give(engine, tenant_id, "1", now, expires_at=now - timedelta(seconds=1))
        with pytest.raises(NotFoundError), Session(engine) as session:
            service.balance(session, staff(tenant_id), "nobody", now)


@pytest.mark.parametrize("threads", [8])
def test_concurrent_apply_never_overdraws(
    engine: Engine, customer: tuple[str, str], threads: int
) -> None:
    """Each thread finalizes its own invoice of 30.00 against 100.00 of credit at once."""
    tenant_id, _ = customer
    now = datetime.now(UTC)
    give(engine, tenant_id, "60", now)
    give(engine, tenant_id, "40", now, priority=1)
    barrier = threading.Barrier(threads)
    drawn: dict[str, int] = {}
    errors: list[BaseException] = []

    def finalize(invoice_id: str) -> None:
        try:
            with Session(engine) as session, session.begin():
                barrier.wait(timeout=30)
                plan = service.apply_credits(
                    session, tenant_id, "acme", "USD", 3000, now, invoice_id
                )
                drawn[invoice_id] = sum(d.amount_minor for d in plan)
        except BaseException as error:
            errors.append(error)

    workers = [threading.Thread(target=finalize, args=(f"inv{i}",)) for i in range(threads)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join(timeout=60)
    assert not errors
    assert sum(drawn.values()) == 10000
    assert sorted(drawn.values(), reverse=True)[:4] == [3000, 3000, 3000, 1000]
    with Session(engine) as session:
        for credit_grant in session.scalars(select(CreditGrant)):
            left = session.scalar(
                select(func.sum(CreditLedgerEntry.amount_minor)).where(
                    CreditLedgerEntry.grant_id == credit_grant.id
                )
            )
            assert left == 0
    assert balance(engine, tenant_id, datetime.now(UTC)) == {"USD": 0}


# --- The API ----------------------------------------------------------------------------


@pytest.fixture
def api(engine: Engine) -> Iterator[TestClient]:
    """The API in-process (what is tested is the API's answers, not the server's)."""
    with api_client(engine, create_tenant(engine, "credits").admin_key) as client:
        client.post("/api/v1/customers", json={"id": "acme", "name": "Acme"}).raise_for_status()
        yield client


def ok(response: Any, status: int = 200) -> Any:
    assert response.status_code == status, response.text
    return response.json()


def test_credits_api(api: TestClient) -> None:
    expires = (datetime.now(UTC) + timedelta(days=30)).isoformat()
    pack = ok(
        api.post(
            "/api/v1/customers/acme/credits",
            json={
                "amount": "100.50",
                "currency": "usd",
                "priority": 1,
                "expires_at": expires,
                "description": "starter pack",
            },
        ),
        201,
    )
    assert pack["amount"] == "100.50" and pack["amount_minor"] == 10050
    assert pack["remaining_minor"] == 10050 and pack["currency"] == "USD"
    assert pack["status"] == "active" and pack["priority"] == 1
    yen = ok(
        api.post("/api/v1/customers/acme/credits", json={"amount": "500", "currency": "JPY"}), 201
    )
    assert yen["amount_minor"] == 500

    grants = ok(api.get("/api/v1/customers/acme/credits"))
    assert [g["id"] for g in grants] == [pack["id"], yen["id"]]

    balance = ok(api.get("/api/v1/customers/acme/credits/balance"))
    assert {b["currency"]: (b["balance"], b["balance_minor"]) for b in balance["balances"]} == {
        "JPY": ("500", 500),
        "USD": ("100.50", 10050),
    }
    # At a time after the pack expires, it no longer counts.
    later = (datetime.now(UTC) + timedelta(days=31)).isoformat()
    later_balance = ok(api.get("/api/v1/customers/acme/credits/balance", params={"at": later}))
    assert {b["currency"]: b["balance_minor"] for b in later_balance["balances"]} == {
        "JPY": 500,
        "USD": 0,
    }

    voided = ok(
        api.post(f"/api/v1/customers/acme/credits/{pack['id']}/void", json={"reason": "refund"})
    )
    assert voided["status"] == "voided" and voided["remaining_minor"] == 0
    again = api.post(f"/api/v1/customers/acme/credits/{pack['id']}/void", json={"reason": "x"})
    assert again.status_code == 409 and again.json()["error"]["code"] == "conflict"

    ledger = ok(api.get("/api/v1/customers/acme/credits/ledger"))
    assert [(e["kind"], e["amount"], e["currency"]) for e in ledger] == [
        ("grant", "100.50", "USD"),
        ("grant", "500", "JPY"),
        ("void", "-100.50", "USD"),
    ]
    assert ledger[-1]["note"] == "refund"
    only = ok(api.get("/api/v1/customers/acme/credits/ledger", params={"grant_id": yen["id"]}))
    assert [e["kind"] for e in only] == ["grant"]


INVALID_GRANTS: list[tuple[str, dict[str, Any]]] = [
    ("negative", {"amount": "-5", "currency": "USD"}),
    ("zero", {"amount": "0", "currency": "USD"}),
    ("zero with places", {"amount": "0.00", "currency": "USD"}),
    ("not a number", {"amount": "abc", "currency": "USD"}),
    ("below the minor unit", {"amount": "1.001", "currency": "USD"}),
    ("fraction of a yen", {"amount": "1.5", "currency": "JPY"}),
    ("unknown currency", {"amount": "10", "currency": "USX"}),
    ("no currency", {"amount": "10"}),
    ("unknown field", {"amount": "10", "currency": "USD", "bogus": 1}),
    ("already expired", {"amount": "10", "currency": "USD", "expires_at": "2001-01-01T00:00:00Z"}),
]


def test_credits_api_rejects(api: TestClient) -> None:
    for case, body in INVALID_GRANTS:
        response = api.post("/api/v1/customers/acme/credits", json=body)
        assert response.status_code == 422, (case, response.text)
        assert response.json()["error"]["code"] == "validation_error", case
    assert ok(api.get("/api/v1/customers/acme/credits")) == []


def test_credits_api_unknown_customer_and_grant(api: TestClient) -> None:
    for method, path, body in [
        ("POST", "/api/v1/customers/ghost/credits", {"amount": "1", "currency": "USD"}),
        ("GET", "/api/v1/customers/ghost/credits", None),
        ("GET", "/api/v1/customers/ghost/credits/balance", None),
        ("GET", "/api/v1/customers/ghost/credits/ledger", None),
        ("POST", "/api/v1/customers/acme/credits/nope/void", {"reason": "x"}),
    ]:
        response = api.request(method, path, json=body)
        assert response.status_code == 404, (path, response.text)
        assert response.json()["error"]["code"] == "not_found"


def test_credits_are_per_tenant(engine: Engine, api: TestClient) -> None:
    pack = ok(
        api.post("/api/v1/customers/acme/credits", json={"amount": "1", "currency": "USD"}), 201
    )
    other = create_tenant(engine, "other")
    with api_client(engine, other.admin_key) as client:
        client.post(
            "/api/v1/customers", json={"id": "acme", "name": "Other Acme"}
        ).raise_for_status()
        assert ok(client.get("/api/v1/customers/acme/credits")) == []
        response = client.post(
            f"/api/v1/customers/acme/credits/{pack['id']}/void", json={"reason": "x"}
        )
        assert response.status_code == 404
