"""The pricing API against a running `agentmeter serve`: price books, versions and their
components, customer terms, provider costs; validation, locking and tenant isolation."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any

import httpx
import pytest
from sqlalchemy import Engine, select, update

from agentmeter.tables import PriceVersion, UsageRow, to_unix_nano
from agentmeter.tenants import create_tenant
from billing_api.jobs.kinds import job_registry
from billing_api.jobs.worker import run_due_jobs
from exporter.sql_sink import SqlUsageSink
from otel_processor.usage import UsageBatch, UsageRecord
from tests.conftest import RunningServer
from tests.polling import wait_until

CUSTOM_METERS = ("web_searches", "sandbox_seconds", "sandbox.seconds")

ALL_CHARGE_MODELS: list[dict[str, Any]] = [
    {
        "name": "gpt-4o input",
        "meter": "input_tokens",
        "filters": {"provider": "openai", "model": "gpt-4o*"},
        "charge": "per_unit",
        "unit_price": "2.50",
        "per_units": 1_000_000,
    },
    {
        "name": "output",
        "meter": "output_tokens",
        "charge": "graduated",
        "tiers": [
            {"up_to": 1_000_000, "unit_price": "10"},
            {"up_to": None, "unit_price": 8, "flat_fee": "5.00"},
        ],
        "per_units": 1_000_000,
    },
    {
        "name": "searches",
        "meter": "web_searches",
        "charge": "volume",
        "tiers": [{"up_to": 100, "unit_price": "0.01"}, {"up_to": None, "unit_price": "0.005"}],
    },
    {
        "name": "sandbox",
        "meter": "sandbox_seconds",
        "charge": "package",
        "package_size": 3600,
        "unit_price": "1.20",
    },
    {"name": "platform", "charge": "flat_fee", "amount": "49.00"},
    {
        "name": "tools",
        "meter": "tool_calls",
        "filters": {"tool": "search_*"},
        "charge": "allowance",
        "included_quantity": "1000",
        "unit_price": "0.002",
    },
    {"name": "commitment", "charge": "minimum", "amount": 100},
    {
        "name": "claude at cost",
        "meter": "input_tokens",
        "filters": {"provider": "anthropic"},
        "charge": "cost_plus",
        "markup": 0.2,
        "unit_price": "0.10",
        "per_units": 1_000_000,
        "priority": 5,
    },
]


@pytest.fixture
def api(server: RunningServer) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=server.api_url, headers=server.admin_headers, timeout=30) as client:
        for meter in CUSTOM_METERS:  # custom meters are declared before prices use them
            ok(client.post("/api/v1/meters", json={"name": meter}), 201)
        yield client


def ok(response: httpx.Response, status: int = 200) -> Any:
    assert response.status_code == status, response.text
    return response.json() if response.content else None


def error(response: httpx.Response, status: int) -> str:
    """The message of an error answer, after checking its status and shape."""
    assert response.status_code == status, response.text
    body = response.json()
    assert set(body) == {"error"} and set(body["error"]) == {"code", "message"}, body
    return str(body["error"]["message"])


def new_book(api: httpx.Client, name: str = "standard", currency: str = "USD") -> str:
    return str(
        ok(api.post("/api/v1/price-books", json={"name": name, "currency": currency}), 201)["id"]
    )


def new_version(api: httpx.Client, book_id: str, effective_from: str, components: list[Any]) -> Any:
    body = {"effective_from": effective_from, "components": components}
    return ok(api.post(f"/api/v1/price-books/{book_id}/versions", json=body), 201)


class TestPriceBooks:
    def test_create_list_get_update(self, api: httpx.Client) -> None:
        first = ok(
            api.post("/api/v1/price-books", json={"name": "standard", "currency": "usd"}), 201
        )
        assert first["currency"] == "USD"
        assert first["is_default"] is True  # the tenant's first book
        assert first["usd_rate"] == "1"

        second = ok(
            api.post(
                "/api/v1/price-books",
                json={"name": "europe", "currency": "EUR", "usd_rate": "0.92"},
            ),
            201,
        )
        assert second["is_default"] is False
        assert second["usd_rate"] == "0.92"

        listed = ok(api.get("/api/v1/price-books"))
        assert [b["name"] for b in listed] == ["standard", "europe"]

        detail = ok(api.get(f"/api/v1/price-books/{second['id']}"))
        assert detail["versions"] == []
        assert {k: v for k, v in detail.items() if k != "versions"} == second

        updated = ok(
            api.patch(
                f"/api/v1/price-books/{second['id']}",
                json={"name": "eu", "usd_rate": 0.93, "is_default": True},
            )
        )
        assert (updated["name"], updated["usd_rate"], updated["is_default"]) == ("eu", "0.93", True)
        assert ok(api.get(f"/api/v1/price-books/{first['id']}"))["is_default"] is False

        third = ok(
            api.post(
                "/api/v1/price-books", json={"name": "yen", "currency": "JPY", "is_default": True}
            ),
            201,
        )
        defaults = [b["id"] for b in ok(api.get("/api/v1/price-books")) if b["is_default"]]
        assert defaults == [third["id"]]

    def test_conflicts_and_refusals(self, api: httpx.Client) -> None:
        book_id = new_book(api)
        other_id = new_book(api, "other")
        message = error(
            api.post("/api/v1/price-books", json={"name": "standard", "currency": "USD"}), 409
        )
        assert "already exists" in message
        error(api.patch(f"/api/v1/price-books/{other_id}", json={"name": "standard"}), 409)
        message = error(
            api.patch(f"/api/v1/price-books/{book_id}", json={"is_default": False}), 409
        )
        assert "another book the default" in message

        message = error(api.post("/api/v1/price-books", json={"name": "x", "currency": "XYZ"}), 422)
        assert "unknown currency" in message
        error(
            api.post("/api/v1/price-books", json={"name": "x", "currency": "USD", "usd_rate": 0}),
            422,
        )
        error(api.post("/api/v1/price-books", json={"name": "x"}), 422)
        # The currency of a book is fixed.
        error(api.patch(f"/api/v1/price-books/{book_id}", json={"currency": "EUR"}), 422)

        error(api.get("/api/v1/price-books/nope"), 404)
        error(api.patch("/api/v1/price-books/nope", json={"name": "x"}), 404)


class TestVersions:
    def test_round_trip_of_every_charge_model(self, api: httpx.Client) -> None:
        book_id = new_book(api)
        created = new_version(api, book_id, "2026-01-01T00:00:00Z", ALL_CHARGE_MODELS)
        assert created["number"] == 1
        assert created["effective_from"] == "2026-01-01T00:00:00Z"
        assert created["locked_at"] is None

        version = ok(api.get(f"/api/v1/price-books/{book_id}/versions/1"))
        assert version == created
        components = version["components"]
        assert [c["name"] for c in components] == [c["name"] for c in ALL_CHARGE_MODELS]
        by_name = {c["name"]: c for c in components}
        assert by_name["gpt-4o input"]["unit_price"] == "2.50"
        assert by_name["gpt-4o input"]["filters"] == {"provider": "openai", "model": "gpt-4o*"}
        assert by_name["output"]["tiers"] == [
            {"up_to": 1_000_000, "unit_price": "10", "flat_fee": "0"},
            {"up_to": None, "unit_price": "8", "flat_fee": "5.00"},
        ]
        assert by_name["platform"]["meter"] is None
        assert by_name["platform"]["amount"] == "49.00"
        assert by_name["commitment"]["amount"] == "100"
        assert by_name["claude at cost"]["markup"] == "0.2"
        assert by_name["claude at cost"]["priority"] == 5
        assert by_name["tools"]["included_quantity"] == "1000"
        assert by_name["sandbox"]["package_size"] == 3600

        # What the API answers can be sent back unchanged.
        replaced = ok(
            api.put(
                f"/api/v1/price-books/{book_id}/versions/1/components",
                json={"components": components},
            )
        )
        strip = [{k: v for k, v in c.items() if k != "id"} for c in replaced["components"]]
        assert strip == [{k: v for k, v in c.items() if k != "id"} for c in components]

    def test_numbering_copy_replace_delete(self, api: httpx.Client) -> None:
        book_id = new_book(api)
        base = "/api/v1/price-books/" + book_id
        new_version(api, book_id, "2026-01-01T00:00:00Z", ALL_CHARGE_MODELS[:2])

        # Naive times are UTC; an offset is converted to UTC.
        copied = ok(
            api.post(
                f"{base}/versions",
                json={
                    "effective_from": "2026-02-01T01:00:00+01:00",
                    "copy_from_version": 1,
                    "components": [
                        {
                            "name": "output",
                            "meter": "output_tokens",
                            "charge": "per_unit",
                            "unit_price": "9",
                        },
                        {"name": "platform", "charge": "flat_fee", "amount": "10"},
                    ],
                },
            ),
            201,
        )
        assert copied["number"] == 2
        assert copied["effective_from"] == "2026-02-01T00:00:00Z"
        assert [(c["name"], c["charge"]) for c in copied["components"]] == [
            ("gpt-4o input", "per_unit"),
            ("output", "per_unit"),
            ("platform", "flat_fee"),
        ]
        # The copy has its own rows: version 1 is untouched.
        first = ok(api.get(f"{base}/versions/1"))
        assert [c["charge"] for c in first["components"]] == ["per_unit", "graduated"]
        assert {c["id"] for c in first["components"]}.isdisjoint(
            c["id"] for c in copied["components"]
        )

        third = new_version(api, book_id, "2026-03-01T00:00:00", [])
        assert (third["number"], third["effective_from"]) == (3, "2026-03-01T00:00:00Z")
        message = error(
            api.post(f"{base}/versions", json={"effective_from": "2026-03-01T00:00:00Z"}), 409
        )
        assert "already has a version effective from" in message
        error(
            api.post(
                f"{base}/versions",
                json={"effective_from": "2026-04-01T00:00:00Z", "copy_from_version": 9},
            ),
            404,
        )

        summaries = ok(api.get(f"{base}/versions"))
        assert [v["number"] for v in summaries] == [1, 2, 3]
        assert [v["number"] for v in ok(api.get(base))["versions"]] == [1, 2, 3]

        replaced = ok(
            api.put(
                f"{base}/versions/3/components",
                json={"components": [ALL_CHARGE_MODELS[4], ALL_CHARGE_MODELS[0]]},
            )
        )
        assert [c["name"] for c in replaced["components"]] == ["platform", "gpt-4o input"]
        assert ok(api.get(f"{base}/versions/3")) == replaced

        assert ok(api.delete(f"{base}/versions/2"), 204) is None
        error(api.get(f"{base}/versions/2"), 404)
        error(api.delete(f"{base}/versions/2"), 404)
        # Numbers are never reused while a later version exists: next is max + 1.
        assert new_version(api, book_id, "2026-05-01T00:00:00Z", [])["number"] == 4

    def test_locked_version_refuses_changes(self, api: httpx.Client, engine: Engine) -> None:
        book_id = new_book(api)
        base = "/api/v1/price-books/" + book_id
        new_version(api, book_id, "2026-01-01T00:00:00Z", ALL_CHARGE_MODELS[:1])
        # Finalizing an invoice locks the versions it used; simulated here.
        locked_at = datetime(2026, 2, 1, 12, tzinfo=UTC)
        with engine.begin() as connection:
            connection.execute(
                update(PriceVersion)
                .where(PriceVersion.book_id == book_id, PriceVersion.number == 1)
                .values(locked_at=locked_at)
            )

        message = error(
            api.put(f"{base}/versions/1/components", json={"components": ALL_CHARGE_MODELS}), 409
        )
        assert "locked" in message and "new version" in message
        assert "new version" in error(api.delete(f"{base}/versions/1"), 409)

        version = ok(api.get(f"{base}/versions/1"))
        assert version["locked_at"] == "2026-02-01T12:00:00Z"
        assert [c["name"] for c in version["components"]] == ["gpt-4o input"]

        # The way forward: a new version copied from the locked one.
        copied = ok(
            api.post(
                f"{base}/versions",
                json={"effective_from": "2026-02-01T00:00:00Z", "copy_from_version": 1},
            ),
            201,
        )
        assert copied["locked_at"] is None
        assert [c["name"] for c in copied["components"]] == ["gpt-4o input"]


def _component(**changes: Any) -> dict[str, Any]:
    component: dict[str, Any] = {
        "name": "c",
        "meter": "input_tokens",
        "charge": "per_unit",
        "unit_price": "1",
    }
    component.update(changes)
    return {k: v for k, v in component.items() if v is not ...}


# (id, component or list of components, a fragment of the error message)
INVALID_COMPONENTS: list[tuple[str, Any, str]] = [
    (
        "overlapping tiers",
        _component(
            charge="graduated",
            unit_price=...,
            tiers=[
                {"up_to": 1000, "unit_price": "1"},
                {"up_to": 1000, "unit_price": "0.5"},
                {"up_to": None, "unit_price": "0.1"},
            ],
        ),
        "tiers overlap or are out of order",
    ),
    (
        "unsorted tiers",
        _component(
            charge="volume",
            unit_price=...,
            tiers=[
                {"up_to": 1000, "unit_price": "1"},
                {"up_to": 10, "unit_price": "0.5"},
                {"up_to": None, "unit_price": "0.1"},
            ],
        ),
        "tier 2 up_to 10 must be greater than tier 1 up_to 1000",
    ),
    (
        "unbounded middle tier",
        _component(
            charge="graduated",
            unit_price=...,
            tiers=[{"up_to": None, "unit_price": "1"}, {"up_to": None, "unit_price": "0.5"}],
        ),
        "only the last tier may be unbounded",
    ),
    (
        "bounded last tier",
        _component(charge="graduated", unit_price=..., tiers=[{"up_to": 10, "unit_price": "1"}]),
        "last tier must have up_to null",
    ),
    (
        "zero tier bound",
        _component(
            charge="graduated",
            unit_price=...,
            tiers=[{"up_to": 0, "unit_price": "1"}, {"up_to": None, "unit_price": "1"}],
        ),
        "greater than 0",
    ),
    ("negative price", _component(unit_price="-0.01"), "must not be negative"),
    ("negative number price", _component(unit_price=-2), "must not be negative"),
    (
        "negative tier price",
        _component(charge="graduated", unit_price=..., tiers=[{"up_to": None, "unit_price": "-1"}]),
        "must not be negative",
    ),
    ("negative markup", _component(charge="cost_plus", unit_price=..., markup="-0.1"), "negative"),
    ("13 decimal places", _component(unit_price="0.0000000000001"), "at most 12 decimal places"),
    ("not a number", _component(unit_price="two"), "not a decimal number"),
    ("infinite price", _component(unit_price="Infinity"), "not a decimal number"),
    # Issue 8, defect 9: the documented pattern, ASCII digits only, strictly.
    ("underscores", _component(unit_price="1_000"), "not a decimal number"),
    ("spaces", _component(unit_price=" 5 "), "not a decimal number"),
    ("fullwidth digit", _component(unit_price="５"), "not a decimal number"),
    ("arabic-indic digits", _component(unit_price="١٢"), "not a decimal number"),
    ("exponent", _component(unit_price="2E+2"), "not a decimal number"),
    ("plus sign", _component(unit_price="+2"), "not a decimal number"),
    ("trailing zeros past 12 places", _component(unit_price="1.5000000000000"), "at most 12"),
    ("boolean price", _component(unit_price=True), "expected a decimal number"),
    ("unknown meter", _component(meter="Input Tokens"), "unknown meter"),
    ("unknown charge", _component(charge="tiered"), "per_unit"),
    ("per_unit without unit_price", _component(unit_price=...), "requires unit_price"),
    ("per_unit without meter", _component(meter=...), "requires meter"),
    ("per_units zero", _component(per_units=0), "greater than or equal to 1"),
    ("graduated without tiers", _component(charge="graduated", unit_price=...), "requires tiers"),
    ("package without size", _component(charge="package"), "requires package_size"),
    ("package size zero", _component(charge="package", package_size=0), "greater than or equal"),
    ("allowance without included", _component(charge="allowance"), "requires included_quantity"),
    ("cost_plus without markup", _component(charge="cost_plus"), "requires markup"),
    (
        "flat_fee without amount",
        _component(charge="flat_fee", meter=..., unit_price=...),
        "requires amount",
    ),
    (
        "flat_fee with a meter",
        _component(charge="flat_fee", unit_price=..., amount="10"),
        "does not take meter",
    ),
    (
        "minimum of zero",
        _component(charge="minimum", meter=..., unit_price=..., amount="0"),
        "amount above 0",
    ),
    (
        "per_unit with tiers",
        _component(tiers=[{"up_to": None, "unit_price": "1"}]),
        "does not take tiers",
    ),
    ("per_unit with amount", _component(amount="5"), "does not take amount"),
    (
        "package with per_units",
        _component(charge="package", package_size=10, per_units=1000),
        "does not take per_units",
    ),
    ("misspelled field", _component(unit_prize="1"), "unit_prize: Extra inputs are not permitted"),
    (
        "extra tier field",
        _component(
            charge="volume", unit_price=..., tiers=[{"up_to": None, "unit_price": "1", "max": 3}]
        ),
        "Extra inputs",
    ),
    (
        "unknown filter key",
        _component(filters={"customer": "acme"}),
        "unknown filter key(s) customer",
    ),
    ("empty filter value", _component(filters={"model": ""}), "at least 1 character"),
    ("filter value not a string", _component(filters={"model": 4}), "valid string"),
    ("empty name", _component(name=""), "at least 1 character"),
    ("duplicate names", [_component(), _component(meter="output_tokens")], "used twice"),
]


class TestComponentValidation:
    def test_invalid_components_are_422(self, api: httpx.Client) -> None:
        book_id = new_book(api)
        new_version(api, book_id, "2026-01-01T00:00:00Z", [])
        url = f"/api/v1/price-books/{book_id}/versions/1/components"
        failures = []
        for case_id, components, fragment in INVALID_COMPONENTS:
            body = {"components": components if isinstance(components, list) else [components]}
            response = api.put(url, json=body)
            if response.status_code != 422 or fragment not in response.json()["error"]["message"]:
                failures.append(f"{case_id}: {response.status_code} {response.text}")
        assert not failures, "\n".join(failures)
        # Nothing was stored by the refused requests.
        assert ok(api.get(f"/api/v1/price-books/{book_id}/versions/1"))["components"] == []

        # The same validation guards new versions and overrides.
        message = error(
            api.post(
                f"/api/v1/price-books/{book_id}/versions",
                json={
                    "effective_from": "2026-02-01T00:00:00Z",
                    "components": [_component(meter="No")],
                },
            ),
            422,
        )
        assert "unknown meter" in message
        ok(api.post("/api/v1/customers", json={"id": "acme", "name": "Acme"}), 201)
        message = error(
            api.post(
                "/api/v1/customers/acme/overrides",
                json={
                    "effective_from": "2026-01-01T00:00:00Z",
                    "components": [_component(unit_price="-1")],
                },
            ),
            422,
        )
        assert "must not be negative" in message

    def test_valid_edge_values(self, api: httpx.Client) -> None:
        book_id = new_book(api)
        version = new_version(
            api,
            book_id,
            "2026-01-01T00:00:00Z",
            [
                _component(name="twelve places", unit_price="0.000000000001"),
                _component(name="trailing zeros", unit_price="1.500000000000"),
                _component(name="json number", unit_price=0.1),
                _component(name="json exponent", unit_price=2e2),
                _component(name="free", unit_price=0),
                _component(
                    name="custom meter", meter="sandbox.seconds", filters={"model": "gpt-?o"}
                ),
            ],
        )
        prices = {c["name"]: c["unit_price"] for c in version["components"]}
        assert prices == {
            "twelve places": "0.000000000001",
            "trailing zeros": "1.500000000000",
            "json number": "0.1",
            "json exponent": "200.0",
            "free": "0",
            "custom meter": "1",
        }


class TestCustomerTerms:
    def test_price_book_assignment(self, api: httpx.Client) -> None:
        book_id = new_book(api)
        error(api.put("/api/v1/customers/ghost/price-book", json={"price_book_id": book_id}), 404)
        ok(api.post("/api/v1/customers", json={"id": "acme", "name": "Acme"}), 201)
        url = "/api/v1/customers/acme/price-book"
        assert ok(api.get(url)) == {"customer_id": "acme", "price_book_id": None}
        assert ok(api.put(url, json={"price_book_id": book_id})) == {
            "customer_id": "acme",
            "price_book_id": book_id,
        }
        assert ok(api.get(url))["price_book_id"] == book_id
        assert "no price book" in error(api.put(url, json={"price_book_id": "nope"}), 404)
        assert ok(api.get(url))["price_book_id"] == book_id
        assert ok(api.put(url, json={"price_book_id": None}))["price_book_id"] is None
        error(api.put(url, json={}), 422)

    def test_overrides(self, api: httpx.Client) -> None:
        url = "/api/v1/customers/acme/overrides"
        body = {
            "effective_from": "2026-01-01T00:00:00",
            "effective_until": "2026-07-01T00:00:00Z",
            "note": "enterprise deal",
            "components": [_component(name="gpt-4o input", unit_price="2.00", per_units=1_000_000)],
        }
        error(api.post(url, json=body), 404)
        error(api.get(url), 404)
        ok(api.post("/api/v1/customers", json={"id": "acme", "name": "Acme"}), 201)

        created = ok(api.post(url, json=body), 201)
        assert created["customer_id"] == "acme"
        assert created["effective_from"] == "2026-01-01T00:00:00Z"
        assert created["effective_until"] == "2026-07-01T00:00:00Z"
        assert created["note"] == "enterprise deal"
        assert created["components"][0]["unit_price"] == "2.00"

        # Overrides may overlap in time (rating applies the later one where they clash).
        extra = {
            **body,
            "effective_from": "2026-06-01T00:00:00Z",
            "effective_until": None,
            "components": [{"name": "support", "charge": "flat_fee", "amount": "500"}],
        }
        added = ok(api.post(url, json=extra), 201)
        later = ok(
            api.post(
                url,
                json={**body, "effective_from": "2026-07-01T00:00:00Z", "effective_until": None},
            ),
            201,
        )

        listed = ok(api.get(url))
        assert [o["id"] for o in listed] == [created["id"], added["id"], later["id"]]
        assert listed[0] == created

        assert "effective_until must be after" in error(
            api.post(url, json={**body, "effective_until": "2025-12-31T00:00:00Z"}), 422
        )
        error(api.post(url, json={**body, "components": []}), 422)
        error(api.post(url, json={k: v for k, v in body.items() if k != "effective_from"}), 422)

        assert ok(api.delete(f"{url}/{added['id']}"), 204) is None
        assert [o["id"] for o in ok(api.get(url))] == [created["id"], later["id"]]
        error(api.delete(f"{url}/{added['id']}"), 404)


class TestProviderCosts:
    def test_create_list_delete(self, api: httpx.Client) -> None:
        body = {
            "provider": "openai",
            "model": "gpt-4o*",
            "meter": "input_tokens",
            "unit_cost_usd": "2.125",
            "per_units": 1_000_000,
            "effective_from": "2026-01-01T00:00:00",
        }
        created = ok(api.post("/api/v1/provider-costs", json=body), 201)
        assert created["per_units"] == 1_000_000
        assert created["unit_cost_usd"] == "2.125"
        assert created["effective_from"] == "2026-01-01T00:00:00Z"
        assert "delete it first" in error(api.post("/api/v1/provider-costs", json=body), 409)
        other = ok(
            api.post(
                "/api/v1/provider-costs",
                json={**body, "meter": "output_tokens", "unit_cost_usd": 8, "per_units": 1000},
            ),
            201,
        )
        assert ok(api.get("/api/v1/provider-costs")) == [created, other]

        error(api.post("/api/v1/provider-costs", json={**body, "unit_cost_usd": "-1"}), 422)
        error(api.post("/api/v1/provider-costs", json={**body, "meter": "Tokens!"}), 422)
        error(api.post("/api/v1/provider-costs", json={**body, "model": ""}), 422)
        error(api.post("/api/v1/provider-costs", json={**body, "per_units": 0}), 422)
        error(api.post("/api/v1/provider-costs", json={**body, "currency": "EUR"}), 422)

        assert ok(api.delete(f"/api/v1/provider-costs/{created['id']}"), 204) is None
        assert ok(api.get("/api/v1/provider-costs")) == [other]
        error(api.delete(f"/api/v1/provider-costs/{created['id']}"), 404)

    def test_create_and_delete_recost_stored_usage(
        self, api: httpx.Client, server: RunningServer, engine: Engine
    ) -> None:
        # A model genai-prices does not know: no provider cost until the builder gives one.
        def usage(span_id: str, moment: datetime) -> UsageRecord:
            return UsageRecord(
                trace_id="a" * 32,
                span_id=span_id,
                meter="input_tokens",
                quantity=1_000_000,
                customer_id="acme",
                time_unix_nano=to_unix_nano(moment),
                provider="house",
                model="house-llm-1",
                operation="chat",
            )

        # Written here, by a sink without a cost catalog: stored without a cost.
        SqlUsageSink(engine).write(
            server.tenant.tenant_id,
            UsageBatch(
                records=[
                    usage("1" * 16, datetime(2025, 12, 31, tzinfo=UTC)),
                    usage("2" * 16, datetime(2026, 1, 15, tzinfo=UTC)),
                ]
            ),
        )

        def costs() -> dict[str, int | None]:
            with engine.connect() as connection:
                rows = connection.execute(select(UsageRow.span_id, UsageRow.provider_cost_pico))
                return {span_id[0]: cost for span_id, cost in rows}

        assert costs() == {"1": None, "2": None}
        created = ok(
            api.post(
                "/api/v1/provider-costs",
                json={
                    "provider": "house",
                    "model": "house-*",
                    "meter": "input_tokens",
                    "unit_cost_usd": "2",
                    "per_units": 1_000_000,
                    "effective_from": "2026-01-01T00:00:00Z",
                },
            ),
            201,
        )
        recosted(api, engine)
        # $2 per 1M tokens × 1M tokens, in 10^-12 USD; usage before the rate is untouched.
        assert costs() == {"1": None, "2": 2 * 10**12}
        ok(api.delete(f"/api/v1/provider-costs/{created['id']}"), 204)
        recosted(api, engine)
        assert costs() == {"1": None, "2": None}


def recosted(api: httpx.Client, engine: Engine) -> None:
    """Wait for the recost jobs a provider cost change queued, running them from here too
    (the server's background loop may be the worker that takes them)."""

    def done() -> bool:
        run_due_jobs(engine, job_registry())
        jobs = ok(api.get("/api/v1/jobs", params={"kind": "pricing.recost"}))
        return bool(jobs) and all(job["status"] == "done" for job in jobs)

    wait_until(done, timeout=60, what="the recost jobs")


class TestTenantIsolation:
    def test_other_tenants_ids_are_not_found(
        self, api: httpx.Client, server: RunningServer, engine: Engine
    ) -> None:
        book_id = new_book(api)
        new_version(api, book_id, "2026-01-01T00:00:00Z", ALL_CHARGE_MODELS[:1])
        ok(api.post("/api/v1/customers", json={"id": "acme", "name": "Acme"}), 201)
        override = ok(
            api.post(
                "/api/v1/customers/acme/overrides",
                json={"effective_from": "2026-01-01T00:00:00Z", "components": [_component()]},
            ),
            201,
        )
        cost = ok(
            api.post(
                "/api/v1/provider-costs",
                json={
                    "provider": "openai",
                    "model": "gpt-4o",
                    "meter": "input_tokens",
                    "unit_cost_usd": "2.5",
                    "effective_from": "2026-01-01T00:00:00Z",
                },
            ),
            201,
        )

        other = create_tenant(engine, "other tenant")
        headers = {"authorization": f"Bearer {other.admin_key}"}
        with httpx.Client(base_url=server.api_url, headers=headers, timeout=30) as intruder:
            base = f"/api/v1/price-books/{book_id}"
            assert ok(intruder.get("/api/v1/price-books")) == []
            assert ok(intruder.get("/api/v1/provider-costs")) == []
            error(intruder.get(base), 404)
            error(intruder.patch(base, json={"name": "mine"}), 404)
            error(intruder.get(f"{base}/versions"), 404)
            error(intruder.get(f"{base}/versions/1"), 404)
            error(
                intruder.post(f"{base}/versions", json={"effective_from": "2027-01-01T00:00:00Z"}),
                404,
            )
            error(intruder.put(f"{base}/versions/1/components", json={"components": []}), 404)
            error(intruder.delete(f"{base}/versions/1"), 404)
            error(intruder.get("/api/v1/customers/acme/overrides"), 404)
            error(intruder.delete(f"/api/v1/customers/acme/overrides/{override['id']}"), 404)
            error(intruder.delete(f"/api/v1/provider-costs/{cost['id']}"), 404)
            # Its own customer cannot be given this tenant's book.
            ok(intruder.post("/api/v1/customers", json={"id": "acme", "name": "Other Acme"}), 201)
            error(
                intruder.put("/api/v1/customers/acme/price-book", json={"price_book_id": book_id}),
                404,
            )
            error(intruder.delete(f"/api/v1/customers/acme/overrides/{override['id']}"), 404)
            # Its first book is its own default; this tenant's default is untouched.
            assert ok(
                intruder.post("/api/v1/price-books", json={"name": "standard", "currency": "EUR"}),
                201,
            )["is_default"]
        assert ok(api.get(base))["is_default"] is True
        assert len(ok(api.get(f"{base}/versions/1"))["components"]) == 1
        assert len(ok(api.get("/api/v1/customers/acme/overrides"))) == 1
        assert len(ok(api.get("/api/v1/provider-costs"))) == 1

    def test_admin_key_required(self, server: RunningServer) -> None:
        response = httpx.get(f"{server.api_url}/api/v1/price-books", timeout=30)
        error(response, 401)
        ingest = httpx.get(
            f"{server.api_url}/api/v1/price-books", headers=server.ingest_headers, timeout=30
        )
        error(ingest, 401)
