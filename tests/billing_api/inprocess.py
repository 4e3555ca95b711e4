"""The billing API in-process (ASGI, no socket): for tests that send many requests and
are about the API's own answers, not the server around it."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

from fastapi.testclient import TestClient
from prometheus_client import CollectorRegistry
from sqlalchemy import Engine

from agentmeter.settings import Settings
from billing_api.app import create_app


@contextmanager
def api_client(
    engine: Engine, admin_key: str | None, settings: Settings | None = None
) -> Iterator[TestClient]:
    """A client of the app on `engine`, authenticated with `admin_key` if given. Server
    errors come back as 500 answers (as a real server gives them), not as exceptions."""
    app = create_app(engine, CollectorRegistry(), settings or Settings())
    headers = {"authorization": f"Bearer {admin_key}"} if admin_key else {}
    with TestClient(app, headers=headers, raise_server_exceptions=False) as client:
        yield client
