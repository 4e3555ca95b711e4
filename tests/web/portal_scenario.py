"""A builder with two customers, set up the way a builder does it: over the REST API, with
usage sent as OTLP/HTTP protobuf spans to a running `agentmeter serve`.

Figures, worked by hand (USD; price book "standard": input 3.00 and output 15.00 per
1 000 000 tokens, tool calls 0.35 each, platform 49.00 flat a month):

This period, customer acme (first period hours, so whatever today is they fall inside it):
- gpt-4o, step "plan": 400 000 in / 100 000 out; gpt-4o-mini, step XSS_STEP: 1 000 000 in /
  200 000 out; one execute_tool web_search span in step "research".
- input 1 400 000 × 3.00 / 10^6 = 4.20; output 300 000 × 15.00 / 10^6 = 4.50;
  tool calls 1 × 0.35 = 0.35; platform 49.00. Estimated total 58.05.
- Budget 100.00: 58.05 used (58.05%).
Last period, customer acme: gpt-4o 600 000 in / 50 000 out, one tool call → input 1.80,
output 0.75, tool calls 0.35, platform 49.00 = 51.90, finalized. A 100.00 credit granted
today does not pay for a period that ended before it (total 51.90; 100.00 credit left).
The builder alone sees provider cost and margin of the token lines (gpt-4o at 2.50 / 10.00
per 10^6: input 1.50 and 0.30, output 0.50 and 0.25), none equal to an amount shown.
Customer globex: 999 in / 1 out this period — never visible to acme.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

import httpx
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.proto.common.v1.common_pb2 import AnyValue, KeyValue
from opentelemetry.proto.resource.v1.resource_pb2 import Resource
from opentelemetry.proto.trace.v1.trace_pb2 import ResourceSpans, ScopeSpans, Span

from agentmeter.clock import utcnow
from agentmeter.tables import to_unix_nano
from billing_api.periods import period_containing, previous_periods
from tests.conftest import RunningServer

CUSTOMER = "acme"
OTHER_CUSTOMER = "globex"
XSS_NAME = '<script>window.__xss="name"</script><img src=x onerror="window.__xss=1">Acme Inc'
XSS_STEP = "<img src=x onerror=window.__xss=2>summarize"
XSS_BRAND = '"><script>window.__xss=3</script>Acme Agents'
BRAND_COLOR = "#aa3300"

COMPONENTS: list[dict[str, Any]] = [
    {"name": "Input tokens", "meter": "input_tokens", "charge": "per_unit",
     "unit_price": "3.00", "per_units": 1_000_000},
    {"name": "Output tokens", "meter": "output_tokens", "charge": "per_unit",
     "unit_price": "15.00", "per_units": 1_000_000},
    {"name": "Tool calls", "meter": "tool_calls", "charge": "per_unit", "unit_price": "0.35"},
    {"name": "Platform", "charge": "flat_fee", "amount": "49.00"},
]  # fmt: skip
EXPECTED_ESTIMATE = [
    ("Input tokens", "1,400,000", "$3.00 / 1,000,000", "$4.20"),
    ("Output tokens", "300,000", "$15.00 / 1,000,000", "$4.50"),
    ("Tool calls", "1", "$0.35", "$0.35"),
    ("Platform", "1", "$49.00", "$49.00"),
]
EXPECTED_ESTIMATE_TOTAL = "$58.05"
EXPECTED_INVOICE_SUBTOTAL = "$51.90"


def _value(value: str | int) -> AnyValue:
    return AnyValue(int_value=value) if isinstance(value, int) else AnyValue(string_value=value)


@dataclass
class Portal:
    """The running server, its admin client, and what the scenario created."""

    server: RunningServer
    now: datetime = field(default_factory=utcnow)
    invoice_id: str = ""
    spans: list[Span] = field(default_factory=list)

    @property
    def period(self) -> Any:
        return period_containing(self.now)

    @property
    def last_period(self) -> Any:
        return previous_periods(self.period, 1)[0]

    def api(self, method: str, path: str, **kwargs: Any) -> httpx.Response:
        return httpx.request(
            method,
            f"{self.server.api_url}{path}",
            headers=self.server.admin_headers,
            timeout=30,
            **kwargs,
        )

    def ok(self, method: str, path: str, **kwargs: Any) -> Any:
        response = self.api(method, path, **kwargs)
        assert response.status_code < 300, (path, response.status_code, response.text)
        return response.json() if response.content else None

    def link(self, customer_id: str = CUSTOMER, **body: Any) -> dict[str, Any]:
        """A new portal session for the customer: {"id", "url", "token", "expires_at"}."""
        session: dict[str, Any] = self.ok(
            "POST", f"/api/v1/customers/{customer_id}/portal-sessions", json=body
        )
        return session

    # --- Usage ---------------------------------------------------------------------------

    def _call(
        self, customer: str, at: datetime, model: str, step: str, tokens: tuple[int, int]
    ) -> None:
        attributes: dict[str, str | int] = {
            "gen_ai.operation.name": "chat",
            "gen_ai.provider.name": "openai",
            "gen_ai.request.model": model,
            "gen_ai.usage.input_tokens": tokens[0],
            "gen_ai.usage.output_tokens": tokens[1],
            "agentmeter.customer.id": customer,
            "agentmeter.step": step,
        }
        self._span(f"chat {model}", at, attributes)

    def _tool(self, customer: str, at: datetime) -> None:
        attributes: dict[str, str | int] = {
            "gen_ai.operation.name": "execute_tool",
            "gen_ai.tool.name": "web_search",
            "agentmeter.customer.id": customer,
            "agentmeter.step": "research",
        }
        self._span("execute_tool web_search", at, attributes)

    def _span(self, name: str, at: datetime, attributes: dict[str, str | int]) -> None:
        n = len(self.spans) + 1
        end = to_unix_nano(at)
        self.spans.append(
            Span(
                trace_id=n.to_bytes(16, "big"),
                span_id=n.to_bytes(8, "big"),
                name=name,
                kind=Span.SPAN_KIND_CLIENT,
                start_time_unix_nano=end - 1_000_000_000,
                end_time_unix_nano=end,
                attributes=[KeyValue(key=k, value=_value(v)) for k, v in attributes.items()],
            )
        )

    def send_spans(self) -> None:
        request = ExportTraceServiceRequest(
            resource_spans=[
                ResourceSpans(
                    resource=Resource(
                        attributes=[KeyValue(key="service.name", value=_value("agent"))]
                    ),
                    scope_spans=[ScopeSpans(spans=self.spans)],
                )
            ]
        )
        response = httpx.post(
            self.server.traces_url,
            content=request.SerializeToString(),
            headers={**self.server.ingest_headers, "content-type": "application/x-protobuf"},
            timeout=30,
        )
        assert response.status_code == 200, response.text

    # --- The whole setup -------------------------------------------------------------------

    def set_up(self) -> Portal:
        self.ok("PUT", "/api/v1/branding", json={
            "name": XSS_BRAND, "primary_color": BRAND_COLOR, "locale": "en-US",
            "support_email": "help@acme-agents.example",
            "support_url": "https://acme-agents.example/support",
        })  # fmt: skip
        self.ok("POST", "/api/v1/customers", json={"id": CUSTOMER, "name": XSS_NAME})
        self.ok("POST", "/api/v1/customers", json={"id": OTHER_CUSTOMER, "name": "Globex"})
        book = self.ok(
            "POST",
            "/api/v1/price-books",
            json={"name": "standard", "currency": "USD", "is_default": True},
        )
        self.ok(
            "POST",
            f"/api/v1/price-books/{book['id']}/versions",
            json={"effective_from": "2020-01-01T00:00:00Z", "components": COMPONENTS},
        )
        this, last = self.period.start, self.last_period.start
        self._call(CUSTOMER, this + timedelta(hours=1), "gpt-4o", "plan", (400_000, 100_000))
        self._call(
            CUSTOMER, this + timedelta(hours=26), "gpt-4o-mini", XSS_STEP, (1_000_000, 200_000)
        )
        self._tool(CUSTOMER, this + timedelta(hours=27))
        self._call(CUSTOMER, last + timedelta(days=2), "gpt-4o", "plan", (600_000, 50_000))
        self._tool(CUSTOMER, last + timedelta(days=2, hours=1))
        self._call(OTHER_CUSTOMER, this + timedelta(hours=2), "gpt-4o", "plan", (999, 1))
        self.send_spans()
        self.ok("PUT", f"/api/v1/customers/{CUSTOMER}/budget", json={
            "limit": "100", "currency": "USD", "thresholds": [50, 80, 100],
        })  # fmt: skip
        self.ok("POST", f"/api/v1/customers/{CUSTOMER}/credits", json={
            "amount": "100", "currency": "USD",
        })  # fmt: skip
        self.invoice_id = self._finalize_last_period()
        return self

    def _finalize_last_period(self) -> str:
        run = self.ok("POST", "/api/v1/billing-runs", json={"period": self.last_period.label})
        deadline = time.monotonic() + 60
        while run["status"] == "running":
            assert time.monotonic() < deadline, run
            time.sleep(0.1)
            run = self.ok("GET", f"/api/v1/billing-runs/{run['id']}")
        assert run["status"] == "completed", run
        (invoice,) = self.ok(
            "GET",
            "/api/v1/invoices",
            params={"customer_id": CUSTOMER, "period": self.last_period.label},
        )
        for exception in invoice["exceptions"]:
            if exception["status"] == "open":
                self.ok("PATCH", f"/api/v1/exceptions/{exception['id']}",
                        json={"status": "waived", "note": "test"})  # fmt: skip
        self.ok("POST", f"/api/v1/invoices/{invoice['id']}/finalize")
        return str(invoice["id"])
