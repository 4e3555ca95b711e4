"""Soak: mixed ingest and API load on `agentmeter serve` with faults injected; nothing lost.

Everything runs on loopback, for `--seconds` (default 60) plus a bounded drain:

- `--clients` exporters (half OTLP/HTTP, half OTLP/gRPC) each send exports of `--spans`
  unique GenAI spans (three meters each), one at a time. An export is retried, honouring
  `Retry-After`/backoff, until it is acknowledged, as a real exporter would (with no limit on
  attempts, so an acknowledgement is never given up on); one API reader times REST reads.
- Faults, at fixed fractions of the run: the server is killed with SIGKILL and started again
  on the same ports (30 %); the ingest worker alone is killed and `serve` restarts it (45 %);
  the database is unavailable for a few seconds (60 %): on SQLite another connection holds
  an exclusive lock (the server waits at most 0.5 s for it), on PostgreSQL
  (`--backend postgresql`, run through `scripts/test.sh --exec`) the database refuses
  connections and open ones are cut.
- At the end the stored usage is compared with what was acknowledged: spans stored, spans
  acknowledged but not stored (**lost**, must be 0), identities stored twice (duplicated),
  spans stored with a meter missing (partial), plus attempts, error rates, p99 latencies and
  the server's memory (whole process tree, RSS) over time.

    python bench/soak.py [--seconds 60] [--clients 4] [--spans 64] [--backend sqlite]

Exit status 1 when anything acknowledged was lost or stored partially. No timing assertion.
"""

from __future__ import annotations

import argparse
import os
import random
import secrets
import signal
import sqlite3
import statistics
import sys
import tempfile
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from contextlib import AbstractContextManager, contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import grpc
import httpx
import psutil
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from sqlalchemy import Engine, create_engine, make_url, text
from sqlalchemy.pool import NullPool

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:  # run as `python bench/soak.py` from anywhere
    sys.path.insert(0, str(ROOT))

from agentmeter.db import make_engine, migrate  # noqa: E402
from agentmeter.settings import Settings  # noqa: E402
from agentmeter.tenants import create_tenant  # noqa: E402
from bench.ingest import (  # noqa: E402
    EXPORT_METHOD,
    METERS_PER_SPAN,
    PROTOBUF,
    IdSource,
    Server,
    make_request,
)

POSTGRES_URL_ENV = "AGENTMETER_TEST_POSTGRES_URL"
OUTAGE_SECONDS = 4.0
DRAIN_SECONDS = 120.0
SpanKey = tuple[str, str]


# --------------------------------------------------------------------------- accounting


@dataclass
class Tally:
    """What the clients saw; updated from several threads under `lock`."""

    lock: threading.Lock = field(default_factory=threading.Lock)
    acknowledged: set[SpanKey] = field(default_factory=set)
    exports: int = 0
    attempts: Counter[str] = field(default_factory=Counter)  # by transport
    errors: Counter[str] = field(default_factory=Counter)  # by transport and kind
    refused: int = 0  # answered with a permanent refusal: never expected
    unfinished: int = 0  # still unacknowledged when the drain ended
    ingest_ms: list[float] = field(default_factory=list)
    api_ms: list[float] = field(default_factory=list)
    api_reads: int = 0
    api_errors: Counter[str] = field(default_factory=Counter)


def span_keys(body: bytes) -> list[SpanKey]:
    request = ExportTraceServiceRequest.FromString(body)
    return [
        (span.trace_id.hex(), span.span_id.hex())
        for resource in request.resource_spans
        for scope in resource.scope_spans
        for span in scope.spans
    ]


# --------------------------------------------------------------------------- clients


class Retry(Exception):
    """A retryable failure; `delay` seconds before the next attempt, if the server said."""

    def __init__(self, kind: str, delay: float | None = None) -> None:
        super().__init__(kind)
        self.kind = kind
        self.delay = delay


class Refused(Exception):
    """A permanent refusal (4xx other than 429, INVALID_ARGUMENT, rejected spans)."""


def send_http(client: httpx.Client, url: str, key: str, body: bytes) -> None:
    headers = {"content-type": PROTOBUF, "authorization": f"Bearer {key}"}
    try:
        response = client.post(url, content=body, headers=headers)
    except httpx.HTTPError as error:
        raise Retry(type(error).__name__) from None
    if response.status_code in (429, 502, 503, 504):
        retry_after = response.headers.get("retry-after")
        raise Retry(f"http_{response.status_code}", float(retry_after) if retry_after else None)
    if response.status_code != 200:
        raise Refused(f"HTTP {response.status_code}: {response.text[:200]}")


_GRPC_RETRYABLE = {
    grpc.StatusCode.UNAVAILABLE,
    grpc.StatusCode.RESOURCE_EXHAUSTED,
    grpc.StatusCode.DEADLINE_EXCEEDED,
    grpc.StatusCode.ABORTED,
    grpc.StatusCode.CANCELLED,
}


def send_grpc(export: grpc.UnaryUnaryMultiCallable[bytes, bytes], key: str, body: bytes) -> None:
    try:
        export(body, metadata=(("authorization", f"Bearer {key}"),), timeout=30)
    except grpc.RpcError as error:
        code = error.code() if isinstance(error, grpc.Call) else grpc.StatusCode.UNKNOWN
        if code in _GRPC_RETRYABLE:
            raise Retry(f"grpc_{code.name.lower()}") from None
        raise Refused(f"gRPC {code.name}") from None


class Exporter(threading.Thread):
    """Sends exports one at a time until `sending` clears; retries each until acknowledged."""

    def __init__(
        self,
        transport: str,
        ports: Callable[[], tuple[int, int]],
        key: str,
        spans: int,
        tally: Tally,
        sending: threading.Event,
        drain_deadline: Callable[[], float],
    ) -> None:
        super().__init__(daemon=True)
        self._transport = transport
        self._ports = ports
        self._key = key
        self._spans = spans
        self._tally = tally
        self._sending = sending
        self._drain_deadline = drain_deadline

    def run(self) -> None:
        ids, rng = IdSource(), random.Random()
        grpc_port, http_port = self._ports()
        with (
            httpx.Client(timeout=30) as http,
            grpc.insecure_channel(f"127.0.0.1:{grpc_port}") as channel,
        ):
            export = channel.unary_unary(
                EXPORT_METHOD, request_serializer=None, response_deserializer=None
            )
            url = f"http://127.0.0.1:{http_port}/v1/traces"
            while self._sending.is_set():
                body = make_request(ids, self._spans, 8, rng)
                if self._transport == "http":
                    self._deliver(body, lambda b: send_http(http, url, self._key, b))
                else:
                    self._deliver(body, lambda b: send_grpc(export, self._key, b))

    def _deliver(self, body: bytes, send: Callable[[bytes], None]) -> None:
        backoff = 0.1
        with self._tally.lock:
            self._tally.exports += 1
        while True:
            if not self._sending.is_set() and time.monotonic() > self._drain_deadline():
                with self._tally.lock:
                    self._tally.unfinished += 1
                return
            started = time.perf_counter()
            try:
                with self._tally.lock:
                    self._tally.attempts[self._transport] += 1
                send(body)
            except Retry as retry:
                with self._tally.lock:
                    self._tally.errors[f"{self._transport}:{retry.kind}"] += 1
                time.sleep(min(retry.delay or backoff, 2.0))
                backoff = min(backoff * 2, 2.0)
                continue
            except Refused as refusal:
                print(f"refused for good: {refusal}", file=sys.stderr)
                with self._tally.lock:
                    self._tally.refused += 1
                return
            elapsed = (time.perf_counter() - started) * 1000
            keys = span_keys(body)
            with self._tally.lock:
                self._tally.ingest_ms.append(elapsed)
                self._tally.acknowledged.update(keys)
            return


class ApiReader(threading.Thread):
    """Times REST reads back to back until `sending` clears."""

    def __init__(
        self, api_port: Callable[[], int], key: str, tally: Tally, sending: threading.Event
    ) -> None:
        super().__init__(daemon=True)
        self._api_port = api_port
        self._key = key
        self._tally = tally
        self._sending = sending

    def run(self) -> None:
        headers = {"authorization": f"Bearer {self._key}"}
        with httpx.Client(timeout=30, headers=headers) as client:
            while self._sending.is_set():
                url = f"http://127.0.0.1:{self._api_port()}/api/v1/usage?group_by=meter"
                started = time.perf_counter()
                try:
                    response = client.get(url)
                    outcome = str(response.status_code)
                except httpx.HTTPError as error:
                    outcome = type(error).__name__
                elapsed = (time.perf_counter() - started) * 1000
                with self._tally.lock:
                    self._tally.api_reads += 1
                    if outcome == "200":
                        self._tally.api_ms.append(elapsed)
                    else:
                        self._tally.api_errors[outcome] += 1
                if outcome != "200":
                    time.sleep(0.2)


# --------------------------------------------------------------------------- the store


@dataclass
class Store:
    """The database the server uses, and how to take it away for a while."""

    url: str
    outage: Callable[[], AbstractContextManager[None]]
    cleanup: Callable[[], None]
    server_env: dict[str, str]


def sqlite_store(directory: Path) -> Store:
    path = directory / "soak.db"

    @contextmanager
    def outage() -> Iterator[None]:
        holder = sqlite3.connect(path, isolation_level=None)
        try:
            holder.execute("BEGIN EXCLUSIVE")
            yield
            holder.execute("ROLLBACK")
        finally:
            holder.close()

    return Store(
        f"sqlite:///{path}",
        outage,
        lambda: None,
        {"AGENTMETER_SQLITE_BUSY_TIMEOUT_SECONDS": "0.5"},
    )


def postgresql_store() -> Store:
    base = os.environ.get(POSTGRES_URL_ENV)
    if not base:
        raise SystemExit(f"--backend postgresql needs {POSTGRES_URL_ENV} (scripts/test.sh --exec)")
    name = f"agentmeter_soak_{secrets.token_hex(4)}"
    admin = create_engine(base, isolation_level="AUTOCOMMIT", poolclass=NullPool)
    with admin.connect() as connection:
        connection.execute(text(f'CREATE DATABASE "{name}"'))

    @contextmanager
    def outage() -> Iterator[None]:
        with admin.connect() as connection:
            connection.execute(text(f'ALTER DATABASE "{name}" ALLOW_CONNECTIONS false'))
            connection.execute(
                text(
                    "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                    "WHERE datname = :name AND pid <> pg_backend_pid()"
                ),
                {"name": name},
            )
        try:
            yield
        finally:
            with admin.connect() as connection:
                connection.execute(text(f'ALTER DATABASE "{name}" ALLOW_CONNECTIONS true'))

    def cleanup() -> None:
        with admin.connect() as connection:
            connection.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()

    url = make_url(base).set(database=name).render_as_string(hide_password=False)
    return Store(url, outage, cleanup, {})


def stored(engine: Engine, tenant_id: str) -> tuple[set[SpanKey], int, int, int]:
    """(stored spans, rows, identities stored twice, spans with a meter missing)."""
    with engine.connect() as connection:
        rows = connection.execute(
            text(
                "SELECT trace_id, span_id, count(*) FROM usage_records "
                "WHERE tenant_id = :tenant GROUP BY trace_id, span_id"
            ),
            {"tenant": tenant_id},
        ).all()
        duplicated = connection.execute(
            text(
                "SELECT count(*) FROM (SELECT 1 FROM usage_records WHERE tenant_id = :tenant "
                "GROUP BY trace_id, span_id, meter HAVING count(*) > 1) AS twice"
            ),
            {"tenant": tenant_id},
        ).scalar_one()
    spans = {(trace, span) for trace, span, _ in rows}
    partial = sum(1 for _, _, count in rows if count != METERS_PER_SPAN)
    return spans, sum(count for _, _, count in rows), duplicated, partial


# --------------------------------------------------------------------------- the run


def tree_rss_mib(pid: int) -> float:
    try:
        process = psutil.Process(pid)
        processes = [process, *process.children(recursive=True)]
    except psutil.NoSuchProcess:
        return 0.0
    total = 0
    for proc in processes:
        try:
            total += proc.memory_info().rss
        except psutil.NoSuchProcess:
            continue
    return total / 2**20


def p99(samples: Sequence[float]) -> float:
    if not samples:
        return float("nan")
    ordered = sorted(samples)
    return ordered[min(len(ordered) - 1, round(0.99 * len(ordered)))]


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=float, default=60.0, help="length of the load")
    parser.add_argument("--clients", type=int, default=4, help="exporters (half HTTP, half gRPC)")
    parser.add_argument("--spans", type=int, default=64, help="spans per export")
    parser.add_argument("--backend", choices=("sqlite", "postgresql"), default="sqlite")
    args = parser.parse_args(argv)

    with tempfile.TemporaryDirectory(prefix="agentmeter-soak-") as directory:
        work = Path(directory)
        store = sqlite_store(work) if args.backend == "sqlite" else postgresql_store()
        try:
            return soak(args, store, work)
        finally:
            store.cleanup()


def soak(args: argparse.Namespace, store: Store, work: Path) -> int:
    engine = make_engine(Settings(database_url=store.url))
    migrate(engine)
    tenant = create_tenant(engine, "soak")
    log = work / "server.log"
    server = Server.start(store.url, "FULL", log, store.server_env)
    ports = (server.grpc_port, server.http_port, server.api_port)
    current = {"server": server}
    tally = Tally()
    sending = threading.Event()
    sending.set()
    drain = {"deadline": float("inf")}
    clients = [
        Exporter(
            "http" if n % 2 == 0 else "grpc",
            lambda: (ports[0], ports[1]),
            tenant.ingest_key,
            args.spans,
            tally,
            sending,
            lambda: drain["deadline"],
        )
        for n in range(args.clients)
    ]
    reader = ApiReader(lambda: ports[2], tenant.admin_key, tally, sending)
    memory: list[tuple[float, float]] = []
    faults: list[str] = []
    started = time.monotonic()

    def at(fraction: float) -> None:
        while time.monotonic() - started < fraction * args.seconds:
            memory.append((time.monotonic() - started, tree_rss_mib(current["server"].ps.pid)))
            time.sleep(min(1.0, args.seconds / 20))

    for thread in (*clients, reader):
        thread.start()
    try:
        at(0.30)
        current["server"].process.send_signal(signal.SIGKILL)
        current["server"].process.wait()
        current["server"] = Server.start(store.url, "FULL", log, store.server_env, ports)
        faults.append(f"{time.monotonic() - started:5.1f} s  server SIGKILL, restarted")
        at(0.45)
        children = current["server"].ps.children()
        if children:
            children[0].kill()
            faults.append(f"{time.monotonic() - started:5.1f} s  ingest worker SIGKILL")
        at(0.60)
        with store.outage():
            faults.append(
                f"{time.monotonic() - started:5.1f} s  database unavailable {OUTAGE_SECONDS:.0f} s"
            )
            time.sleep(OUTAGE_SECONDS)
        at(1.0)
    finally:
        drain["deadline"] = time.monotonic() + DRAIN_SECONDS
        sending.clear()
        for thread in (*clients, reader):
            thread.join(timeout=DRAIN_SECONDS + 30)
        final_rss = tree_rss_mib(current["server"].ps.pid)
        current["server"].stop()
    elapsed = time.monotonic() - started

    spans, rows, duplicated, partial = stored(engine, tenant.tenant_id)
    engine.dispose()
    lost = len(tally.acknowledged - spans)
    stored_unacknowledged = len(spans - tally.acknowledged)
    attempts = sum(tally.attempts.values())
    errors = sum(tally.errors.values())
    print(f"soak: {elapsed:.0f} s on {args.backend}, {args.clients} exporters x {args.spans} spans")
    print("faults:")
    for fault in faults:
        print(f"  {fault}")
    print(f"exports                 {tally.exports} ({attempts} attempts: {dict(tally.attempts)})")
    print(f"spans acknowledged      {len(tally.acknowledged)}")
    print(f"spans stored            {len(spans)} ({rows} usage rows)")
    print(f"lost                    {lost}   (acknowledged, not stored; must be 0)")
    print(f"duplicated              {duplicated}   (an identity stored twice)")
    print(f"partial                 {partial}   (a span stored without all its meters)")
    print(f"stored, unacknowledged  {stored_unacknowledged}   (exports abandoned at drain end)")
    print(f"refused for good        {tally.refused}; unfinished at drain end {tally.unfinished}")
    print(
        f"ingest errors (retried) {errors}/{attempts} = {errors / max(attempts, 1):.1%}: "
        f"{dict(tally.errors)}"
    )
    print(
        f"ingest latency (acked)  p50 {statistics.median(tally.ingest_ms):.1f} ms, "
        f"p99 {p99(tally.ingest_ms):.1f} ms"
        if tally.ingest_ms
        else "ingest latency          no export acknowledged"
    )
    api_errors = sum(tally.api_errors.values())
    print(
        f"API reads               {tally.api_reads}, errors {api_errors} "
        f"({api_errors / max(tally.api_reads, 1):.1%}): {dict(tally.api_errors)}; "
        f"p99 {p99(tally.api_ms):.1f} ms"
    )
    series = ", ".join(f"{t:.0f}s {mib:.0f}" for t, mib in memory[:: max(1, len(memory) // 10)])
    print(f"server RSS MiB          {series}, end {final_rss:.0f}")
    return 1 if lost or partial or tally.refused else 0


if __name__ == "__main__":
    sys.exit(main())
