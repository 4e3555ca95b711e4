"""`GET/PATCH /api/v1/tenant` and `agentmeter tenant set-customer-keys` against a running
`agentmeter serve` on SQLite and PostgreSQL: the customer attribute keys a tenant sets are
the ones the receivers read from the next export on (a Vercel AI SDK span naming its
customer in `ai.telemetry.metadata.*`)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.conftest import RunningServer
from tests.otlp_builders import export_request, span
from tests.polling import wait_until
from tests.usage_queries import usage_table

AGENTMETER = Path(sys.executable).with_name("agentmeter")
VERCEL_KEY = "ai.telemetry.metadata.customerId"


def tenant_url(server: RunningServer) -> str:
    return f"{server.api_url}/api/v1/tenant"


def patch(server: RunningServer, body: Any) -> httpx.Response:
    return httpx.patch(tenant_url(server), json=body, headers=server.admin_headers, timeout=30)


def vercel_span(trace: int, customer: str) -> bytes:
    """An `ai.generateText.doGenerate` span naming its customer only in telemetry metadata."""
    return export_request(
        span(
            trace,
            1,
            {
                "ai.operationId": "ai.generateText.doGenerate",
                "ai.model.provider": "openai.responses",
                "ai.model.id": "gpt-4o-mini",
                "ai.usage.inputTokens": 120,
                "ai.usage.outputTokens": 30,
                VERCEL_KEY: customer,
            },
        )
    )


def send(server: RunningServer, body: bytes) -> None:
    response = httpx.post(
        server.traces_url,
        content=body,
        headers={**server.ingest_headers, "content-type": "application/x-protobuf"},
        timeout=30,
    )
    assert response.status_code == 200, response.text


class TestGetTenant:
    def test_answers_id_name_and_default_keys(self, server: RunningServer) -> None:
        response = httpx.get(tenant_url(server), headers=server.admin_headers, timeout=30)

        assert response.status_code == 200
        assert response.json() == {
            "id": server.tenant.tenant_id,
            "name": "test tenant",
            "customer_attribute_keys": ["agentmeter.customer.id", "customer.id"],
        }

    @pytest.mark.parametrize(
        "headers",
        [
            pytest.param({}, id="no-key"),
            pytest.param({"authorization": "Bearer am_admin_nope"}, id="unknown-key"),
        ],
    )
    def test_needs_an_admin_key(self, server: RunningServer, headers: dict[str, str]) -> None:
        response = httpx.get(tenant_url(server), headers=headers, timeout=30)

        assert response.status_code == 401
        assert response.json()["error"]["code"] == "unauthenticated"

    def test_ingest_key_is_not_an_admin_key(self, server: RunningServer) -> None:
        response = httpx.get(tenant_url(server), headers=server.ingest_headers, timeout=30)

        assert response.status_code == 401


class TestPatchTenant:
    def test_vercel_metadata_key_attributes_the_next_export(self, server: RunningServer) -> None:
        send(server, vercel_span(1, "acme"))  # before: the key is not a customer key
        wait_until(lambda: bool(usage_table(server)), timeout=30, what="first export stored")

        response = patch(server, {"customer_attribute_keys": [VERCEL_KEY, "customer.id"]})
        assert response.status_code == 200, response.text
        assert response.json()["customer_attribute_keys"] == [VERCEL_KEY, "customer.id"]
        send(server, vercel_span(2, "acme"))

        wait_until(
            lambda: ("acme", "input_tokens", "openai") in usage_table(server, "provider"),
            timeout=30,
            what="second export attributed",
        )
        assert usage_table(server, "provider") == {
            ("", "input_tokens", "openai"): "120",
            ("", "output_tokens", "openai"): "30",
            ("acme", "input_tokens", "openai"): "120",
            ("acme", "output_tokens", "openai"): "30",
        }
        got = httpx.get(tenant_url(server), headers=server.admin_headers, timeout=30).json()
        assert got["customer_attribute_keys"] == [VERCEL_KEY, "customer.id"]

    def test_empty_body_changes_nothing(self, server: RunningServer) -> None:
        response = patch(server, {})

        assert response.status_code == 200
        assert response.json()["customer_attribute_keys"] == [
            "agentmeter.customer.id",
            "customer.id",
        ]

    @pytest.mark.parametrize(
        "body",
        [
            pytest.param({"customer_attribute_keys": []}, id="empty-list"),
            pytest.param({"customer_attribute_keys": ["a", "a"]}, id="repeated"),
            pytest.param({"customer_attribute_keys": ["has space"]}, id="space"),
            pytest.param({"customer_attribute_keys": [""]}, id="empty-key"),
            pytest.param({"customer_attribute_keys": [f"k{n}" for n in range(17)]}, id="17-keys"),
            pytest.param({"customer_attribute_keys": "customer.id"}, id="not-a-list"),
            pytest.param({"customer_attribute_keys": [7]}, id="not-text"),
            pytest.param({"name": "renamed"}, id="unknown-field"),
            pytest.param(["customer.id"], id="not-an-object"),
        ],
    )
    def test_bad_body_is_a_422_and_changes_nothing(self, server: RunningServer, body: Any) -> None:
        response = patch(server, body)

        assert response.status_code == 422
        assert set(response.json()["error"]) == {"code", "message"}
        got = httpx.get(tenant_url(server), headers=server.admin_headers, timeout=30).json()
        assert got["customer_attribute_keys"] == ["agentmeter.customer.id", "customer.id"]

    def test_bad_key_is_named_with_the_rule(self, server: RunningServer) -> None:
        response = patch(server, {"customer_attribute_keys": ["customer.id", "has space"]})

        assert response.status_code == 422
        message = response.json()["error"]["message"]
        assert "'has space' is not an attribute key" in message
        assert "letters, digits and . _ - / :" in message

    def test_invalid_json_is_a_422(self, server: RunningServer) -> None:
        response = httpx.patch(
            tenant_url(server),
            content=b"{not json",
            headers={**server.admin_headers, "content-type": "application/json"},
            timeout=30,
        )

        assert response.status_code == 422
        assert "error" in response.json()


def set_customer_keys(database_url: str, *args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "AGENTMETER_DATABASE_URL": database_url}
    return subprocess.run(
        [str(AGENTMETER), "tenant", "set-customer-keys", *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


class TestSetCustomerKeysCommand:
    def test_sets_the_keys_the_api_shows(self, server: RunningServer) -> None:
        done = set_customer_keys(server.database_url, server.tenant.tenant_id, VERCEL_KEY)

        assert done.returncode == 0, done.stderr
        assert json.loads(done.stdout) == {
            "tenant_id": server.tenant.tenant_id,
            "customer_attribute_keys": [VERCEL_KEY],
        }
        got = httpx.get(tenant_url(server), headers=server.admin_headers, timeout=30).json()
        assert got["customer_attribute_keys"] == [VERCEL_KEY]

    def test_tenant_by_name(self, server: RunningServer) -> None:
        done = set_customer_keys(server.database_url, "test tenant", "customer.id")

        assert done.returncode == 0, done.stderr
        assert json.loads(done.stdout)["tenant_id"] == server.tenant.tenant_id

    def test_unknown_tenant_is_refused(self, server: RunningServer) -> None:
        done = set_customer_keys(server.database_url, "no such tenant", "customer.id")

        assert done.returncode == 1
        assert "no tenant" in done.stderr

    def test_invalid_key_is_refused(self, server: RunningServer) -> None:
        done = set_customer_keys(server.database_url, server.tenant.tenant_id, "a b")

        assert done.returncode == 2
        assert "invalid customer attribute keys" in done.stderr
