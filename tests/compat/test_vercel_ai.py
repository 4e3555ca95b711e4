"""The Vercel AI SDK in Node (tests/compat/node/agent.mjs): `ai` 6 with `@ai-sdk/openai` and
`@ai-sdk/anthropic`, and `ai` 7 with `@ai-sdk/otel`, exporting with `@opentelemetry/sdk-node`
over OTLP/HTTP (protobuf) to a real `agentmeter serve`, against the fake providers; a tool
loop of two model calls, generated and streamed.

How each names its customer (docs/compatibility.md): AI SDK 6 in telemetry metadata
(`ai.telemetry.metadata.customerId`, which the tenant adds to its customer attribute keys
through `PATCH /api/v1/tenant`); AI SDK 7 through `@ai-sdk/otel`'s `enrichSpan`, from the
call's runtime context. Providers arrive as `openai.responses`, `openai.chat`,
`anthropic.messages` (AI SDK 6) and are stored as `openai` and `anthropic`.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.compat.fake_anthropic import FakeAnthropic
from tests.compat.fake_openai_api import FakeOpenAIAPI, fake_openai_api_serving
from tests.conftest import RunningServer
from tests.usage_queries import usage_table

NODE_PROJECT = Path(__file__).with_name("node")
NODE = shutil.which("node") or "/usr/bin/node"
CUSTOMER = "acme"
VERCEL_CUSTOMER_KEY = "ai.telemetry.metadata.customerId"


@pytest.fixture(autouse=True)
def _node_project_installed() -> None:
    """Skipped without `npm ci` (scripts/test.sh runs it), except in CI, where it fails."""
    if not (NODE_PROJECT / "node_modules").is_dir():
        message = "tests/compat/node is not installed; run scripts/test.sh (npm ci)"
        if os.environ.get("CI", "").lower() not in ("", "0", "false"):
            pytest.fail(message)
        pytest.skip(message)


@pytest.fixture(scope="module")
def fake_openai_module() -> Iterator[FakeOpenAIAPI]:
    with fake_openai_api_serving() as provider:
        yield provider


@pytest.fixture
def openai_provider(fake_openai_module: FakeOpenAIAPI) -> FakeOpenAIAPI:
    fake_openai_module.clear()
    return fake_openai_module


def run_agent(
    server: RunningServer, sdk: int, provider: str, api: str, *, streamed: bool, base_url: str
) -> None:
    run = {
        "sdk": sdk,
        "provider": provider,
        "api": api,
        "streamed": streamed,
        "baseURL": base_url,
        "tracesURL": server.traces_url,
        "ingestKey": server.tenant.ingest_key,
        "customer": CUSTOMER,
    }
    done = subprocess.run(
        [NODE, "agent.mjs", json.dumps(run)],
        cwd=NODE_PROJECT,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, done.stderr[-3000:]


def name_customer_by_metadata(server: RunningServer) -> None:
    response = httpx.patch(
        f"{server.api_url}/api/v1/tenant",
        json={"customer_attribute_keys": [VERCEL_CUSTOMER_KEY, "agentmeter.customer.id"]},
        headers=server.admin_headers,
        timeout=30,
    )
    assert response.status_code == 200, response.text


STREAMED = [pytest.param(False, id="generateText"), pytest.param(True, id="streamText")]
SDKS = [pytest.param(6, id="ai6"), pytest.param(7, id="ai7")]


def expected_table(meters: dict[str, int], provider: str, sdk: int) -> dict[tuple[str, ...], str]:
    """Every meter of the provider, the tool call; the agent named only by AI SDK 7."""
    agent = "support" if sdk == 7 else ""
    return {
        **{(CUSTOMER, meter, provider, agent, ""): str(n) for meter, n in meters.items()},
        (CUSTOMER, "tool_calls", "", agent, "weather"): "1",
    }


@pytest.mark.parametrize("streamed", STREAMED)
@pytest.mark.parametrize("api", ["responses", "chat"])
@pytest.mark.parametrize("sdk", SDKS)
def test_openai(
    agentmeter: RunningServer,
    openai_provider: FakeOpenAIAPI,
    sdk: int,
    api: str,
    streamed: bool,
) -> None:
    if sdk == 6:
        name_customer_by_metadata(agentmeter)
    run_agent(agentmeter, sdk, "openai", api, streamed=streamed, base_url=openai_provider.base_url)

    calls = openai_provider.calls
    assert [(c.api, c.streamed, c.tool_call) for c in calls] == [
        (api, streamed, True),
        (api, streamed, False),
    ]
    meters = {
        "input_tokens": sum(c.usage.input_tokens for c in calls),
        "cache_read_tokens": sum(c.usage.cached_tokens for c in calls),
        "output_tokens": sum(c.usage.output_tokens for c in calls),
        "output_reasoning_tokens": sum(c.usage.reasoning_tokens for c in calls),
    }
    table = usage_table(agentmeter, "provider", "agent_name", "tool")
    assert table == expected_table(meters, "openai", sdk)


@pytest.mark.parametrize("streamed", STREAMED)
@pytest.mark.parametrize("sdk", SDKS)
def test_anthropic(
    agentmeter: RunningServer, anthropic_provider: FakeAnthropic, sdk: int, streamed: bool
) -> None:
    if sdk == 6:
        name_customer_by_metadata(agentmeter)
    run_agent(
        agentmeter, sdk, "anthropic", "", streamed=streamed, base_url=anthropic_provider.base_url
    )

    calls = anthropic_provider.calls
    assert [c.streamed for c in calls] == [streamed, streamed]
    meters = {
        "input_tokens": sum(c.usage.input_tokens for c in calls),
        "cache_read_tokens": sum(c.usage.cache_read_tokens for c in calls),
        "cache_write_tokens": sum(c.usage.cache_write_tokens for c in calls),
        "output_tokens": sum(c.usage.output_tokens for c in calls),
    }
    table = usage_table(agentmeter, "provider", "agent_name", "tool")
    assert table == expected_table(meters, "anthropic", sdk)
