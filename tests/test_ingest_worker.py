"""`agentmeter serve` runs the OTLP receivers in a supervised worker process: a crashed
worker is restarted on the same ports, a stopped server stops its worker, and a killed
server's worker lets go of the ports so the next server can take them."""

from __future__ import annotations

import httpx
import psutil
import pytest
from sqlalchemy import Engine

from tests.conftest import RunningServer
from tests.otlp_builders import export_request, llm, span
from tests.polling import wait_until
from tests.receiver_scenarios import ONE_CHAT
from tests.usage_queries import usage_table

# Process supervision and in-memory limits do not depend on the store: one backend is enough.
pytestmark = pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)


def post(server: RunningServer, body: bytes) -> int:
    try:
        response = httpx.post(
            server.traces_url,
            content=body,
            headers={**server.ingest_headers, "content-type": "application/x-protobuf"},
            timeout=30,
        )
    except httpx.TransportError:
        return 0
    return response.status_code


def worker(server: RunningServer) -> psutil.Process:
    assert server.process is not None
    (child,) = psutil.Process(server.process.pid).children()
    return child


class TestSupervision:
    def test_a_killed_worker_is_restarted_on_the_same_ports(
        self, server: RunningServer, engine: Engine
    ) -> None:
        first = worker(server)
        first.kill()
        first.wait(timeout=30)

        wait_until(lambda: post(server, ONE_CHAT.body) == 200, timeout=60, what="a new worker")

        assert worker(server).pid != first.pid
        assert usage_table(server) == ONE_CHAT.usage

    def test_stopping_the_server_stops_its_worker(self, server: RunningServer) -> None:
        child = worker(server)

        server.stop()

        child.wait(timeout=30)
        assert not child.is_running()

    def test_a_killed_server_frees_the_ports_for_the_next_one(
        self, server: RunningServer, engine: Engine
    ) -> None:
        child = worker(server)

        server.kill()
        child.wait(timeout=30)  # its standard input closed with the parent
        server.start()

        assert post(server, export_request(span(1, 1, llm(100, 20, customer="acme")))) == 200
        assert usage_table(server) == ONE_CHAT.usage
