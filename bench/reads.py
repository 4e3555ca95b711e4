"""What the read-path benchmarks (`portal.py`, `read_paths.py`, `dashboard.py`) share: a year of
usage up to the end of this month, the app served by uvicorn on port 0 in this process (its
start-up heap frozen, as `agentmeter serve` does), and each read
timed one request at a time after two warm-ups, with its p50/p99/max printed and its p99
reported against the ≤ 100 ms goal on PostgreSQL. No timing is asserted anywhere."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta

import httpx
import uvicorn
from fastapi import FastAPI
from prometheus_client import CollectorRegistry
from sqlalchemy import Engine

from agentmeter.clock import utcnow
from agentmeter.command.serving import freeze_startup_heap
from agentmeter.settings import Settings
from bench.figures import report
from billing_api.app import create_app

GOAL_P99_MS = 100.0
WARM_UPS = 2


def twelve_months() -> tuple[datetime, datetime]:
    """The year of usage the read benchmarks load: twelve months up to this month's end."""
    now = utcnow()
    end = datetime(now.year + now.month // 12, now.month % 12 + 1, 1, tzinfo=UTC)
    return end - timedelta(days=365), end


def percentile(samples: Sequence[float], fraction: float) -> float:
    """The `fraction` quantile (nearest rank) of `samples`."""
    ordered = sorted(samples)
    return ordered[min(len(ordered) - 1, max(0, round(fraction * len(ordered)) - 1))]


@contextmanager
def _serving(app: FastAPI) -> Iterator[str]:
    """`app` under uvicorn on a free port of 127.0.0.1, in a thread; yields its base URL."""
    server = uvicorn.Server(
        uvicorn.Config(app, host="127.0.0.1", port=0, log_level="warning", lifespan="off")
    )
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    while not server.started:
        time.sleep(0.01)
    port = server.servers[0].sockets[0].getsockname()[1]
    freeze_startup_heap()  # as `agentmeter serve` does once it listens
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join()


@contextmanager
def app_client(
    engine: Engine,
    url: str,
    headers: dict[str, str] | None = None,
    *,
    sign_in: Callable[[httpx.Client], httpx.Response] | None = None,
) -> Iterator[httpx.Client]:
    """The app on `engine` (database `url`) served as `_serving` does, and a client of it;
    with `sign_in`, signed in by that request first (it must answer 303, as a sign-in or a
    portal link does)."""
    app = create_app(engine, CollectorRegistry(), Settings(database_url=url))
    with (
        _serving(app) as base_url,
        httpx.Client(base_url=base_url, headers=headers, timeout=600) as client,
    ):
        if sign_in is not None:
            signed_in = sign_in(client)
            assert signed_in.status_code == 303, signed_in.text
        yield client


def time_reads(
    client: httpx.Client,
    reads: Iterable[tuple[str, str]],
    requests: int,
    *,
    label: str,
    records: int,
    what: str,
) -> None:
    """GET each (name, path) `requests` times after the warm-ups; print and report it."""
    for name, path in reads:
        samples = []
        for n in range(requests + WARM_UPS):
            began = time.perf_counter()
            response = client.get(path)
            elapsed = (time.perf_counter() - began) * 1000
            assert response.status_code == 200, (path, response.status_code, response.text)
            if n >= WARM_UPS:
                samples.append(elapsed)
        p99 = percentile(samples, 0.99)
        print(
            f"  {name:28} p50={percentile(samples, 0.5):7.1f} ms  p99={p99:7.1f} ms  "
            f"max={max(samples):7.1f} ms  ({requests} requests, {len(response.content):,} bytes)"
        )
        report(f"{label}: {what} {name} p99, {records:,} records", p99, "ms",
               goal=GOAL_P99_MS if label == "postgresql" else None,
               higher_is_better=False)  # fmt: skip
