"""The ingest worker: OTLP/gRPC (with `UsageService`) and OTLP/HTTP in a process of their own.

`agentmeter serve` starts this module as a child process
(`python -m agentmeter.command.ingest_worker`) so that decoding spans never competes with
the billing API for one interpreter lock: the API stays responsive however hard exporters
push. The protocol with the parent is small:

- settings come from the environment (`AGENTMETER_*`, as everywhere), ports included;
- once both listeners are bound, one JSON line `{"event": "ready", "grpc_port", "http_port"}`
  goes to standard output;
- SIGTERM or SIGINT stops it gracefully: no new exports, the ones in flight commit and are
  answered; so does the end of standard input, which is how a parent that died (even by
  SIGKILL) takes its worker with it instead of leaving the ports held;
- metrics go to `PROMETHEUS_MULTIPROC_DIR`, which the parent's `/metrics` reads.

An export is answered only after its usage is committed, as in one process.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import signal
import sys
import threading
from concurrent.futures import ThreadPoolExecutor

from prometheus_client import CollectorRegistry

from agentmeter.command.logs import configure_logging
from agentmeter.command.serving import start_http
from agentmeter.db import make_engine
from agentmeter.ratelimit import key_rate_limiter
from agentmeter.settings import Settings
from exporter.keys import SqlIngestKeys
from exporter.provider_costs import ProviderCostCatalog
from exporter.sql_sink import SqlUsageSink
from exporter.usage_service import usage_service_handler
from otel_processor.receiver.grpc import make_server, trace_service_handler
from otel_processor.receiver.http import OtlpHttpApp
from otel_processor.receiver.observe import ExportLog, IngestMetrics
from otel_processor.receiver.service import UsageIngest

logger = logging.getLogger("agentmeter.ingest")

SHUTDOWN_GRACE_SECONDS = 10.0
INGEST_NICENESS = 5


async def run_receivers(settings: Settings, stop: asyncio.Event) -> None:
    """Serve OTLP/gRPC, `UsageService` and OTLP/HTTP until `stop`; print the ready line."""
    engine = make_engine(settings)
    executor = ThreadPoolExecutor(max_workers=settings.db_pool_size, thread_name_prefix="store")
    ingest = UsageIngest(
        SqlUsageSink(engine, ProviderCostCatalog()),
        SqlIngestKeys(engine),
        max_pending=settings.max_pending_exports,
        executor=executor,
        observers=[IngestMetrics(CollectorRegistry()), ExportLog()],
        limiter=key_rate_limiter(settings.ingest_rate_limit, scope="ingest"),
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
    http, http_task, http_port = await start_http(otlp_app, settings.host, settings.http_port)
    ready = {"event": "ready", "grpc_port": grpc_port, "http_port": http_port}
    sys.stdout.write(json.dumps(ready) + "\n")
    sys.stdout.flush()
    await stop.wait()
    # Stop taking new exports; let the ones in flight commit and answer.
    http.should_exit = True
    await grpc_server.stop(grace=SHUTDOWN_GRACE_SECONDS)
    await http_task
    executor.shutdown(wait=True)
    engine.dispose()


def _stop_when_stdin_closes(loop: asyncio.AbstractEventLoop, stop: asyncio.Event) -> None:
    """Set `stop` once standard input reaches its end: the parent closed it, or died."""

    def watch() -> None:
        sys.stdin.buffer.read()
        loop.call_soon_threadsafe(stop.set)

    threading.Thread(target=watch, name="parent-watch", daemon=True).start()


async def _main() -> None:
    # The API answers people, ingest answers exporters that batch and retry: when the two
    # compete for CPU, the API goes first.
    os.nice(INGEST_NICENESS)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(signum, stop.set)
    _stop_when_stdin_closes(loop, stop)
    await run_receivers(Settings(), stop)


if __name__ == "__main__":
    configure_logging()
    asyncio.run(_main())
