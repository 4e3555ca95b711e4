"""Settings against a real `agentmeter serve` on both backends: an ingest key created in
the dashboard is shown once and ingests; revoked, the receiver refuses it. Webhook and
attribute-key input is checked beside the field. And `serve --demo` prints a dashboard URL
and a sign-in that works."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import httpx
import pytest
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from playwright.sync_api import Page, expect
from sqlalchemy import Engine
from sqlalchemy.orm import Session

from agentmeter.tables import Tenant
from tests.conftest import RunningServer
from tests.web.conftest import screenshot
from tests.web.dashboard_helpers import make_staff, sign_in


def _export(server: RunningServer, key: str) -> int:
    """POST an (empty) OTLP/HTTP trace export with `key`; the status code."""
    response = httpx.post(
        server.traces_url,
        content=ExportTraceServiceRequest().SerializeToString(),
        headers={"authorization": f"Bearer {key}", "content-type": "application/x-protobuf"},
        timeout=30,
    )
    return response.status_code


def test_ingest_key_created_shown_once_and_revoked(
    server: RunningServer, engine: Engine, page: Page, request: pytest.FixtureRequest
) -> None:
    staff = make_staff(engine, tenant=server.tenant)
    sign_in(page, server.api_url, staff.admin)
    page.get_by_role("link", name="Settings").click()
    page.get_by_role("button", name="Create ingest key").click()
    key = page.locator("#new-key").inner_text().strip()
    assert key.startswith("am_ingest_")
    screenshot(page, request, "new-key")
    assert _export(server, key) == 200

    page.goto(f"{server.api_url}/dashboard/settings")
    assert key not in page.content()  # shown once, never again
    newest = page.locator("tr[data-key]").first  # newest first
    newest.get_by_role("button", name="Revoke").click()
    expect(page.locator("tr[data-key]").first).to_contain_text("revoked")
    assert _export(server, key) == 401
    assert _export(server, server.tenant.ingest_key) == 200  # the other key is untouched

    # Attribute keys and the webhook URL: refused input shows beside the field.
    page.get_by_label("Span or resource attributes").fill("customer id with spaces")
    page.get_by_role("button", name="Save attribute keys").click()
    expect(page.locator("#err-keys")).to_contain_text(
        "'customer id with spaces' is not an attribute key: use only letters, digits and "
        ". _ - / : (no spaces)"
    )
    page.get_by_label("Span or resource attributes").fill("tenant.customer\ncustomer.id")
    page.get_by_role("button", name="Save attribute keys").click()
    with Session(engine) as session:
        tenant = session.get(Tenant, server.tenant.tenant_id)
        assert tenant is not None
        assert tenant.customer_attribute_keys == ["tenant.customer", "customer.id"]
    page.get_by_label("Endpoint URL").fill("ftp://hooks.example.com")
    page.get_by_role("button", name="Save and issue a new secret").click()
    expect(page.locator("#err-url")).to_contain_text("http")
    page.get_by_label("Endpoint URL").fill("https://hooks.example.com/agentmeter")
    page.get_by_role("button", name="Save and issue a new secret").click()
    expect(page.locator("#new-secret")).to_contain_text("whsec_")
    screenshot(page, request, "settings")


def test_settings_are_for_admins(server: RunningServer, engine: Engine, page: Page) -> None:
    staff = make_staff(engine, tenant=server.tenant)
    sign_in(page, server.api_url, staff.billing)
    expect(page.get_by_role("link", name="Settings")).to_have_count(0)
    page.goto(f"{server.api_url}/dashboard/settings")
    expect(page.locator("body.error-403")).to_be_visible()


def test_serve_demo_prints_a_dashboard_sign_in(tmp_path: Path, page: Page) -> None:
    env = {**os.environ, "AGENTMETER_DATABASE_URL": f"sqlite:///{tmp_path / 'demo.db'}"}
    command = [sys.executable, "-m", "agentmeter", "serve", "--demo",
               "--grpc-port", "0", "--http-port", "0", "--api-port", "0"]  # fmt: skip
    process = subprocess.Popen(command, env=env, stdout=subprocess.PIPE, text=True)
    try:
        assert process.stdout is not None
        events = {}
        while "ready" not in events:
            line = process.stdout.readline()
            assert line, "serve --demo exited"
            event = json.loads(line)
            events[event["event"]] = event
        url = events["ready"]["dashboard_url"]
        assert url.endswith("/dashboard/")
        demo = events["demo"]
        sign_in(page, url.removesuffix("/dashboard/"), demo["dashboard_email"],
                demo["dashboard_password"])  # fmt: skip
        expect(page.locator("tr[data-customer]")).not_to_have_count(0)
    finally:
        process.terminate()
        process.wait(timeout=30)
