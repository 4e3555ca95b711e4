"""`agentmeter serve`: the billing API in this process, the OTLP receivers in a worker.

The receivers (OTLP/gRPC with `UsageService`, OTLP/HTTP) run in a child process,
`agentmeter.command.ingest_worker`, started and supervised here: decoding spans never holds the
API's interpreter lock, so REST reads stay fast under any ingest load. A worker that
crashes is restarted on the same ports; a SIGTERM/SIGINT stops the API and the worker
gracefully (exports in flight commit and are answered); if this process dies, the worker
sees its standard input close and stops too.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import shutil
import signal
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

from prometheus_client import CollectorRegistry
from prometheus_client.multiprocess import MultiProcessCollector
from pydantic import SecretStr
from sqlalchemy import Engine

from agentmeter.clock import utcnow
from agentmeter.command.serving import start_http
from agentmeter.ratelimit import key_rate_limiter
from agentmeter.settings import Settings
from billing_api.app import create_app
from billing_api.budgets.service import sweep_budgets
from billing_api.credits.service import expire_all_credits
from billing_api.dashboard.overview import refresh_figures
from billing_api.jobs.kinds import job_registry
from billing_api.jobs.worker import JobRegistry
from billing_api.jobs.worker import run_due_jobs as run_jobs
from billing_api.ratelimit import RateLimitedApi
from billing_api.stripe.events import process_events
from billing_api.stripe.gateway import StripeGateway, build_gateway
from billing_api.stripe.outbox import run_due_jobs
from billing_api.webhooks.delivery import deliver_due

logger = logging.getLogger("agentmeter.server")

WORKER_MODULE = "agentmeter.command.ingest_worker"
# A worker stopping gracefully finishes the exports in flight (grace 10 s) first.
WORKER_STOP_SECONDS = 20.0
# Startup may wait for a worker of a crashed predecessor to let go of the ports.
WORKER_START_SECONDS = 60.0


class IngestWorkerError(RuntimeError):
    """The ingest worker could not be started."""


def _env_value(value: object) -> str:
    """A setting's value as pydantic-settings reads it back from the environment."""
    if isinstance(value, SecretStr):
        return value.get_secret_value()
    if isinstance(value, str | Path):
        return str(value)
    return json.dumps(value, default=str)


class IngestSupervisor:
    """Starts the ingest worker, restarts it when it dies, stops it on request.

    The first start binds the configured ports (0: any free port); restarts reuse the
    ports the first start bound, so exporters keep their endpoint.
    """

    def __init__(self, settings: Settings, metrics_dir: str) -> None:
        self._settings = settings
        self._metrics_dir = metrics_dir
        self._process: asyncio.subprocess.Process | None = None
        self._stopping = False
        self.grpc_port = settings.grpc_port
        self.http_port = settings.http_port

    def _environment(self) -> dict[str, str]:
        """The worker's environment: this process's, with every setting as it resolved here
        (arguments included) and the ports the worker must bind."""
        values = self._settings.model_dump()
        values.update(grpc_port=self.grpc_port, http_port=self.http_port)
        environment = dict(os.environ, PROMETHEUS_MULTIPROC_DIR=self._metrics_dir)
        for name, value in values.items():
            variable = f"AGENTMETER_{name.upper()}"
            if value is None:  # unset: the default, which the environment must not override
                environment.pop(variable, None)
            else:
                environment[variable] = _env_value(value)
        return environment

    async def start(self) -> None:
        """Start the worker and wait until it listens; retry while its ports are still held
        (by the worker of a predecessor that was killed and has not exited yet)."""
        deadline = time.monotonic() + WORKER_START_SECONDS
        while True:
            try:
                await self._start_once()
                return
            except IngestWorkerError:
                if time.monotonic() > deadline:
                    raise
                logger.warning("ingest worker did not start; retrying")
                await asyncio.sleep(0.5)

    async def _start_once(self) -> None:
        process = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            WORKER_MODULE,
            stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE,
            env=self._environment(),
        )
        assert process.stdout is not None
        try:
            line = await asyncio.wait_for(process.stdout.readline(), WORKER_START_SECONDS)
        except TimeoutError:
            process.kill()
            await process.wait()
            raise IngestWorkerError("ingest worker did not become ready") from None
        if not line:
            await process.wait()
            raise IngestWorkerError(f"ingest worker exited with code {process.returncode}")
        ready = json.loads(line)
        self.grpc_port, self.http_port = ready["grpc_port"], ready["http_port"]
        self._process = process

    async def supervise(self) -> None:
        """Restart the worker whenever it exits, until `stop`; back off if it keeps dying."""
        backoff = 0.5
        while not self._stopping:
            assert self._process is not None
            started = time.monotonic()
            code = await self._process.wait()
            if self._stopping:
                return
            logger.error("ingest worker exited; restarting", extra={"exit_code": code})
            if time.monotonic() - started > 60:
                backoff = 0.5
            await asyncio.sleep(backoff)
            backoff = min(backoff * 2, 10.0)
            if self._stopping:
                return
            with contextlib.suppress(IngestWorkerError):
                await self.start()

    async def stop(self) -> None:
        """Stop the worker gracefully (SIGTERM), killing it if it outstays its grace."""
        self._stopping = True
        process = self._process
        if process is None or process.returncode is not None:
            return
        process.terminate()
        try:
            await asyncio.wait_for(process.wait(), WORKER_STOP_SECONDS)
        except TimeoutError:
            process.kill()
            await process.wait()


def public_base_url(settings: Settings, api_port: int) -> str:
    """`AGENTMETER_PUBLIC_URL`, else the API's own address (loopback for a wildcard host)."""
    if settings.public_url:
        return settings.public_url.rstrip("/")
    host = "127.0.0.1" if settings.host in ("0.0.0.0", "::", "") else settings.host
    host = f"[{host}]" if ":" in host else host
    return f"http://{host}:{api_port}"


def run_background_jobs(
    engine: Engine, registry: JobRegistry, stripe: StripeGateway | None = None
) -> None:
    """One pass of the periodic jobs; each logs its own failure and the others still run."""
    jobs: tuple[tuple[str, Callable[[Engine], object]], ...] = (
        ("job queue", lambda engine: run_jobs(engine, registry)),
        ("budget sweep", sweep_budgets),
        ("credit expiry", expire_all_credits),
        ("webhook delivery", deliver_due),
        ("stripe events", process_events),
        ("stripe outbox", lambda engine: run_due_jobs(engine, stripe)),
        ("dashboard figures", lambda engine: refresh_figures(engine, utcnow())),
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
    registry = job_registry()
    while True:
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), timeout=interval)
        if stop.is_set():
            return
        try:
            await asyncio.to_thread(run_background_jobs, engine, registry, stripe)
        except Exception:
            logger.exception("background jobs failed")


async def serve(
    settings: Settings, engine: Engine, on_ready: Callable[[str], None] | None = None
) -> None:
    """Run the API and the ingest worker until SIGINT/SIGTERM; print one JSON ready line
    with the ports, then call `on_ready` with the API's public base URL (the demo prints
    links with it)."""
    metrics_dir = tempfile.mkdtemp(prefix="agentmeter-metrics-")
    registry = CollectorRegistry()  # /metrics shows the worker's ingest metrics
    MultiProcessCollector(registry, path=metrics_dir)  # type: ignore[no-untyped-call]
    supervisor = IngestSupervisor(settings, metrics_dir)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(signum, stop.set)
    try:
        await supervisor.start()
        supervising = asyncio.create_task(supervisor.supervise())
        stripe = build_gateway(settings)  # the one Stripe client, built at start-up
        api_app = create_app(engine, registry, settings, stripe=stripe)
        limiter = key_rate_limiter(settings.api_rate_limit, scope="api")
        app = RateLimitedApi(api_app, limiter) if limiter is not None else api_app
        api, api_task, api_port = await start_http(app, settings.host, settings.api_port)
        base_url = public_base_url(settings, api_port)
        ready = {
            "event": "ready",
            "grpc_port": supervisor.grpc_port,
            "http_port": supervisor.http_port,
            "api_port": api_port,
            "dashboard_url": f"{base_url}/dashboard/",
        }
        sys.stdout.write(json.dumps(ready) + "\n")
        sys.stdout.flush()
        logger.info("listening", extra=ready)
        if on_ready is not None:
            on_ready(base_url)
        background = asyncio.create_task(
            _background(engine, stripe, settings.background_interval_seconds, stop)
        )
        await stop.wait()
        supervising.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await supervising
        # Stop taking new exports; let the ones in flight commit and answer.
        await supervisor.stop()
        api.should_exit = True
        await api_task
        await background  # a pass in progress finishes; no new one starts
    finally:
        await supervisor.stop()
        shutil.rmtree(metrics_dir, ignore_errors=True)
