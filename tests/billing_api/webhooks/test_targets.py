"""Issue 8, defect 3: no SSRF through webhooks. Non-public targets are refused when the URL
is saved (400) and again at connect time, deliveries connect to the address that was
checked, and the reply body never reaches the tenant."""

from __future__ import annotations

import ipaddress
import socket
import threading
from collections.abc import Iterator
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest
from fastapi.testclient import TestClient
from prometheus_client import CollectorRegistry
from sqlalchemy import Engine, select, update
from sqlalchemy.orm import Session

from agentmeter.settings import Settings
from agentmeter.tables import Tenant, WebhookDelivery
from agentmeter.tenants import create_tenant
from billing_api.app import create_app
from billing_api.webhooks import service as webhooks
from billing_api.webhooks.delivery import deliver_due
from billing_api.webhooks.targets import TargetRefusedError, check_url, is_public
from tests.billing_api.callers import staff

NOW = datetime(2026, 11, 15, 12, tzinfo=UTC)
SECRET_BODY = b"ami-id: i-0123 SECRET-ACCESS-KEY=abc"

REFUSED_URLS = [
    pytest.param("http://example.com/hook", "https", id="plain http"),
    pytest.param("https://127.0.0.1/hook", "not a public", id="loopback v4"),
    pytest.param("https://127.1.2.3:8443/hook", "not a public", id="loopback /8"),
    pytest.param("https://localhost/hook", "local", id="localhost"),
    pytest.param("https://LOCALHOST./hook", "local", id="localhost fqdn upper"),
    pytest.param("https://api.localhost/hook", "local", id="sub.localhost"),
    pytest.param("https://[::1]/hook", "not a public", id="loopback v6"),
    pytest.param("https://169.254.169.254/latest/meta-data", "not a public", id="metadata"),
    pytest.param("https://10.1.2.3/hook", "not a public", id="private 10/8"),
    pytest.param("https://172.16.0.1/hook", "not a public", id="private 172.16/12"),
    pytest.param("https://192.168.1.1/hook", "not a public", id="private 192.168/16"),
    pytest.param("https://100.64.0.1/hook", "not a public", id="carrier-grade NAT"),
    pytest.param("https://[fd00::1]/hook", "not a public", id="unique local v6"),
    pytest.param("https://[fe80::1]/hook", "not a public", id="link-local v6"),
    pytest.param("https://224.0.0.1/hook", "not a public", id="multicast v4"),
    pytest.param("https://[ff02::1]/hook", "not a public", id="multicast v6"),
    pytest.param("https://0.0.0.0/hook", "not a public", id="unspecified v4"),
    pytest.param("https://[::]/hook", "not a public", id="unspecified v6"),
    pytest.param("https://[::ffff:127.0.0.1]/hook", "not a public", id="v4-mapped loopback"),
    pytest.param("https://[::ffff:169.254.169.254]/", "not a public", id="v4-mapped metadata"),
    pytest.param("https://2130706433/hook", "non-public", id="decimal loopback"),
    pytest.param("https://0x7f000001/hook", "non-public", id="hex loopback"),
]


@pytest.fixture
def api(engine: Engine) -> Iterator[TestClient]:
    """The API with the default settings: private targets refused."""
    tenant = create_tenant(engine, "t")
    app = create_app(engine, CollectorRegistry(), Settings())
    headers = {"authorization": f"Bearer {tenant.admin_key}"}
    with TestClient(app, headers=headers) as client:
        yield client


@pytest.mark.parametrize(("url", "reason"), REFUSED_URLS)
def test_saving_a_non_public_url_is_refused(api: TestClient, url: str, reason: str) -> None:
    response = api.put("/api/v1/webhook", json={"url": url})
    assert response.status_code == 400, response.text
    assert response.json()["error"]["code"] == "bad_request"
    assert reason in response.json()["error"]["message"]
    assert api.get("/api/v1/webhook").json() == {"url": None}


def test_public_https_url_is_saved(api: TestClient) -> None:
    # Public literal address: accepted without any lookup.
    saved = api.put("/api/v1/webhook", json={"url": "https://93.184.215.14/hook"})
    assert saved.status_code == 200, saved.text
    # A name that does not resolve yet is accepted; every delivery resolves it again.
    saved = api.put("/api/v1/webhook", json={"url": "https://hooks.invalid/agentmeter"})
    assert saved.status_code == 200, saved.text
    assert api.put("/api/v1/webhook", json={"url": "https://x.com:99999/"}).status_code == 422


def test_classification() -> None:
    public = ["8.8.8.8", "2606:4700::1111", "::ffff:8.8.8.8", "93.184.215.14"]
    private = ["127.0.0.1", "10.0.0.1", "169.254.169.254", "::1", "fc00::1", "fe80::1",
               "224.0.0.1", "ff02::1", "0.0.0.0", "::", "::ffff:10.0.0.1", "2002:7f00:1::",
               "240.0.0.1", "192.0.2.1"]  # fmt: skip
    assert all(is_public(ipaddress.ip_address(a)) for a in public)
    assert not any(is_public(ipaddress.ip_address(a)) for a in private)
    check_url("http://127.0.0.1:8000/x", allow_private=True)  # local development
    with pytest.raises(TargetRefusedError):
        check_url("ftp://127.0.0.1/x", allow_private=True)


# --- Connect time ---------------------------------------------------------------------


class Receiver:
    """A loopback HTTP server that answers 500 with a secret body (what an internal
    service would answer) and records the Host header of each request."""

    def __init__(self) -> None:
        self.hosts: list[str] = []
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                self.rfile.read(int(self.headers.get("content-length", 0)))
                receiver.hosts.append(self.headers["host"])
                self.send_response(500, "Leaky Reason " + SECRET_BODY.decode())
                self.send_header("content-length", str(len(SECRET_BODY)))
                self.end_headers()
                self.wfile.write(SECRET_BODY)

            def log_message(self, *args: Any) -> None:
                pass

        self.http = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.port = self.http.server_address[1]
        threading.Thread(target=self.http.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.http.shutdown()
        self.http.server_close()


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    state = Receiver()
    try:
        yield state
    finally:
        state.close()


def pending_event(engine: Engine, url: str) -> str:
    """A tenant whose stored URL is `url` (as if saved before a rebind) and one event."""
    tenant = create_tenant(engine, "t")
    with Session(engine) as session, session.begin():
        webhooks.set_endpoint(
            session, staff(tenant.tenant_id), "https://93.184.215.14/", allow_private=False
        )
        session.execute(update(Tenant).where(Tenant.id == tenant.tenant_id).values(webhook_url=url))
        webhooks.enqueue_event(session, tenant.tenant_id, "test.event", {"n": 1}, now=NOW)
    return tenant.tenant_id


def delivery(engine: Engine, tenant_id: str) -> WebhookDelivery:
    with Session(engine) as session:
        return session.scalars(
            select(WebhookDelivery).where(WebhookDelivery.tenant_id == tenant_id)
        ).one()


@pytest.fixture
def rebinding_dns(monkeypatch: pytest.MonkeyPatch) -> None:
    """`rebind.example` resolves to loopback (as a hostile DNS answers after the check at
    saving); other names resolve normally. DNS itself cannot be served from here."""
    real = socket.getaddrinfo

    def getaddrinfo(host: Any, port: Any, *args: Any, **kwargs: Any) -> Any:
        if host == "rebind.example":
            return real("127.0.0.1", port, *args, **kwargs)
        return real(host, port, *args, **kwargs)

    monkeypatch.setattr(socket, "getaddrinfo", getaddrinfo)


def test_connect_time_refuses_a_name_resolving_to_loopback(
    engine: Engine, receiver: Receiver, rebinding_dns: None
) -> None:
    tenant_id = pending_event(engine, f"https://rebind.example:{receiver.port}/hook")
    report = deliver_due(engine, NOW, allow_private=False)
    assert report.retrying == 1
    assert receiver.hosts == []  # nothing was sent
    found = delivery(engine, tenant_id)
    assert found.status == "pending"
    assert found.last_error.startswith("refused: 'rebind.example' resolves to non-public 127.0.0.1")


def test_connect_time_refuses_a_stored_literal_private_address(
    engine: Engine, receiver: Receiver
) -> None:
    tenant_id = pending_event(engine, f"https://127.0.0.1:{receiver.port}/hook")
    assert deliver_due(engine, NOW, allow_private=False).retrying == 1
    assert receiver.hosts == []
    assert "not a public address" in delivery(engine, tenant_id).last_error


def test_connects_to_the_checked_address_keeping_host_and_no_body_is_stored(
    engine: Engine, receiver: Receiver, rebinding_dns: None
) -> None:
    """With private targets allowed (local development), the delivery goes to the address
    resolved once, with the original Host header; the error keeps the status only."""
    tenant_id = pending_event(engine, f"http://rebind.example:{receiver.port}/hook")
    assert deliver_due(engine, NOW, allow_private=True).retrying == 1
    assert receiver.hosts == [f"rebind.example:{receiver.port}"]
    error = delivery(engine, tenant_id).last_error
    assert error == "HTTP 500 Internal Server Error"
    assert "SECRET" not in error and "Leaky" not in error
