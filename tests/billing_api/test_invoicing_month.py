"""A whole billing month against a running `agentmeter serve`, on SQLite and PostgreSQL.

Spans for November 2026 are sent through the real OTLP/HTTP endpoint (protobuf
`ExportTraceServiceRequest`), customers and prices are set up through the REST API, and
everything after that goes through it too: billing runs, drafts, exceptions, review
actions, finalization and numbering, exports, void, credit notes and prepaid credit.

Every expected amount is worked out by hand in the comments (USD, minor units = cents,
each line rounded once, half up; totals are sums of rounded lines).

The month, as sent (span end times in November 2026 unless said):
- acme (registered): gpt-4o chats of 400 000 input / 100 000 output tokens (Nov 1
  00:00:00, the period's first instant), 500 000 / 150 000 (Nov 15) and 334 567 / 95 678
  (Nov 30 23:59:59.999999, its last microsecond); and 1 000 000 / 1 000 000 at Dec 1
  00:00 exactly, which belongs to December and is not billed.
- globex (registered): gpt-4o 2 000 000 / 250 001; gpt-4o-mini 10 000 / 5 000, which no
  component prices (blocking).
- initech (registered): house-embed-1 embeddings of 12 100 and 10 000 input tokens, a model
  without a known provider cost (warning).
- hooli (not registered): gpt-4o 100 000 / 10 000.
- no customer: gpt-4o 50 000 / 5 000 in trace 40, whose spans name no customer.

The price book "standard" (USD, version 1 from 2026-01-01):
- "gpt-4o input": input_tokens of model gpt-4o, 3.00 per 1 000 000
- "gpt-4o output": output_tokens of model gpt-4o, 12.00 per 1 000 000
- "house embeddings": input_tokens of model house-embed-1, 0.05 per 1 000
- "platform": flat fee 49.00 per period

Hand-worked drafts (cents):
- acme: input 1 234 567 × 3.00 / 10^6 = 3.703701 → 370; output 345 678 × 12 / 10^6 =
  4.148136 → 415; platform 4900. Subtotal 370 + 415 + 4900 = 5685.
  Provider cost (gpt-4o public prices 2.50 / 10.00 per 10^6): input 3.0864175 → 309,
  output 3.45678 → 346; margins 370 − 309 = 61 and 415 − 346 = 69; invoice cost 655,
  margin 5685 − 655 = 5030.
- globex: input 2 000 000 × 3 / 10^6 = 6.00 → 600; output 250 001 × 12 / 10^6 = 3.000012 →
  300; platform 4900. Subtotal 5800. gpt-4o-mini input and output: unpriced (2 blocking).
- initech: 22 100 × 0.05 / 1000 = 1.105 → 111 (half up; half-even would give 110);
  platform 4900. Subtotal 5011. Provider cost unknown → warning.
- hooli: input 100 000 × 3 / 10^6 = 0.30 → 30; output 10 000 × 12 / 10^6 = 0.12 → 12;
  platform 4900. Subtotal 4942.
"""

from __future__ import annotations

import csv
import io
import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import httpx
import pytest
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
    ExportTraceServiceRequest,
    ExportTraceServiceResponse,
)
from opentelemetry.proto.common.v1.common_pb2 import AnyValue, KeyValue
from opentelemetry.proto.resource.v1.resource_pb2 import Resource
from opentelemetry.proto.trace.v1.trace_pb2 import ResourceSpans, ScopeSpans, Span
from sqlalchemy import Engine
from sqlalchemy.orm import Session

from agentmeter.tables import to_unix_nano
from billing_api.invoicing.runs import execute_run, start_run
from tests.billing_api.callers import staff
from tests.conftest import RunningServer

PERIOD = "2026-11"
# Who the audit log names: the caller an admin key resolves to (billing_api.auth), never
# what the client says; review calls send a spoofed actor header to prove it is ignored.
ACTOR = "admin"
SPOOFED_ACTOR = {"X-AgentMeter-Actor": "reviewer@builder.test"}

GPT4O = {"provider": "openai", "model": "gpt-4o"}
GPT4O_MINI = {"provider": "openai", "model": "gpt-4o-mini"}
HOUSE = {"provider": "house", "model": "house-embed-1"}

COMPONENTS: list[dict[str, Any]] = [
    {
        "name": "gpt-4o input",
        "meter": "input_tokens",
        "filters": {"model": "gpt-4o"},
        "charge": "per_unit",
        "unit_price": "3.00",
        "per_units": 1_000_000,
    },
    {
        "name": "gpt-4o output",
        "meter": "output_tokens",
        "filters": {"model": "gpt-4o"},
        "charge": "per_unit",
        "unit_price": "12.00",
        "per_units": 1_000_000,
    },
    {
        "name": "house embeddings",
        "meter": "input_tokens",
        "filters": {"model": "house-embed-1"},
        "charge": "per_unit",
        "unit_price": "0.05",
        "per_units": 1000,
    },
    {"name": "platform", "charge": "flat_fee", "amount": "49.00"},
]

# Hand-worked subtotals of the drafts (see the module docstring).
ACME_SUBTOTAL = 370 + 415 + 4900  # 5685
GLOBEX_SUBTOTAL = 600 + 300 + 4900  # 5800
INITECH_SUBTOTAL = 111 + 4900  # 5011
HOOLI_SUBTOTAL = 30 + 12 + 4900  # 4942


def nov(day: int, hour: int = 12, minute: int = 0, second: int = 0, micro: int = 0) -> datetime:
    return datetime(2026, 11, day, hour, minute, second, micro, tzinfo=UTC)


@dataclass(frozen=True)
class Call:
    """One leaf LLM span of the month."""

    trace: int
    span: int
    end: datetime
    model: Mapping[str, str]
    input_tokens: int
    output_tokens: int = 0
    customer: str = ""
    operation: str = "chat"


UNATTRIBUTED_TRACE = 40

MONTH: list[Call] = [
    Call(1, 1, nov(1, 0), GPT4O, 400_000, 100_000, "acme"),
    Call(1, 2, nov(15), GPT4O, 500_000, 150_000, "acme"),
    Call(2, 3, nov(30, 23, 59, 59, 999_999), GPT4O, 334_567, 95_678, "acme"),
    Call(3, 4, datetime(2026, 12, 1, tzinfo=UTC), GPT4O, 1_000_000, 1_000_000, "acme"),
    Call(10, 10, nov(10), GPT4O, 2_000_000, 250_001, "globex"),
    Call(10, 11, nov(11), GPT4O_MINI, 10_000, 5_000, "globex"),
    Call(20, 20, nov(5), HOUSE, 12_100, 0, "initech", "embeddings"),
    Call(21, 21, nov(6), HOUSE, 10_000, 0, "initech", "embeddings"),
    Call(30, 30, nov(20), GPT4O, 100_000, 10_000, "hooli"),
    Call(UNATTRIBUTED_TRACE, 40, nov(21), GPT4O, 50_000, 5_000, ""),
]

REGISTERED = {
    "acme": "Acme Inc",
    "globex": "Globex Corporation",
    "initech": "Initech",
}


# --- Sending spans -----------------------------------------------------------------------


def _value(value: str | int) -> AnyValue:
    return AnyValue(int_value=value) if isinstance(value, int) else AnyValue(string_value=value)


def _span(call: Call) -> Span:
    attributes: dict[str, str | int] = {
        "gen_ai.operation.name": call.operation,
        "gen_ai.provider.name": call.model["provider"],
        "gen_ai.request.model": call.model["model"],
        "gen_ai.usage.input_tokens": call.input_tokens,
    }
    if call.output_tokens:
        attributes["gen_ai.usage.output_tokens"] = call.output_tokens
    if call.customer:
        attributes["agentmeter.customer.id"] = call.customer
    end = to_unix_nano(call.end)
    return Span(
        trace_id=call.trace.to_bytes(16, "big"),
        span_id=call.span.to_bytes(8, "big"),
        name=f"{call.operation} {call.model['model']}",
        kind=Span.SPAN_KIND_CLIENT,
        start_time_unix_nano=end - 2_000_000_000,
        end_time_unix_nano=end,
        attributes=[KeyValue(key=k, value=_value(v)) for k, v in attributes.items()],
    )


def send_spans(server: RunningServer, calls: list[Call]) -> None:
    """POST the spans to /v1/traces as OTLP protobuf; the answer comes after the commit."""
    request = ExportTraceServiceRequest(
        resource_spans=[
            ResourceSpans(
                resource=Resource(
                    attributes=[KeyValue(key="service.name", value=_value("support-agent"))]
                ),
                scope_spans=[ScopeSpans(spans=[_span(call) for call in calls])],
            )
        ]
    )
    response = httpx.post(
        server.traces_url,
        content=request.SerializeToString(),
        headers={**server.ingest_headers, "content-type": "application/x-protobuf"},
        timeout=30,
    )
    assert response.status_code == 200, response.content
    answer = ExportTraceServiceResponse()
    answer.ParseFromString(response.content)
    assert answer.partial_success.rejected_spans == 0, answer


# --- Talking to the API ------------------------------------------------------------------


def ok(response: httpx.Response, status: int = 200) -> Any:
    assert response.status_code == status, response.text
    return response.json() if response.content else None


def error(response: httpx.Response, status: int) -> str:
    assert response.status_code == status, response.text
    body = response.json()
    assert set(body) == {"error"} and set(body["error"]) == {"code", "message"}, body
    return str(body["error"]["message"])


def run_billing(api: httpx.Client, period: str = PERIOD) -> dict[str, Any]:
    """POST a billing run and poll it until it is no longer running."""
    run: dict[str, Any] = ok(api.post("/api/v1/billing-runs", json={"period": period}), 202)
    assert run["period"] == period
    deadline = time.monotonic() + 120
    while run["status"] == "running":
        assert time.monotonic() < deadline, f"billing run still running: {run}"
        time.sleep(0.05)
        run = ok(api.get(f"/api/v1/billing-runs/{run['id']}"))
    assert run["status"] == "completed", run
    assert run["finished_at"] is not None
    return run


def invoices(api: httpx.Client, **params: str) -> dict[str, dict[str, Any]]:
    """The invoices of November by customer id (one each, or the test fails)."""
    found = ok(api.get("/api/v1/invoices", params={"period": PERIOD, **params}))
    by_customer: dict[str, dict[str, Any]] = {}
    for invoice in found:
        assert invoice["customer_id"] not in by_customer, f"two invoices: {found}"
        by_customer[invoice["customer_id"]] = invoice
    return by_customer


def invoice(api: httpx.Client, invoice_id: str) -> dict[str, Any]:
    found: dict[str, Any] = ok(api.get(f"/api/v1/invoices/{invoice_id}"))
    return found


def component_of(line: Mapping[str, Any]) -> str:
    """The price component's name from a rated line's description
    ("gpt-4o input · input_tokens (v1)")."""
    return str(line["description"]).split(" · ")[0].removesuffix(" (v1)")


def amounts(invoice: Mapping[str, Any]) -> dict[str, int]:
    """Rated lines' amounts by component name; other lines by description."""
    result: dict[str, int] = {}
    for line in invoice["lines"]:
        name = component_of(line) if line["kind"] == "rated" else line["description"]
        assert name not in result, invoice["lines"]
        result[name] = line["amount_minor"]
    return result


def line_of(invoice: Mapping[str, Any], component: str) -> dict[str, Any]:
    (line,) = [
        item
        for item in invoice["lines"]
        if item["kind"] == "rated" and component_of(item) == component
    ]
    return dict(line)


def exceptions(api: httpx.Client, **params: str) -> list[dict[str, Any]]:
    found: list[dict[str, Any]] = ok(
        api.get("/api/v1/exceptions", params={"period": PERIOD, **params})
    )
    return found


def waive(api: httpx.Client, exception_id: str, note: str) -> dict[str, Any]:
    body = {"status": "waived", "note": note}
    waived: dict[str, Any] = ok(
        api.patch(f"/api/v1/exceptions/{exception_id}", json=body, headers=SPOOFED_ACTOR)
    )
    return waived


def finalize(api: httpx.Client, invoice_id: str) -> httpx.Response:
    return api.post(
        f"/api/v1/invoices/{invoice_id}/finalize",
        headers=SPOOFED_ACTOR,
        json={"before_period_end": True, "reason": "test: the month is not over"},
    )


def keys_anywhere(value: Any) -> set[str]:
    """Every key of every mapping inside a JSON value."""
    if isinstance(value, dict):
        return set(value) | {k for v in value.values() for k in keys_anywhere(v)}
    if isinstance(value, list):
        return {k for v in value for k in keys_anywhere(v)}
    return set()


# --- The month, set up once per test -----------------------------------------------------


@dataclass(frozen=True)
class Month:
    api: httpx.Client
    server: RunningServer
    book_id: str
    year: int  # the year invoice numbers carry: the year of finalization

    def number(self, n: int) -> str:
        return f"INV-{self.year}-{n:06d}"


@pytest.fixture
def month(server: RunningServer) -> Iterator[Month]:
    """Customers and prices through the API, the month's spans through OTLP/HTTP."""
    with httpx.Client(base_url=server.api_url, headers=server.admin_headers, timeout=30) as api:
        for customer_id, name in REGISTERED.items():
            body = {"id": customer_id, "name": name, "email": f"billing@{customer_id}.test"}
            ok(api.post("/api/v1/customers", json=body), 201)
        book = ok(
            api.post("/api/v1/price-books", json={"name": "standard", "currency": "USD"}), 201
        )
        assert book["is_default"] is True  # the tenant's first book
        ok(
            api.post(
                f"/api/v1/price-books/{book['id']}/versions",
                json={"effective_from": "2026-01-01T00:00:00Z", "components": COMPONENTS},
            ),
            201,
        )
        send_spans(server, MONTH)
        yield Month(api=api, server=server, book_id=book["id"], year=datetime.now(UTC).year)


# --- Known bugs ----------------------------------------------------------------------------

# Every test below reads or changes invoices through those endpoints.


class TestTheApiAnswersAfterCommitting:
    def test_a_write_is_visible_once_answered(self, server: RunningServer) -> None:
        """What every review step below relies on: a write is committed before it is
        answered, so the next request reads it (the session dependency commits before the
        response is sent)."""
        with httpx.Client(base_url=server.api_url, headers=server.admin_headers, timeout=30) as api:
            missed = []
            for n in range(100):
                body = {"id": f"customer-{n}", "name": f"Customer {n}"}
                ok(api.post("/api/v1/customers", json=body), 201)
                if api.get(f"/api/v1/customers/customer-{n}").status_code != 200:
                    missed.append(n)
        assert missed == []


class TestBillingRunOverRest:
    def test_post_then_poll_until_completed(self, month: Month) -> None:
        answer = month.api.post("/api/v1/billing-runs", json={"period": PERIOD})
        assert answer.status_code == 202, answer.text
        run = answer.json()
        assert (run["period"], run["status"]) == (PERIOD, "running")
        deadline = time.monotonic() + 60
        while run["status"] == "running" and time.monotonic() < deadline:
            time.sleep(0.05)
            run = ok(month.api.get(f"/api/v1/billing-runs/{run['id']}"))
        assert (run["status"], run["drafted"]) == ("completed", 4)

    def test_bad_period_is_refused(self, month: Month) -> None:
        for period in ("2026-13", "2026-1", "november"):
            error(month.api.post("/api/v1/billing-runs", json={"period": period}), 422)
        error(month.api.post("/api/v1/billing-runs", json={"period": PERIOD, "x": 1}), 422)
        error(month.api.get("/api/v1/billing-runs/no-such-run"), 404)


class TestBadAmounts:
    def test_amounts_beyond_any_invoice_are_refused(self, month: Month, engine: Engine) -> None:
        # Drafted in-process on the server's database: this is not about billing runs.
        with Session(engine) as session, session.begin():
            run_id = start_run(session, staff(month.server.tenant.tenant_id), PERIOD).id
        execute_run(engine, month.server.tenant.tenant_id, run_id)
        acme = invoice(month.api, invoices(month.api)["acme"]["id"])
        output = line_of(acme, "gpt-4o output")
        lines_url = f"/api/v1/invoices/{acme['id']}/lines"
        too_much = [
            ("patch", f"{lines_url}/{output['id']}", {"amount": "1e30", "reason": "typo"}),
            ("post", lines_url, {"description": "typo", "unit_price": "1e30"}),
            ("post", lines_url, {"description": "typo", "unit_price": "1", "quantity": "1e30"}),
        ]
        for method, url, body in too_much:
            # A fresh connection each: the server drops the connection after a 500.
            with httpx.Client(
                base_url=month.server.api_url, headers=month.server.admin_headers, timeout=30
            ) as api:
                error(api.request(method, url, json=body), 422)
        assert invoice(month.api, acme["id"])["subtotal_minor"] == ACME_SUBTOTAL


# --- Tests -------------------------------------------------------------------------------


class TestDraftsExceptionsAndFinalize:
    def test_month(self, month: Month) -> None:
        api = month.api
        run = run_billing(api)
        # acme, globex, initech registered + hooli with usage; the unattributed usage
        # has no customer to draft for.
        assert (run["total_customers"], run["processed_customers"], run["drafted"]) == (4, 4, 4)

        drafts = invoices(api)
        assert set(drafts) == {"acme", "globex", "initech", "hooli"}
        assert {d["status"] for d in drafts.values()} == {"draft"}
        assert all(d["number"] is None for d in drafts.values())
        assert all(d["currency"] == "USD" for d in drafts.values())

        acme = invoice(api, drafts["acme"]["id"])
        assert acme["period_start"].startswith("2026-11-01T00:00:00")
        assert acme["period_end"].startswith("2026-12-01T00:00:00")
        # 1 234 567 and 345 678 tokens: the Nov 1 00:00 span is in, the Dec 1 00:00 one out.
        assert line_of(acme, "gpt-4o input")["quantity"] == "1234567"
        assert line_of(acme, "gpt-4o output")["quantity"] == "345678"
        assert amounts(acme) == {"gpt-4o input": 370, "gpt-4o output": 415, "platform": 4900}
        assert line_of(acme, "gpt-4o input")["unit_price"] == "3.00"
        assert line_of(acme, "gpt-4o output")["amount"] == "4.15"
        assert (acme["subtotal_minor"], acme["credits_minor"], acme["total_minor"]) == (
            ACME_SUBTOTAL,
            0,
            ACME_SUBTOTAL,
        )
        assert acme["subtotal"] == "56.85"
        assert acme["versions"] == [1]
        assert acme["price_book_id"] == month.book_id
        # The builder's view: provider cost 309 + 346 = 655, margins 61, 69, 5030.
        assert line_of(acme, "gpt-4o input")["provider_cost_minor"] == 309
        assert line_of(acme, "gpt-4o input")["margin_minor"] == 61
        assert line_of(acme, "gpt-4o output")["provider_cost_minor"] == 346
        assert line_of(acme, "gpt-4o output")["margin_minor"] == 69
        assert (acme["provider_cost_minor"], acme["margin_minor"]) == (655, 5030)
        assert acme["exceptions"] == []

        globex = invoice(api, drafts["globex"]["id"])
        assert amounts(globex) == {"gpt-4o input": 600, "gpt-4o output": 300, "platform": 4900}
        assert globex["subtotal_minor"] == globex["total_minor"] == GLOBEX_SUBTOTAL

        initech = invoice(api, drafts["initech"]["id"])
        # 22 100 × 0.05 / 1000 = 1.105 → 111, rounded half up once on the line.
        assert amounts(initech) == {"house embeddings": 111, "platform": 4900}
        assert line_of(initech, "house embeddings")["quantity"] == "22100"
        assert initech["subtotal_minor"] == INITECH_SUBTOTAL
        assert line_of(initech, "house embeddings")["provider_cost_minor"] is None
        assert initech["provider_cost_minor"] is None and initech["margin_minor"] is None

        hooli = invoice(api, drafts["hooli"]["id"])
        assert amounts(hooli) == {"gpt-4o input": 30, "gpt-4o output": 12, "platform": 4900}
        assert hooli["subtotal_minor"] == HOOLI_SUBTOTAL

        # --- Exceptions
        found = exceptions(api)
        by_type: dict[str, list[dict[str, Any]]] = {}
        for item in found:
            by_type.setdefault(item["type"], []).append(item)
        assert sorted(by_type) == [
            "unattributed_usage",
            "unknown_provider_cost",
            "unpriced_usage",
            "unregistered_customer",
        ]
        unpriced = by_type["unpriced_usage"]
        assert len(unpriced) == 2
        assert {e["invoice_id"] for e in unpriced} == {globex["id"]}
        assert {(e["severity"], e["status"]) for e in unpriced} == {("blocking", "open")}
        assert {(e["evidence"]["meter"], e["evidence"]["quantity"]) for e in unpriced} == {
            ("input_tokens", "10000"),
            ("output_tokens", "5000"),
        }
        assert {e["evidence"]["dimensions"]["model"] for e in unpriced} == {"gpt-4o-mini"}
        (unknown,) = by_type["unknown_provider_cost"]
        assert (unknown["invoice_id"], unknown["severity"]) == (initech["id"], "warning")
        assert unknown["evidence"]["records"] == 2
        # Listed for the run, not for an invoice.
        (unregistered,) = by_type["unregistered_customer"]
        assert unregistered["invoice_id"] is None
        assert unregistered["severity"] == "warning"
        assert unregistered["evidence"] == {"customer_id": "hooli"}
        (unattributed,) = by_type["unattributed_usage"]
        assert unattributed["invoice_id"] is None
        assert unattributed["evidence"]["records"] == 2  # input and output of one span
        assert unattributed["evidence"]["quantity_micros"] == 55_000 * 10**6
        assert unattributed["evidence"]["trace_ids"] == [f"{UNATTRIBUTED_TRACE:032x}"]
        assert [e["id"] for e in globex["exceptions"]] != []

        # --- Finalize: numbers in order of finalization, blocking exceptions first
        acme_final = ok(finalize(api, acme["id"]))
        assert acme_final["status"] == "finalized"
        assert acme_final["number"] == month.number(1)
        assert acme_final["finalized_at"] is not None
        assert acme_final["total_minor"] == ACME_SUBTOTAL

        message = error(finalize(api, globex["id"]), 409)
        assert "unpriced_usage" in message
        assert invoice(api, globex["id"])["status"] == "draft"
        # A note is required to waive.
        error(api.patch(f"/api/v1/exceptions/{unpriced[0]['id']}", json={"status": "waived"}), 422)
        waived = waive(api, unpriced[0]["id"], "gpt-4o-mini was a free trial")
        assert (waived["status"], waived["resolved_by"]) == ("waived", ACTOR)
        assert waived["resolved_at"] is not None
        error(finalize(api, globex["id"]), 409)  # one blocking exception still open
        resolved = ok(
            api.patch(
                f"/api/v1/exceptions/{unpriced[1]['id']}",
                json={"status": "resolved", "note": "settled with the customer"},
            )
        )
        assert (resolved["status"], resolved["resolved_by"]) == ("resolved", ACTOR)
        globex_final = ok(finalize(api, globex["id"]))
        assert globex_final["number"] == month.number(2)
        assert globex_final["total_minor"] == GLOBEX_SUBTOTAL

        # A warning does not block.
        initech_final = ok(finalize(api, initech["id"]))
        assert initech_final["number"] == month.number(3)

        # The price version that priced a finalized invoice is locked.
        version = ok(api.get(f"/api/v1/price-books/{month.book_id}/versions/1"))
        assert version["locked_at"] is not None
        error(
            api.put(
                f"/api/v1/price-books/{month.book_id}/versions/1/components",
                json={"components": COMPONENTS},
            ),
            409,
        )

        # --- Finalized invoices are immutable
        output_line = line_of(acme_final, "gpt-4o output")
        error(
            api.patch(
                f"/api/v1/invoices/{acme['id']}/lines/{output_line['id']}",
                json={"amount": "1.00", "reason": "too late"},
            ),
            409,
        )
        error(
            api.post(
                f"/api/v1/invoices/{acme['id']}/lines",
                json={"description": "extra", "unit_price": "1.00", "reason": "x"},
            ),
            409,
        )
        error(api.post(f"/api/v1/invoices/{acme['id']}/rerate"), 409)
        error(finalize(api, acme["id"]), 409)

        # More November usage for acme arrives, and the run is repeated: the finalized
        # invoice does not change; hooli's draft is re-rated in place.
        send_spans(month.server, [Call(5, 50, nov(29), GPT4O, 1_000_000, 0, "acme")])
        before = {c: invoice(api, i["id"]) for c, i in invoices(api).items()}
        rerun = run_billing(api)
        assert rerun["drafted"] == 1  # hooli; the three finalized ones are left alone
        after = {c: invoice(api, i["id"]) for c, i in invoices(api).items()}
        assert set(after) == set(before)
        for customer_id in ("acme", "globex", "initech"):
            assert _frozen(after[customer_id]) == _frozen(before[customer_id]), customer_id
        assert after["acme"]["subtotal_minor"] == ACME_SUBTOTAL
        assert after["hooli"]["id"] == before["hooli"]["id"]
        assert after["hooli"]["subtotal_minor"] == HOOLI_SUBTOTAL
        # The waiver and the resolution of globex's exceptions still stand.
        statuses = {e["id"]: e["status"] for e in exceptions(api, invoice_id=globex["id"])}
        assert statuses == {unpriced[0]["id"]: "waived", unpriced[1]["id"]: "resolved"}


def _frozen(invoice: Mapping[str, Any]) -> dict[str, Any]:
    """What must not change on a finalized invoice."""
    return {
        "number": invoice["number"],
        "status": invoice["status"],
        "finalized_at": invoice["finalized_at"],
        "subtotal_minor": invoice["subtotal_minor"],
        "total_minor": invoice["total_minor"],
        "lines": [
            (line["id"], line["quantity"], line["amount_minor"]) for line in invoice["lines"]
        ],
    }


class TestReviewActions:
    def test_adjust_add_discount_audited_and_kept_by_reruns(self, month: Month) -> None:
        api = month.api
        run_billing(api)
        drafts = invoices(api)
        acme_id = drafts["acme"]["id"]
        acme = invoice(api, acme_id)
        output = line_of(acme, "gpt-4o output")
        assert output["amount_minor"] == 415

        # Adjust: 415 → 400, with a reason; the rated amount stays beside it.
        error(
            api.patch(
                f"/api/v1/invoices/{acme_id}/lines/{output['id']}",
                json={"amount": "4.00", "reason": ""},
            ),
            422,
        )
        adjusted = ok(
            api.patch(
                f"/api/v1/invoices/{acme_id}/lines/{output['id']}",
                json={"amount": "4.00", "reason": "rounding goodwill"},
                headers=SPOOFED_ACTOR,
            )
        )
        line = line_of(adjusted, "gpt-4o output")
        assert (line["amount_minor"], line["rated_amount_minor"]) == (400, 415)
        assert line["adjustment_reason"] == "rounding goodwill"
        # Margin follows the adjusted amount: 400 − 346.
        assert line["margin_minor"] == 54
        assert adjusted["subtotal_minor"] == ACME_SUBTOTAL - 15  # 5670

        # A manual line: 3 × 33.335 = 100.005 → 10001 (rounded once, half up).
        manual = ok(
            api.post(
                f"/api/v1/invoices/{acme_id}/lines",
                json={
                    "description": "Onboarding workshop",
                    "quantity": "3",
                    "unit_price": "33.335",
                    "reason": "signed SOW",
                },
                headers=SPOOFED_ACTOR,
            ),
            201,
        )
        assert manual["subtotal_minor"] == 5670 + 10001  # 15671
        # A discount, entered positive, billed negative: −2500.
        discounted = ok(
            api.post(
                f"/api/v1/invoices/{acme_id}/lines",
                json={
                    "description": "Launch discount",
                    "unit_price": "25.00",
                    "discount": True,
                    "reason": "launch promotion",
                },
                headers=SPOOFED_ACTOR,
            ),
            201,
        )
        assert discounted["subtotal_minor"] == 15671 - 2500  # 13171
        assert discounted["total_minor"] == 13171
        review_amounts = amounts(discounted)
        assert review_amounts == {
            "gpt-4o input": 370,
            "gpt-4o output": 400,
            "platform": 4900,
            "Onboarding workshop": 10001,
            "Launch discount": -2500,
        }
        kinds = {line["description"]: line["kind"] for line in discounted["lines"]}
        assert (kinds["Onboarding workshop"], kinds["Launch discount"]) == ("manual", "discount")
        # Rated lines are adjusted, never removed.
        error(
            api.delete(f"/api/v1/invoices/{acme_id}/lines/{output['id']}", params={"reason": "no"}),
            409,
        )

        # Re-rating the draft by hand changes nothing here, and is audited.
        by_hand = ok(api.post(f"/api/v1/invoices/{acme_id}/rerate", headers=SPOOFED_ACTOR))
        assert amounts(by_hand) == review_amounts
        assert by_hand["subtotal_minor"] == 13171

        # Re-running the month is idempotent: one draft each, the same totals, manual
        # lines kept, the adjustment re-applied on the re-rated line.
        before_ids = {c: i["id"] for c, i in invoices(api).items()}
        before_lines = {line["id"] for line in discounted["lines"] if line["kind"] != "rated"}
        globex_exceptions = exceptions(api, invoice_id=drafts["globex"]["id"])
        waive(api, globex_exceptions[0]["id"], "trial usage")
        for _ in range(2):
            run_billing(api)
            again = invoices(api)
            assert {c: i["id"] for c, i in again.items()} == before_ids
            assert {c: i["subtotal_minor"] for c, i in again.items()} == {
                "acme": 13171,
                "globex": GLOBEX_SUBTOTAL,
                "initech": INITECH_SUBTOTAL,
                "hooli": HOOLI_SUBTOTAL,
            }
            rerated = invoice(api, acme_id)
            assert amounts(rerated) == review_amounts
            assert {
                line["id"] for line in rerated["lines"] if line["kind"] != "rated"
            } == before_lines
            line = line_of(rerated, "gpt-4o output")
            assert (line["amount_minor"], line["rated_amount_minor"]) == (400, 415)
            assert line["adjustment_reason"] == "rounding goodwill"
            # The same two exceptions of globex, the waiver kept.
            now_globex = exceptions(api, invoice_id=drafts["globex"]["id"])
            assert {e["id"]: e["status"] for e in now_globex} == {
                globex_exceptions[0]["id"]: "waived",
                globex_exceptions[1]["id"]: "open",
            }
            # 2 unpriced (globex), 1 unknown cost (initech), unattributed, unregistered.
            assert len(exceptions(api)) == 5
        # Remove the discount (back to 15671).
        discount_id = next(line["id"] for line in discounted["lines"] if line["kind"] == "discount")
        removed = ok(
            api.delete(
                f"/api/v1/invoices/{acme_id}/lines/{discount_id}",
                params={"reason": "promotion ended"},
                headers=SPOOFED_ACTOR,
            )
        )
        assert removed["subtotal_minor"] == 15671

        # The audit log: who, what, before, after, why.
        trail = ok(api.get(f"/api/v1/invoices/{acme_id}/audit"))
        assert [entry["action"] for entry in trail] == [
            "adjust_line",
            "add_line",
            "add_discount",
            "rerate",
            "remove_line",
        ]
        adjust, add, discount, rerate, remove = trail
        assert (rerate["before"], rerate["after"]) == (
            {"subtotal_minor": 13171},
            {"subtotal_minor": 13171},
        )
        assert {entry["actor"] for entry in trail} == {ACTOR}
        assert adjust["reason"] == "rounding goodwill"
        assert adjust["before"]["amount_minor"] == 415
        assert adjust["before"]["rated_amount_minor"] is None
        assert adjust["after"]["amount_minor"] == 400
        assert adjust["after"]["rated_amount_minor"] == 415
        assert add["before"] is None
        assert add["after"]["amount_minor"] == 10001
        assert add["after"]["description"] == "Onboarding workshop"
        assert add["reason"] == "signed SOW"
        assert discount["after"]["amount_minor"] == -2500
        assert remove["before"]["amount_minor"] == -2500 and remove["after"] is None
        assert remove["reason"] == "promotion ended"

        # Finalize adds the last entry; nothing changes afterwards.
        final = ok(finalize(api, acme_id))
        assert final["number"] == month.number(1)
        assert final["subtotal_minor"] == final["total_minor"] == 15671
        trail = ok(api.get(f"/api/v1/invoices/{acme_id}/audit"))
        assert trail[-1]["action"] == "finalize"
        assert trail[-1]["after"]["number"] == month.number(1)
        assert trail[-1]["after"]["total_minor"] == 15671
        run_billing(api)
        assert amounts(invoice(api, acme_id)) == {
            "gpt-4o input": 370,
            "gpt-4o output": 400,
            "platform": 4900,
            "Onboarding workshop": 10001,
        }


class TestOneClickFixes:
    def test_register_customer_redrafts(self, month: Month) -> None:
        api = month.api
        run = run_billing(api)
        hooli = invoices(api)["hooli"]
        body = {"customer_id": "hooli", "name": "Hooli XYZ", "email": "ap@hooli.test"}
        registered = ok(api.post(f"/api/v1/billing-runs/{run['id']}/register-customer", json=body))
        assert registered["id"] == hooli["id"]  # re-drafted in place
        assert registered["customer_id"] == "hooli"
        assert registered["subtotal_minor"] == HOOLI_SUBTOTAL
        assert ok(api.get("/api/v1/customers/hooli"))["name"] == "Hooli XYZ"
        error(api.post(f"/api/v1/billing-runs/{run['id']}/register-customer", json=body), 409)
        error(api.post("/api/v1/billing-runs/nope/register-customer", json=body), 404)

        # Registering settled the run's exception at once, by whoever registered.
        (unregistered,) = [e for e in exceptions(api) if e["type"] == "unregistered_customer"]
        assert (unregistered["status"], unregistered["resolved_by"]) == ("resolved", ACTOR)
        run_billing(api)
        assert set(invoices(api)) == {"acme", "globex", "initech", "hooli"}

    def test_map_customer_and_assign_unattributed(self, month: Month) -> None:
        api = month.api
        run = run_billing(api)
        assert "hooli" in invoices(api)
        error(
            api.post(
                f"/api/v1/billing-runs/{run['id']}/map-customer",
                json={"from_customer_id": "hooli", "to_customer_id": "nobody"},
            ),
            404,
        )
        mapped = ok(
            api.post(
                f"/api/v1/billing-runs/{run['id']}/map-customer",
                json={"from_customer_id": "hooli", "to_customer_id": "acme"},
            )
        )
        # acme now has hooli's usage: input 1 334 567 × 3 / 10^6 = 4.003701 → 400;
        # output 355 678 × 12 / 10^6 = 4.268136 → 427; platform 4900. Subtotal 5727.
        assert mapped["customer_id"] == "acme"
        assert amounts(mapped) == {"gpt-4o input": 400, "gpt-4o output": 427, "platform": 4900}
        assert mapped["subtotal_minor"] == 5727
        assert set(invoices(api)) == {"acme", "globex", "initech"}  # hooli's draft dropped
        usage = ok(api.get("/api/v1/usage", params={"customer_id": "hooli"}))
        assert usage["rows"] == []

        trace = f"{UNATTRIBUTED_TRACE:032x}"
        error(
            api.post(
                f"/api/v1/billing-runs/{run['id']}/assign-unattributed",
                json={"trace_ids": [trace], "customer_id": "nobody"},
            ),
            404,
        )
        assigned = ok(
            api.post(
                f"/api/v1/billing-runs/{run['id']}/assign-unattributed",
                json={"trace_ids": [trace], "customer_id": "initech"},
            )
        )
        # initech: house 111; gpt-4o input 50 000 × 3 / 10^6 = 0.15 → 15; output
        # 5 000 × 12 / 10^6 = 0.06 → 6; platform 4900. Subtotal 5032.
        assert amounts(assigned) == {
            "gpt-4o input": 15,
            "gpt-4o output": 6,
            "house embeddings": 111,
            "platform": 4900,
        }
        assert assigned["subtotal_minor"] == 5032

        run_billing(api)
        totals = {c: i["subtotal_minor"] for c, i in invoices(api).items()}
        assert totals == {"acme": 5727, "globex": GLOBEX_SUBTOTAL, "initech": 5032}
        run_level = {e["type"]: e for e in exceptions(api) if e["invoice_id"] is None}
        assert set(run_level) == {"unattributed_usage", "unregistered_customer"}
        # Mapping settled the unregistered id at once; the unattributed usage is gone
        # once the run sees it is assigned.
        assert run_level["unregistered_customer"]["resolved_by"] == "admin"
        assert run_level["unattributed_usage"]["resolved_by"] == "system"
        for item in run_level.values():
            assert item["status"] == "resolved", item


class TestExportsVoidAndCreditNotes:
    def test_exports_carry_no_cost_and_show_the_brand(self, month: Month) -> None:
        api = month.api
        brand = "Rocket & Co <Agents>"
        error(api.patch("/api/v1/billing-settings", json={"brand_color": "red; }"}), 422)
        settings = ok(
            api.patch(
                "/api/v1/billing-settings", json={"brand_name": brand, "brand_color": "#ff6600"}
            )
        )
        assert (settings["brand_name"], settings["brand_color"]) == (brand, "#ff6600")
        assert ok(api.get("/api/v1/billing-settings"))["brand_name"] == brand

        run_billing(api)
        acme_id = invoices(api)["acme"]["id"]
        final = ok(finalize(api, acme_id))
        assert final["provider_cost_minor"] == 655  # the builder's view has it

        exported = ok(api.get(f"/api/v1/invoices/{acme_id}/export.json"))
        keys = keys_anywhere(exported)
        assert not {k for k in keys if "cost" in k or "margin" in k}, keys
        assert not {"component_id", "details", "price_book_id", "exceptions"} & keys
        assert exported["number"] == month.number(1)
        assert (exported["subtotal"], exported["credits"], exported["total"]) == (
            "56.85",
            "0.00",
            "56.85",
        )
        assert [line["amount"] for line in exported["lines"]] == ["3.70", "4.15", "49.00"]

        response = api.get(f"/api/v1/invoices/{acme_id}/export.csv")
        assert response.status_code == 200
        assert response.headers["content-type"].startswith("text/csv")
        assert month.number(1) in response.headers["content-disposition"]
        assert "cost" not in response.text.lower() and "margin" not in response.text.lower()
        rows = list(csv.reader(io.StringIO(response.text)))
        assert rows[0] == [
            "invoice",
            "period",
            "line",
            "kind",
            "description",
            "meter",
            "quantity",
            "unit_price",
            "per_units",
            "amount",
            "currency",
        ]
        assert [(r[0], r[1], r[2], r[6], r[7], r[8], r[9], r[10]) for r in rows[1:]] == [
            (month.number(1), PERIOD, "1", "1234567", "3.00", "1000000", "3.70", "USD"),
            (month.number(1), PERIOD, "2", "345678", "12.00", "1000000", "4.15", "USD"),
            (month.number(1), PERIOD, "3", "1", "49.00", "1", "49.00", "USD"),
        ]

        page = api.get(f"/api/v1/invoices/{acme_id}/invoice.html")
        assert page.status_code == 200
        assert page.headers["content-type"].startswith("text/html")
        html = page.text
        assert "Rocket &amp; Co &lt;Agents&gt;" in html  # escaped, never raw markup
        assert brand not in html
        assert "#ff6600" in html
        assert month.number(1) in html
        assert "Acme Inc" in html
        assert "56.85" in html
        shown = html.split("</style>", 1)[1].lower()  # the page without its stylesheet
        assert "margin" not in shown and "cost" not in shown

        # A draft renders too, marked as a draft.
        draft_html = api.get(f"/api/v1/invoices/{invoices(api)['globex']['id']}/invoice.html")
        assert "(draft)" in draft_html.text

    def test_void_and_credit_notes(self, month: Month) -> None:
        api = month.api
        run_billing(api)
        drafts = invoices(api)
        acme_id, initech_id = drafts["acme"]["id"], drafts["initech"]["id"]
        # Only finalized invoices are voided or credited.
        error(api.post(f"/api/v1/invoices/{acme_id}/void", json={"reason": "dup"}), 409)
        error(
            api.post(f"/api/v1/invoices/{acme_id}/credit-notes", json={"reason": "x"}),
            409,
        )
        ok(finalize(api, acme_id))
        ok(finalize(api, initech_id))

        # Void with a reason: the number stays, the status changes, once.
        error(api.post(f"/api/v1/invoices/{acme_id}/void", json={"reason": ""}), 422)
        voided = ok(
            api.post(
                f"/api/v1/invoices/{acme_id}/void",
                json={"reason": "issued to the wrong entity"},
                headers=SPOOFED_ACTOR,
            )
        )
        assert voided["status"] == "void"
        assert voided["number"] == month.number(1)
        assert voided["void_reason"] == "issued to the wrong entity"
        assert voided["voided_at"] is not None
        error(api.post(f"/api/v1/invoices/{acme_id}/void", json={"reason": "again"}), 409)
        error(
            api.post(f"/api/v1/invoices/{acme_id}/credit-notes", json={"reason": "x"}),
            409,
        )
        trail = ok(api.get(f"/api/v1/invoices/{acme_id}/audit"))
        assert [e["action"] for e in trail] == ["finalize", "void"]
        assert trail[-1]["before"] == {"status": "finalized"}
        assert trail[-1]["after"] == {"status": "void"}
        assert trail[-1]["reason"] == "issued to the wrong entity"
        # A re-run leaves the void invoice as it is.
        run_billing(api)
        still = invoice(api, acme_id)
        assert (still["status"], still["number"]) == ("void", month.number(1))

        # Credit notes on initech's 5011: 10.00 first, then more than is left (40.12
        # left: 40.13 refused), then the rest (omitted amount = what is left), then none.
        notes_url = f"/api/v1/invoices/{initech_id}/credit-notes"
        first = ok(api.post(notes_url, json={"amount": "10.00", "reason": "outage"}), 201)
        assert first["amount_minor"] == 1000
        assert first["number"] == f"INV-CN-{month.year}-000001"
        error(api.post(notes_url, json={"amount": "40.13", "reason": "too much"}), 422)
        error(api.post(notes_url, json={"amount": "0", "reason": "nothing"}), 422)
        error(api.post(notes_url, json={"amount": "5.00", "reason": ""}), 422)
        rest = ok(api.post(notes_url, json={"reason": "contract ended"}), 201)
        assert rest["amount_minor"] == INITECH_SUBTOTAL - 1000  # 4011
        assert rest["number"] == f"INV-CN-{month.year}-000002"
        error(api.post(notes_url, json={"reason": "once more"}), 422)
        error(api.post(notes_url, json={"amount": "0.01", "reason": "a cent"}), 422)
        listed = ok(api.get(notes_url))
        assert [n["amount_minor"] for n in listed] == [1000, 4011]
        assert sum(n["amount_minor"] for n in listed) == INITECH_SUBTOTAL
        # A credit note does not change the invoice itself.
        assert invoice(api, initech_id)["total_minor"] == INITECH_SUBTOTAL
        # Invoice numbers and credit-note numbers are separate sequences.
        globex = drafts["globex"]
        for item in exceptions(api, invoice_id=globex["id"]):
            waive(api, item["id"], "trial")
        assert ok(finalize(api, globex["id"]))["number"] == month.number(3)


class TestPrepaidCredits:
    def test_credit_grant_applied_at_finalization(self, month: Month) -> None:
        api = month.api
        ok(
            api.post(
                "/api/v1/customers/acme/credits",
                json={"amount": "20.00", "currency": "USD", "description": "starter pack"},
            ),
            201,
        )
        ok(
            api.post(
                "/api/v1/customers/initech/credits",
                json={"amount": "100.00", "currency": "USD"},
            ),
            201,
        )
        # Credit in another currency does not pay a USD invoice.
        ok(
            api.post("/api/v1/customers/globex/credits", json={"amount": "30", "currency": "EUR"}),
            201,
        )
        run_billing(api)
        drafts = invoices(api)
        # A draft previews the credit finalizing would draw; nothing is drawn yet.
        acme = drafts["acme"]
        assert (acme["subtotal_minor"], acme["credits_minor"], acme["total_minor"]) == (
            ACME_SUBTOTAL,
            2000,
            ACME_SUBTOTAL - 2000,  # 3685
        )
        balance = ok(api.get("/api/v1/customers/acme/credits/balance"))
        assert balance["balances"][0]["balance_minor"] == 2000

        final = ok(finalize(api, acme["id"]))
        # total = subtotal − credits = 5685 − 2000 = 3685
        assert (final["subtotal_minor"], final["credits_minor"], final["total_minor"]) == (
            5685,
            2000,
            3685,
        )
        assert (final["credits"], final["total"]) == ("20.00", "36.85")
        balance = ok(api.get("/api/v1/customers/acme/credits/balance"))
        assert balance["balances"][0]["balance_minor"] == 0
        exported = ok(api.get(f"/api/v1/invoices/{acme['id']}/export.json"))
        assert (exported["credits_minor"], exported["total_minor"]) == (2000, 3685)
        assert "Prepaid credits" in api.get(f"/api/v1/invoices/{acme['id']}/invoice.html").text

        # initech's 100.00 more than covers 50.11: total 0, 49.89 left.
        initech = ok(finalize(api, drafts["initech"]["id"]))
        assert (initech["subtotal_minor"], initech["credits_minor"], initech["total_minor"]) == (
            INITECH_SUBTOTAL,
            INITECH_SUBTOTAL,
            0,
        )
        (grant,) = ok(api.get("/api/v1/customers/initech/credits"))
        assert grant["remaining_minor"] == 10000 - INITECH_SUBTOTAL  # 4989
        # Voiding gives the credit back.
        ok(api.post(f"/api/v1/invoices/{initech['id']}/void", json={"reason": "re-issue"}))
        (grant,) = ok(api.get("/api/v1/customers/initech/credits"))
        assert grant["remaining_minor"] == 10000

        # globex's EUR credit is not drawn by its USD invoice.
        globex = drafts["globex"]
        assert (globex["credits_minor"], globex["total_minor"]) == (0, GLOBEX_SUBTOTAL)


class TestChurnedCustomer:
    """umbrella, on a book without fees, used October and nothing since. Its October is
    finalized; then late October usage arrives; November must bill it (adjust_next) or
    report it (exception_only), never drop it. dormant, on the same book, never used
    anything: a registered customer with nothing to bill gets no invoice.

    Book "usage only" (USD): gpt-4o input 3.00 and output 12.00 per 1 000 000, no fee.
    - October as finalized: 1 000 000 input → 3.00 → 300; 100 000 output → 1.20 → 120: 420.
    - Late (Oct 25, sent after finalizing): 250 000 input, 400 output. October re-rated:
      input 1 250 000 → 3.75 → 375; output 100 400 → 1.2048 → 120: 495. Adjustment
      495 − 420 = 75.
    """

    @pytest.mark.parametrize("policy", ["adjust_next", "exception_only"])
    def test_late_october_usage_of_a_customer_idle_in_november(
        self, month: Month, policy: str
    ) -> None:
        api = month.api
        ok(api.patch("/api/v1/billing-settings", json={"late_usage_policy": policy}))
        book = ok(
            api.post("/api/v1/price-books", json={"name": "usage only", "currency": "USD"}), 201
        )
        ok(
            api.post(
                f"/api/v1/price-books/{book['id']}/versions",
                json={"effective_from": "2026-01-01T00:00:00Z", "components": COMPONENTS[:2]},
            ),
            201,
        )
        for customer_id in ("umbrella", "dormant"):
            ok(api.post("/api/v1/customers", json={"id": customer_id, "name": customer_id}), 201)
            ok(
                api.put(
                    f"/api/v1/customers/{customer_id}/price-book",
                    json={"price_book_id": book["id"]},
                )
            )
        october = datetime(2026, 10, 20, tzinfo=UTC)
        send_spans(month.server, [Call(50, 50, october, GPT4O, 1_000_000, 100_000, "umbrella")])
        run_billing(api, "2026-10")
        in_october = ok(api.get("/api/v1/invoices", params={"period": "2026-10"}))
        by_customer = {i["customer_id"]: i for i in in_october}
        # acme, globex, initech: the platform fee; umbrella its usage; dormant nothing.
        assert set(by_customer) == {"acme", "globex", "initech", "umbrella"}
        assert by_customer["umbrella"]["subtotal_minor"] == 420
        finalized = ok(finalize(api, by_customer["umbrella"]["id"]))
        assert finalized["number"] == month.number(1)

        late = datetime(2026, 10, 25, tzinfo=UTC)
        send_spans(month.server, [Call(51, 51, late, GPT4O, 250_000, 400, "umbrella")])
        for _ in range(2):  # a re-run converges
            run = run_billing(api)
            # Registered acme, globex, initech, umbrella, dormant, plus hooli's usage.
            assert run["total_customers"] == 6
            drafts = invoices(api)
            assert "dormant" not in drafts
            if policy == "adjust_next":
                assert run["drafted"] == 5
                umbrella = invoice(api, drafts["umbrella"]["id"])
                assert amounts(umbrella) == {"Adjustment for 2026-10 (usage received late)": 75}
                (line,) = umbrella["lines"]
                assert (line["kind"], line["adjusts_period"]) == ("prior_period", "2026-10")
                assert (umbrella["subtotal_minor"], umbrella["total_minor"]) == (75, 75)
                (warning,) = [e for e in umbrella["exceptions"] if e["type"] == "late_usage"]
                assert warning["evidence"]["invoice"] == month.number(1)
                assert (
                    warning["evidence"]["invoiced_minor"],
                    warning["evidence"]["rerated_minor"],
                    warning["evidence"]["adjustment_minor"],
                ) == (420, 495, 75)
            else:
                assert run["drafted"] == 4
                assert "umbrella" not in drafts  # nothing billed in November
                (raised,) = exceptions(api, period="2026-10", invoice_id=finalized["id"])
                assert (raised["type"], raised["status"]) == ("late_usage", "open")
                assert raised["evidence"] == {"late_records": 2, "late_spans": 1}
                assert month.number(1) in raised["message"]
        # October itself never changes.
        after = invoice(api, finalized["id"])
        assert (after["status"], after["subtotal_minor"]) == ("finalized", 420)


class TestMoneyEnteredByHand:
    """One rule for money a person enters: refused (422) when finer than the currency's
    minor unit, never rounded; unit prices may be finer (up to 12 places)."""

    def test_amounts_finer_than_the_minor_unit_are_refused(self, month: Month) -> None:
        api = month.api
        run_billing(api)
        acme_id = invoices(api)["acme"]["id"]
        output = line_of(invoice(api, acme_id), "gpt-4o output")
        line_url = f"/api/v1/invoices/{acme_id}/lines/{output['id']}"

        # A line adjustment of 4.005 USD would need rounding (it was rounded to 401 before).
        message = error(api.patch(line_url, json={"amount": "4.005", "reason": "deal"}), 422)
        assert "4.005" in message and "USD" in message and "2 decimal places" in message
        assert invoice(api, acme_id)["subtotal_minor"] == ACME_SUBTOTAL  # unchanged
        # 4.100 is exactly 4.10: trailing zeros are no extra precision.
        adjusted = ok(api.patch(line_url, json={"amount": "4.100", "reason": "deal"}))
        assert line_of(adjusted, "gpt-4o output")["amount_minor"] == 410

        # (A manual line is quantity × unit price, a price like any other, rounded once
        # like every line: see TestReviewActions.)
        # 5685 − 415 + 410 = 5680
        assert invoice(api, acme_id)["subtotal_minor"] == 5680

        # Credit notes: 1.001 refused, 1.00 credited as 100.
        ok(finalize(api, acme_id))
        notes_url = f"/api/v1/invoices/{acme_id}/credit-notes"
        error(api.post(notes_url, json={"amount": "1.001", "reason": "sla"}), 422)
        note = ok(api.post(notes_url, json={"amount": "1.00", "reason": "sla"}), 201)
        assert note["amount_minor"] == 100

    def test_fees_and_commitments_are_exact_in_the_book_currency(self, month: Month) -> None:
        api = month.api
        versions_url = f"/api/v1/price-books/{month.book_id}/versions"
        after = {"effective_from": "2027-01-01T00:00:00Z"}
        fee = {"name": "platform", "charge": "flat_fee", "amount": "49.005"}
        message = error(api.post(versions_url, json={**after, "components": [fee]}), 422)
        assert "'platform' amount 49.005" in message
        tiered: dict[str, Any] = {
            "name": "input",
            "meter": "input_tokens",
            "charge": "graduated",
            "per_units": 1_000_000,
            "tiers": [
                # A unit price finer than a cent is a price, not an amount: accepted.
                {"up_to": 1_000_000, "unit_price": "2.123456789012"},
                {"up_to": None, "unit_price": "1", "flat_fee": "5.001"},
            ],
        }
        message = error(api.post(versions_url, json={**after, "components": [tiered]}), 422)
        assert "tier 2 flat_fee 5.001" in message
        tiered["tiers"][1]["flat_fee"] = "5.00"
        ok(api.post(versions_url, json={**after, "components": [tiered]}), 201)
        replace_url = f"{versions_url}/2/components"
        error(api.put(replace_url, json=[fee]), 422)

        # In yen a commitment has no decimals: 100.5 refused, 100 accepted.
        yen = ok(api.post("/api/v1/price-books", json={"name": "yen", "currency": "JPY"}), 201)
        minimum = {"name": "commitment", "charge": "minimum", "amount": "100.5"}
        body = {"effective_from": "2026-01-01T00:00:00Z", "components": [minimum]}
        yen_versions = f"/api/v1/price-books/{yen['id']}/versions"
        assert "whole units" in error(api.post(yen_versions, json=body), 422)
        minimum["amount"] = "100"
        ok(api.post(yen_versions, json=body), 201)

        # An override bills in the customer's book currency (acme: the USD default).
        override = {"effective_from": "2026-11-01T00:00:00Z", "components": [fee]}
        error(api.post("/api/v1/customers/acme/overrides", json=override), 422)
        assert ok(api.get("/api/v1/customers/acme/overrides")) == []
