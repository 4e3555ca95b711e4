"""`agentmeter serve`: OTLP/gRPC, OTLP/HTTP and the billing API in one process and one loop."""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import signal
import sys
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor

import uvicorn
from prometheus_client import CollectorRegistry
from sqlalchemy import Engine

from agentmeter.settings import Settings
from agentmeter.tenants import TenantKeys
from billing_api.app import create_app
from billing_api.budgets.service import sweep_budgets
from billing_api.credits.service import expire_all_credits
from billing_api.stripe.events import process_events
from billing_api.stripe.gateway import StripeGateway, build_gateway
from billing_api.stripe.outbox import run_due_jobs
from billing_api.webhooks.delivery import deliver_due
from exporter.provider_costs import ProviderCostCatalog
from exporter.sql_sink import SqlUsageSink
from exporter.usage_service import usage_service_handler
from otel_processor.receiver.grpc import make_server, trace_service_handler
from otel_processor.receiver.http import OtlpHttpApp
from otel_processor.receiver.observe import ExportLog, IngestMetrics
from otel_processor.receiver.service import UsageIngest

logger = logging.getLogger("agentmeter.server")


class _Server(uvicorn.Server):
    """A uvicorn server that leaves signal handling to `serve` (two run in one loop)."""

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        yield


async def _start_http(app: object, host: str, port: int) -> tuple[_Server, asyncio.Task[None], int]:
    config = uvicorn.Config(
        app,  # type: ignore[arg-type]
        host=host,
        port=port,
        lifespan="off",
        log_level="warning",
        access_log=False,
    )
    server = _Server(config)
    task = asyncio.create_task(server.serve())
    while not server.started:
        if task.done():
            task.result()  # raises the bind error
            raise RuntimeError(f"HTTP server on {host}:{port} stopped during startup")
        await asyncio.sleep(0.01)
    bound: int = server.servers[0].sockets[0].getsockname()[1]
    return server, task, bound


def public_base_url(settings: Settings, api_port: int) -> str:
    """`AGENTMETER_PUBLIC_URL`, else the API's own address (loopback for a wildcard host)."""
    if settings.public_url:
        return settings.public_url.rstrip("/")
    host = "127.0.0.1" if settings.host in ("0.0.0.0", "::", "") else settings.host
    host = f"[{host}]" if ":" in host else host
    return f"http://{host}:{api_port}"


def run_background_jobs(engine: Engine, stripe: StripeGateway | None = None) -> None:
    """One pass of the periodic jobs; each logs its own failure and the others still run."""
    jobs: tuple[tuple[str, Callable[[Engine], object]], ...] = (
        ("budget sweep", sweep_budgets),
        ("credit expiry", expire_all_credits),
        ("webhook delivery", deliver_due),
        ("stripe events", process_events),
        ("stripe outbox", lambda engine: run_due_jobs(engine, stripe)),
    )
    for name, job in jobs:
        try:
            job(engine)
        except Exception:
            logger.exception("background job failed: %s", name)


async def _background(
    engine: Engine, stripe: StripeGateway | None, interval: float, stop: asyncio.Event
) -> None:
    """Every `interval` seconds until `stop`, run the jobs in a worker thread (they block)."""
    while True:
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), timeout=interval)
        if stop.is_set():
            return
        try:
            await asyncio.to_thread(run_background_jobs, engine, stripe)
        except Exception:
            logger.exception("background jobs failed")


async def serve(
    settings: Settings, engine: Engine, on_ready: Callable[[str], None] | None = None
) -> None:
    """Run every listener until SIGINT/SIGTERM; print one JSON ready line with the ports,
    then call `on_ready` with the API's public base URL (the demo prints links with it)."""
    executor = ThreadPoolExecutor(max_workers=settings.db_pool_size, thread_name_prefix="store")
    registry = CollectorRegistry()
    ingest = UsageIngest(
        SqlUsageSink(engine, ProviderCostCatalog()),
        TenantKeys(engine),
        max_pending=settings.max_pending_exports,
        executor=executor,
        observers=[IngestMetrics(registry), ExportLog()],
    )
    grpc_server = make_server(
        [trace_service_handler(ingest), usage_service_handler(ingest)],
        max_request_bytes=settings.max_request_bytes,
    )
    grpc_port = grpc_server.add_insecure_port(f"{settings.host}:{settings.grpc_port}")
    await grpc_server.start()
    otlp_app = OtlpHttpApp(
        ingest,
        max_request_bytes=settings.max_request_bytes,
        retry_after=settings.retry_after_seconds,
    )
    http, http_task, http_port = await _start_http(otlp_app, settings.host, settings.http_port)
    stripe = build_gateway(settings)  # the one Stripe client, built at start-up
    api, api_task, api_port = await _start_http(
        create_app(engine, registry, settings, stripe=stripe), settings.host, settings.api_port
    )
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(signum, stop.set)
    ready = {"event": "ready", "grpc_port": grpc_port, "http_port": http_port, "api_port": api_port}
    base_url = (settings.public_url or f"http://{settings.host}:{api_port}").rstrip("/")
    ready["dashboard_url"] = f"{base_url}/dashboard/"
    sys.stdout.write(json.dumps(ready) + "\n")
    sys.stdout.flush()
    logger.info("listening", extra=ready)
    if on_ready is not None:
        on_ready(public_base_url(settings, api_port))
    background = asyncio.create_task(
        _background(engine, stripe, settings.background_interval_seconds, stop)
    )
    await stop.wait()
    # Stop taking new exports; let the ones in flight commit and answer.
    http.should_exit = api.should_exit = True
    await grpc_server.stop(grace=10)
    await asyncio.gather(http_task, api_task)
    await background  # a pass in progress finishes; no new one starts
    executor.shutdown(wait=True)
