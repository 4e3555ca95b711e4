"""Ingest throughput of `agentmeter serve` against the floor cost of the same work.

Sends pre-encoded OTLP trace exports of GenAI spans over OTLP/HTTP (protobuf) and OTLP/gRPC
to a real `agentmeter serve` (a subprocess on a fresh SQLite file or PostgreSQL database per
transport) from a few concurrent clients in this process. A request counts once it is
acknowledged, i.e. committed. Reports spans per second and spans per CPU-second of the
server's whole process tree.

In the same run it measures the *limit*: in this process, single-threaded, each of the same
encoded requests is parsed with `opentelemetry-proto` and one row per span is bulk-inserted
into the same kind of store (SQLite with the server's pragmas, or PostgreSQL), one
transaction per request, nothing else. The goal is server spans/CPU-s ≥ 35 % of the limit's
(issue 13; 60 % beyond it). Beside it, the *Python reader floor*: the same parse, then each
span's ids, name, end time and every attribute value read into a dict, nothing stored: what
any ingest written in Python pays before its first rule, as a share of the limit. With
`--phoenix`, Arize Phoenix receives the same OTLP/HTTP requests and is timed until it has
stored them (`bench/phoenix.py`): goal ≥ 100× its spans per CPU-second.

After each run the usage rows in the server's database must equal spans x meters per span
(each span carries input, cache-read and output tokens: three meters); otherwise it aborts.

    python bench/ingest.py [--requests 40] [--spans 512] [--concurrency 4]
    scripts/test.sh --exec .venv/bin/python bench/ingest.py --backend both --phoenix

No assertion on timing: figures depend on the machine (disk fsync above all).
"""

from __future__ import annotations

import argparse
import json
import os
import random
import signal
import sqlite3
import struct
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

import grpc
import httpx
import psutil
import psycopg
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
    ExportTraceServiceRequest,
    ExportTraceServiceResponse,
)
from opentelemetry.proto.common.v1.common_pb2 import AnyValue, InstrumentationScope, KeyValue
from opentelemetry.proto.resource.v1.resource_pb2 import Resource
from opentelemetry.proto.trace.v1.trace_pb2 import ResourceSpans, ScopeSpans, Span

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:  # run as `python bench/ingest.py` from anywhere
    sys.path.insert(0, str(ROOT))

from sqlalchemy import create_engine, make_url, text  # noqa: E402
from sqlalchemy.pool import NullPool  # noqa: E402

from agentmeter.db import make_engine, migrate  # noqa: E402
from agentmeter.settings import Settings  # noqa: E402
from agentmeter.tenants import create_tenant  # noqa: E402
from bench import phoenix  # noqa: E402
from bench.dataset import fresh_postgres  # noqa: E402
from bench.figures import report  # noqa: E402

EXPORT_METHOD = "/opentelemetry.proto.collector.trace.v1.TraceService/Export"
PROTOBUF = "application/x-protobuf"
# Usage rows per span: every span has input, cache-read and output tokens.
METERS_PER_SPAN = 3
# Issue 13's goal: spans per server CPU-second ≥ 35 % of the limit's (60 % beyond it).
GOAL = 0.35
LONG_TERM_GOAL = 0.60
# Arize Phoenix, the closest Python peer: AgentMeter's spans/CPU-s ≥ 100 × its.
PEER_GOAL = 100.0
MODELS = (
    ("openai", "gpt-4o", "gpt-4o-2024-08-06"),
    ("anthropic", "claude-sonnet-4-5", "claude-sonnet-4-5-20250929"),
    ("openai", "gpt-4o-mini", "gpt-4o-mini-2024-07-18"),
)
AGENTS = ("researcher", "writer", "reviewer", "planner")


# --------------------------------------------------------------------------- requests


class IdSource:
    """Trace and span ids unique within the run (and, by a random prefix, across runs),
    and span end times: like a batching exporter, each request carries the spans that
    ended during the next second, starting a day ago."""

    def __init__(self) -> None:
        self._prefix = random.getrandbits(63) | 1
        self._trace = 0
        self._span = 0
        self._window = time.time_ns() - 86_400 * 10**9

    def next_window(self) -> int:
        """Start of the next one-second window of span end times (Unix ns)."""
        self._window += 10**9
        return self._window

    def trace_id(self) -> bytes:
        self._trace += 1
        return struct.pack(">QQ", self._prefix, self._trace)

    def span_id(self) -> bytes:
        self._span += 1
        return struct.pack(">Q", self._span)


def _kv(key: str, value: str | int) -> KeyValue:
    if isinstance(value, int):
        return KeyValue(key=key, value=AnyValue(int_value=value))
    return KeyValue(key=key, value=AnyValue(string_value=value))


def make_request(ids: IdSource, spans: int, spans_per_trace: int, rng: random.Random) -> bytes:
    """One encoded export of `spans` GenAI chat spans (ten attributes each)."""
    window = ids.next_window()
    out: list[Span] = []
    trace_id = b""
    customer = ""
    for index in range(spans):
        if index % spans_per_trace == 0:
            trace_id = ids.trace_id()
            customer = f"customer-{rng.randrange(200):03d}"
        provider, request_model, response_model = MODELS[rng.randrange(len(MODELS))]
        agent = AGENTS[index % len(AGENTS)]
        input_tokens = rng.randrange(200, 20_000)
        end = window + rng.randrange(10**9)
        out.append(
            Span(
                trace_id=trace_id,
                span_id=ids.span_id(),
                name=f"chat {request_model}",
                kind=Span.SPAN_KIND_CLIENT,
                start_time_unix_nano=end - rng.randrange(10**8, 10**10),
                end_time_unix_nano=end,
                attributes=[
                    _kv("gen_ai.operation.name", "chat"),
                    _kv("gen_ai.provider.name", provider),
                    _kv("gen_ai.request.model", request_model),
                    _kv("gen_ai.response.model", response_model),
                    _kv("gen_ai.usage.input_tokens", input_tokens),
                    _kv("gen_ai.usage.output_tokens", rng.randrange(10, 4_000)),
                    _kv("gen_ai.usage.cache_read.input_tokens", rng.randrange(input_tokens)),
                    _kv("agentmeter.customer.id", customer),
                    _kv("agentmeter.step", f"{agent}.step-{index % 5}"),
                    _kv("gen_ai.agent.name", agent),
                ],
            )
        )
    request = ExportTraceServiceRequest(
        resource_spans=[
            ResourceSpans(
                resource=Resource(attributes=[_kv("service.name", "bench-agent")]),
                scope_spans=[ScopeSpans(scope=InstrumentationScope(name="bench"), spans=out)],
            )
        ]
    )
    return request.SerializeToString()


# --------------------------------------------------------------------------- the server


def tree_cpu_seconds(process: psutil.Process) -> float:
    """User + system CPU of `process` and all its descendants (live and reaped)."""
    total = 0.0
    for proc in (process, *process.children(recursive=True)):
        try:
            times = proc.cpu_times()
        except psutil.NoSuchProcess:
            continue
        total += times.user + times.system + times.children_user + times.children_system
    return total


@dataclass
class Server:
    process: subprocess.Popen[str]
    ps: psutil.Process
    grpc_port: int
    http_port: int
    api_port: int = 0

    @classmethod
    def start(
        cls,
        database_url: str,
        synchronous: str,
        log_path: Path,
        extra_env: dict[str, str] | None = None,
        ports: tuple[int, int, int] = (0, 0, 0),
    ) -> Server:
        """`agentmeter serve` on `ports` (gRPC, HTTP, API; 0: any free port), logging to
        `log_path` (appended to)."""
        env = {
            **os.environ,
            **(extra_env or {}),
            "AGENTMETER_DATABASE_URL": database_url,
            "AGENTMETER_SQLITE_SYNCHRONOUS": synchronous,
            "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")])),
        }
        command = [sys.executable, "-m", "agentmeter", "serve"]
        for flag, port in zip(("--grpc-port", "--http-port", "--api-port"), ports, strict=True):
            command += [flag, str(port)]
        with log_path.open("a") as log:
            process = subprocess.Popen(
                command, env=env, stdout=subprocess.PIPE, stderr=log, text=True, cwd=ROOT
            )
        assert process.stdout is not None
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            line = process.stdout.readline()
            if not line:
                process.wait()
                tail = log_path.read_text()[-2000:]
                raise SystemExit(f"server exited ({process.returncode}):\n{tail}")
            try:
                event = json.loads(line)
            except json.JSONDecodeError:
                continue
            if isinstance(event, dict) and event.get("event") == "ready":
                return cls(
                    process,
                    psutil.Process(process.pid),
                    event["grpc_port"],
                    event["http_port"],
                    event["api_port"],
                )
        process.kill()
        raise SystemExit("server did not become ready in 60 s")

    def cpu(self) -> float:
        return tree_cpu_seconds(self.ps)

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()


# --------------------------------------------------------------------------- clients


class HttpClient:
    """One keep-alive OTLP/HTTP connection."""

    def __init__(self, port: int, ingest_key: str) -> None:
        self._url = f"http://127.0.0.1:{port}/v1/traces"
        self._headers = {"content-type": PROTOBUF, "authorization": f"Bearer {ingest_key}"}
        self._client = httpx.Client(timeout=120.0)

    def send(self, body: bytes) -> None:
        response = self._client.post(self._url, content=body, headers=self._headers)
        if response.status_code != 200:
            raise RuntimeError(f"HTTP {response.status_code}: {response.text[:500]}")
        _check_response(response.content)

    def close(self) -> None:
        self._client.close()


class GrpcClient:
    """One gRPC channel calling `TraceService/Export` with pre-encoded bytes."""

    def __init__(self, port: int, ingest_key: str) -> None:
        self._channel = grpc.insecure_channel(
            f"127.0.0.1:{port}", options=[("grpc.max_send_message_length", 64 * 1024 * 1024)]
        )
        self._export = self._channel.unary_unary(
            EXPORT_METHOD, request_serializer=None, response_deserializer=None
        )
        self._metadata = (("authorization", f"Bearer {ingest_key}"),)

    def send(self, body: bytes) -> None:
        response: bytes = self._export(body, metadata=self._metadata, timeout=120.0)
        _check_response(response)

    def close(self) -> None:
        self._channel.close()


def _check_response(body: bytes) -> None:
    response = ExportTraceServiceResponse.FromString(body)
    if response.partial_success.rejected_spans:
        raise RuntimeError(f"spans rejected: {response.partial_success.error_message}")


@dataclass
class Result:
    transport: str
    requests: int
    spans: int
    wall_s: float
    server_cpu_s: float
    client_cpu_s: float

    @property
    def spans_per_s(self) -> float:
        return self.spans / self.wall_s

    @property
    def spans_per_cpu_s(self) -> float:
        return self.spans / self.server_cpu_s if self.server_cpu_s > 0 else float("inf")


def run_transport(
    name: str,
    clients: Sequence[HttpClient | GrpcClient],
    warmup: Sequence[bytes],
    bodies: Sequence[bytes],
    server: Server,
    spans_per_request: int,
) -> Result:
    """Warm every client up with one request, then send `bodies` from all clients at once."""
    errors: list[BaseException] = []
    next_index = 0
    index_lock = threading.Lock()

    def take() -> int | None:
        nonlocal next_index
        with index_lock:
            if errors or next_index >= len(bodies):
                return None
            next_index += 1
            return next_index - 1

    def work(client: HttpClient | GrpcClient, start: threading.Barrier) -> None:
        try:
            start.wait()
            while (index := take()) is not None:
                client.send(bodies[index])
        except BaseException as error:  # reported by the main thread
            errors.append(error)

    for client, body in zip(clients, warmup, strict=True):
        client.send(body)
    time.sleep(0.2)  # let the server settle (log flush, executor idle)
    start = threading.Barrier(len(clients) + 1)
    threads = [
        threading.Thread(target=work, args=(client, start), name=f"{name}-{i}", daemon=True)
        for i, client in enumerate(clients)
    ]
    for thread in threads:
        thread.start()
    cpu_before = server.cpu()
    client_before = time.process_time()
    started = time.perf_counter()
    start.wait()
    for thread in threads:
        thread.join()
    wall = time.perf_counter() - started
    client_cpu = time.process_time() - client_before
    server_cpu = server.cpu() - cpu_before
    if errors:
        raise SystemExit(f"{name}: export failed: {errors[0]!r}")
    return Result(name, len(bodies), len(bodies) * spans_per_request, wall, server_cpu, client_cpu)


# --------------------------------------------------------------------------- the limit


@dataclass
class Limit:
    requests: int
    spans: int
    wall_s: float
    cpu_s: float
    journal_mode: str
    synchronous: str

    @property
    def spans_per_s(self) -> float:
        return self.spans / self.wall_s

    @property
    def spans_per_cpu_s(self) -> float:
        return self.spans / self.cpu_s


_SYNCHRONOUS_NAMES = {0: "OFF", 1: "NORMAL", 2: "FULL", 3: "EXTRA"}


def run_limit(bodies: Sequence[bytes], path: Path, synchronous: str) -> Limit:
    """Parse each request with opentelemetry-proto and insert one row per span, one
    transaction per request, into a fresh SQLite file with the server's pragmas."""
    connection = sqlite3.connect(path, isolation_level=None)
    connection.execute("PRAGMA journal_mode=WAL")
    connection.execute(f"PRAGMA synchronous={synchronous}")
    connection.execute(
        "CREATE TABLE spans (trace_id TEXT NOT NULL, span_id TEXT NOT NULL,"
        " name TEXT NOT NULL, end_time_unix_nano INTEGER NOT NULL)"
    )
    journal_mode = str(connection.execute("PRAGMA journal_mode").fetchone()[0]).upper()
    level = connection.execute("PRAGMA synchronous").fetchone()[0]
    insert = "INSERT INTO spans VALUES (?, ?, ?, ?)"
    spans = 0
    cpu_started = time.process_time()
    started = time.perf_counter()
    for body in bodies:
        rows = _limit_rows(body)
        connection.execute("BEGIN")
        connection.executemany(insert, rows)
        connection.execute("COMMIT")
        spans += len(rows)
    wall = time.perf_counter() - started
    cpu = time.process_time() - cpu_started
    stored = connection.execute("SELECT count(*) FROM spans").fetchone()[0]
    connection.close()
    if stored != spans:
        raise SystemExit(f"limit: stored {stored} rows for {spans} spans")
    return Limit(len(bodies), spans, wall, cpu, journal_mode, _SYNCHRONOUS_NAMES.get(level, "?"))


def run_limit_postgres(bodies: Sequence[bytes], database_url: str) -> Limit:
    """The limit on PostgreSQL: the same parse and one executemany per request (psycopg,
    pipelined), one transaction per request, into a table of the server's database."""
    url = make_url(database_url).set(drivername="postgresql").render_as_string(False)
    insert = "INSERT INTO bench_limit_spans VALUES (%s, %s, %s, %s)"
    spans = 0
    with psycopg.connect(url, autocommit=True) as connection:
        connection.execute(
            "CREATE TABLE bench_limit_spans (trace_id TEXT NOT NULL, span_id TEXT NOT NULL,"
            " name TEXT NOT NULL, end_time_unix_nano BIGINT NOT NULL)"
        )
        cpu_started = time.process_time()
        started = time.perf_counter()
        for body in bodies:
            rows = _limit_rows(body)
            with connection.transaction(), connection.cursor() as cursor:
                cursor.executemany(insert, rows)
            spans += len(rows)
        wall = time.perf_counter() - started
        cpu = time.process_time() - cpu_started
        stored = connection.execute("SELECT count(*) FROM bench_limit_spans").fetchone()
    if stored is None or stored[0] != spans:
        raise SystemExit(f"limit: stored {stored} rows for {spans} spans")
    return Limit(len(bodies), spans, wall, cpu, "-", "-")


def run_python_floor(bodies: Sequence[bytes]) -> Limit:
    """The Python reader floor: parse each request and read every span's ids, name, end time
    and attribute values (into a dict, as any reader of usage conventions must), nothing
    else; single thread, in process."""
    spans = 0
    cpu_started = time.process_time()
    started = time.perf_counter()
    for body in bodies:
        request = ExportTraceServiceRequest.FromString(body)
        for resource_spans in request.resource_spans:
            for scope_spans in resource_spans.scope_spans:
                for span in scope_spans.spans:
                    (  # read, then dropped: the floor is the reading
                        span.trace_id,
                        span.span_id,
                        span.parent_span_id,
                        span.name,
                        span.end_time_unix_nano,
                        {
                            kv.key: getattr(
                                kv.value, kv.value.WhichOneof("value") or "string_value"
                            )
                            for kv in span.attributes
                        },
                    )
                    spans += 1
    wall = time.perf_counter() - started
    return Limit(len(bodies), spans, wall, time.process_time() - cpu_started, "-", "-")


def _limit_rows(body: bytes) -> list[tuple[str, str, str, int]]:
    request = ExportTraceServiceRequest.FromString(body)
    return [
        (span.trace_id.hex(), span.span_id.hex(), span.name, span.end_time_unix_nano)
        for resource_spans in request.resource_spans
        for scope_spans in resource_spans.scope_spans
        for span in scope_spans.spans
    ]


# --------------------------------------------------------------------------- main


def count_usage_rows(database_url: str) -> int:
    engine = create_engine(database_url, poolclass=NullPool)
    try:
        with engine.connect() as connection:
            rows: int = connection.execute(text("SELECT count(*) FROM usage_records")).scalar_one()
    finally:
        engine.dispose()
    return rows


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--requests", type=int, default=40, help="timed requests per transport")
    parser.add_argument("--spans", type=int, default=512, help="spans per request")
    parser.add_argument("--spans-per-trace", type=int, default=8, help="spans sharing a trace id")
    parser.add_argument("--concurrency", type=int, default=4, help="concurrent clients")
    parser.add_argument(
        "--transports",
        default="http,grpc",
        help="comma-separated, in order: http, grpc (default both)",
    )
    parser.add_argument(
        "--synchronous",
        default=os.environ.get("AGENTMETER_SQLITE_SYNCHRONOUS", "FULL").upper(),
        choices=("OFF", "NORMAL", "FULL", "EXTRA"),
        help="SQLite synchronous pragma for the server and the limit (default FULL)",
    )
    parser.add_argument(
        "--backend",
        default="sqlite",
        choices=("sqlite", "postgresql", "both"),
        help="store of the server and the limit (default sqlite)",
    )
    parser.add_argument(
        "--database-url",
        default=os.environ.get("AGENTMETER_TEST_POSTGRES_URL", ""),
        help="PostgreSQL server URL; a fresh database is created on it"
        " (default AGENTMETER_TEST_POSTGRES_URL)",
    )
    parser.add_argument(
        "--phoenix",
        action="store_true",
        help=f"also time Arize Phoenix {phoenix.VERSION} (installed on demand in"
        " bench/.phoenix-venv) on the same OTLP/HTTP requests",
    )
    parser.add_argument(
        "--phoenix-requests", type=int, default=4, help="timed requests sent to Phoenix"
    )
    parser.add_argument("--dir", type=Path, help="work directory to keep (default: a temp dir)")
    parser.add_argument("--json", action="store_true", help="also print results as one JSON line")
    return parser


def _table(rows: list[list[str]]) -> str:
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    lines = [
        "  ".join(
            c.rjust(w) if i else c.ljust(w) for i, (c, w) in enumerate(zip(r, widths, strict=True))
        )
        for r in rows
    ]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    transports = [t.strip() for t in args.transports.split(",") if t.strip()]
    if not transports or any(t not in ("http", "grpc") for t in transports):
        raise SystemExit("--transports takes http and/or grpc")
    if args.requests < 1 or args.spans < 1 or args.concurrency < 1 or args.spans_per_trace < 1:
        raise SystemExit("--requests, --spans, --spans-per-trace, --concurrency must be ≥ 1")
    backends = ["sqlite", "postgresql"] if args.backend == "both" else [args.backend]
    if "postgresql" in backends and not args.database_url:
        if args.backend == "postgresql":
            raise SystemExit("PostgreSQL needs --database-url or AGENTMETER_TEST_POSTGRES_URL")
        print("postgresql: skipped (set AGENTMETER_TEST_POSTGRES_URL; see scripts/test.sh)")
        backends.remove("postgresql")

    with tempfile.TemporaryDirectory(prefix="agentmeter-bench-") as tmp:
        work = args.dir or Path(tmp)
        work.mkdir(parents=True, exist_ok=True)
        requests = Requests.encode(args, transports)
        runs = [_run_backend(args, transports, work, backend, requests) for backend in backends]
        peer = None
        if args.phoenix:
            bodies = requests.timed[transports[0]][: args.phoenix_requests]
            peer = phoenix.measure(bodies, args.spans, work / "phoenix", args.concurrency)
    for backend_run in runs:
        _print_run(args, backend_run)
    if peer is not None:
        _print_peer(args, runs, peer)
    if args.json:
        print(json.dumps(_as_json(args, runs, peer)))
    return 0


@dataclass
class Requests:
    """The encoded requests: one warm-up per client and the timed ones, per transport."""

    warmups: dict[str, list[bytes]]
    timed: dict[str, list[bytes]]

    @classmethod
    def encode(cls, args: argparse.Namespace, transports: list[str]) -> Requests:
        rng = random.Random(20240601)
        ids = IdSource()
        started = time.perf_counter()
        requests = cls(
            {
                t: [
                    make_request(ids, args.spans, args.spans_per_trace, rng)
                    for _ in range(args.concurrency)
                ]
                for t in transports
            },
            {
                t: [
                    make_request(ids, args.spans, args.spans_per_trace, rng)
                    for _ in range(args.requests)
                ]
                for t in transports
            },
        )
        count = sum(map(len, requests.timed.values())) + sum(map(len, requests.warmups.values()))
        size = len(requests.timed[transports[0]][0])
        print(
            f"encoded {count} requests of {args.spans} spans ({size / 1024:.0f} KiB each,"
            f" ~{size // args.spans} B/span) in {time.perf_counter() - started:.1f} s",
            flush=True,
        )
        return requests


@dataclass
class BackendRun:
    backend: str
    results: list[Result]
    limit: Limit
    floor: Limit  # the Python reader floor, on the same requests
    usage_rows: int
    expected_rows: int
    idle_cpu: float
    store: str  # how the server's store was set up, for the report


def _run_backend(
    args: argparse.Namespace,
    transports: list[str],
    work: Path,
    backend: str,
    requests: Requests,
) -> BackendRun:
    """Per transport, serve on a fresh store of `backend` and send its requests (a store
    already holding the other transport's rows costs more per span: an unfair order); then
    the limit on the same store kind."""
    results: list[Result] = []
    expected_rows = (args.concurrency + args.requests) * args.spans * METERS_PER_SPAN
    usage_rows = 0
    idle_cpu = 0.0
    for transport in transports:
        if backend == "sqlite":
            database = work / f"bench-{transport}.db"
            for suffix in ("", "-wal", "-shm"):
                Path(f"{database}{suffix}").unlink(missing_ok=True)
            database_url = f"sqlite:///{database}"
        else:
            database_url = fresh_postgres(args.database_url)
        settings = Settings(database_url=database_url, sqlite_synchronous=args.synchronous)
        engine = make_engine(settings)
        migrate(engine)
        ingest_key = create_tenant(engine, "bench").ingest_key
        engine.dispose()
        server = Server.start(database_url, args.synchronous, work / "server.log")
        try:
            idle_before = server.cpu()
            time.sleep(1.0)
            idle_cpu = max(idle_cpu, server.cpu() - idle_before)
            factory = HttpClient if transport == "http" else GrpcClient
            port = server.http_port if transport == "http" else server.grpc_port
            clients = [factory(port, ingest_key) for _ in range(args.concurrency)]
            try:
                result = run_transport(
                    transport,
                    clients,
                    requests.warmups[transport],
                    requests.timed[transport],
                    server,
                    args.spans,
                )
            finally:
                for client in clients:
                    client.close()
            results.append(result)
        finally:
            server.stop()
        rows = count_usage_rows(database_url)
        if rows != expected_rows:
            raise SystemExit(
                f"{backend} {transport}: {rows} usage rows in the database, expected"
                f" {expected_rows} (spans x {METERS_PER_SPAN} meters)"
            )
        usage_rows += rows
    # The limit, on every timed request, with the clients and the server gone.
    bodies = [b for t in transports for b in requests.timed[t]]
    if backend == "sqlite":
        limit_db = work / "limit.db"
        for suffix in ("", "-wal", "-shm"):
            Path(f"{limit_db}{suffix}").unlink(missing_ok=True)
        limit = run_limit(bodies, limit_db, args.synchronous)
        journal = sqlite3.connect(database).execute("PRAGMA journal_mode").fetchone()[0]
        store = (
            f"SQLite: server journal_mode={str(journal).upper()} synchronous={args.synchronous};"
            f" limit journal_mode={limit.journal_mode} synchronous={limit.synchronous}"
        )
    else:
        limit = run_limit_postgres(bodies, database_url)
        store = "PostgreSQL: server and limit on the same fresh database"
    floor = run_python_floor(bodies)
    return BackendRun(
        backend,
        results,
        limit,
        floor,
        usage_rows,
        expected_rows * len(transports),
        idle_cpu,
        store,
    )


def _print_run(args: argparse.Namespace, run: BackendRun) -> None:
    limit = run.limit
    print()
    print(f"{run.store} (one transaction per request in the limit)")
    print(
        f"{args.concurrency} concurrent clients, {args.requests} timed requests per transport"
        f" (+{args.concurrency} warm-up), {args.spans} spans/request,"
        f" {args.spans_per_trace} spans/trace, {os.cpu_count()} CPUs;"
        f" idle server CPU {run.idle_cpu * 100:.1f} %"
    )
    print()
    header = [
        "transport", "requests", "spans", "wall s", "spans/s", "server CPU s",
        "spans/CPU-s", "÷ limit spans/CPU-s", "÷ limit spans/s", "client CPU s",
    ]  # fmt: skip
    rows_out = [header]
    for r in run.results:
        rows_out.append(
            [
                r.transport,
                str(r.requests),
                str(r.spans),
                f"{r.wall_s:.2f}",
                f"{r.spans_per_s:,.0f}",
                f"{r.server_cpu_s:.2f}",
                f"{r.spans_per_cpu_s:,.0f}",
                f"{r.spans_per_cpu_s / limit.spans_per_cpu_s:.3f}",
                f"{r.spans_per_s / limit.spans_per_s:.3f}",
                f"{r.client_cpu_s:.2f}",
            ]
        )
    rows_out.append(
        [
            "limit",
            str(limit.requests),
            str(limit.spans),
            f"{limit.wall_s:.2f}",
            f"{limit.spans_per_s:,.0f}",
            f"{limit.cpu_s:.2f}",
            f"{limit.spans_per_cpu_s:,.0f}",
            "1.000",
            "1.000",
            "-",
        ]
    )
    floor = run.floor
    rows_out.append(
        [
            "Python reader floor",
            str(floor.requests),
            str(floor.spans),
            f"{floor.wall_s:.2f}",
            f"{floor.spans_per_s:,.0f}",
            f"{floor.cpu_s:.2f}",
            f"{floor.spans_per_cpu_s:,.0f}",
            f"{floor.spans_per_cpu_s / limit.spans_per_cpu_s:.3f}",
            f"{floor.spans_per_s / limit.spans_per_s:.3f}",
            "-",
        ]
    )
    print(_table(rows_out))
    print()
    print(
        "limit: opentelemetry-proto parse + one executemany INSERT of one row per span"
        " (trace id, span id, name, end time), in process, single thread;"
        " its CPU-s is time.process_time()"
    )
    print(
        "Python reader floor: the same parse, then each span's ids, name, end time and every"
        " attribute value read into a dict; nothing stored, no rule applied"
    )
    if run.usage_rows != run.expected_rows:
        raise SystemExit(f"usage rows: {run.usage_rows}, expected {run.expected_rows}")
    print(
        f"usage rows in the database: {run.usage_rows} = {run.usage_rows // METERS_PER_SPAN}"
        f" spans x {METERS_PER_SPAN} meters (expected {run.expected_rows}) — ok"
    )
    for r in run.results:
        ratio = r.spans_per_cpu_s / limit.spans_per_cpu_s
        report(f"{run.backend} {r.transport}: spans per server CPU-s", r.spans_per_cpu_s, "spans")
        report(f"{run.backend} {r.transport}: ÷ limit spans/CPU-s", ratio, "ratio", goal=GOAL)
    report(
        f"{run.backend}: Python reader floor ÷ limit spans/CPU-s",
        run.floor.spans_per_cpu_s / limit.spans_per_cpu_s,
        "ratio",
    )
    print(f"(the goal beyond issue 13 is ≥ {LONG_TERM_GOAL:.2f} of the limit)")


def _print_peer(
    args: argparse.Namespace, runs: Sequence[BackendRun], peer: phoenix.PeerResult
) -> None:
    print()
    print(
        f"Arize Phoenix {phoenix.VERSION} (SQLite), {peer.requests} of the same OTLP/HTTP"
        f" requests from {args.concurrency} clients, timed until its {peer.spans} spans are"
        f" stored: wall {peer.wall_s:.2f} s, server CPU {peer.server_cpu_s:.2f} s,"
        f" {peer.spans_per_cpu_s:,.0f} spans/CPU-s (idle CPU before sending:"
        f" {peer.idle_cpu_share * 100:.1f} %)"
    )
    for run in runs:
        for r in run.results:
            if r.transport == "http":
                ratio = r.spans_per_cpu_s / peer.spans_per_cpu_s
                report(f"{run.backend} http: × Phoenix spans/CPU-s", ratio, "ratio", goal=PEER_GOAL)


def _as_json(
    args: argparse.Namespace, runs: Sequence[BackendRun], peer: phoenix.PeerResult | None
) -> dict[str, object]:
    return {
        "synchronous": args.synchronous,
        "concurrency": args.concurrency,
        "spans_per_request": args.spans,
        "backends": {
            run.backend: {
                "results": [
                    {
                        **asdict(r),
                        "spans_per_s": r.spans_per_s,
                        "spans_per_cpu_s": r.spans_per_cpu_s,
                        "ratio_cpu": r.spans_per_cpu_s / run.limit.spans_per_cpu_s,
                        "ratio_wall": r.spans_per_s / run.limit.spans_per_s,
                    }
                    for r in run.results
                ],
                "limit": {
                    **asdict(run.limit),
                    "spans_per_s": run.limit.spans_per_s,
                    "spans_per_cpu_s": run.limit.spans_per_cpu_s,
                },
                "python_floor": {
                    **asdict(run.floor),
                    "spans_per_cpu_s": run.floor.spans_per_cpu_s,
                    "ratio_cpu": run.floor.spans_per_cpu_s / run.limit.spans_per_cpu_s,
                },
                "usage_rows": run.usage_rows,
            }
            for run in runs
        },
        "phoenix": None if peer is None else {**asdict(peer), "version": phoenix.VERSION},
    }


if __name__ == "__main__":
    sys.exit(main())
