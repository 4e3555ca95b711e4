"""REST read latency of `agentmeter serve`, idle and under saturating OTLP ingest, in one run.

Starts `agentmeter serve` on a fresh SQLite file, creates a tenant, stores some usage, then
times REST reads (`GET /api/v1/customers/{id}` and `GET /api/v1/usage?group_by=meter`,
alternating, one at a time from one client) twice: with nothing else going on, and while
`--clients` OTLP/HTTP clients send `--spans`-span exports as fast as they are answered.
Every export is stored once before timing and re-sent under load, so both phases read
the same table (a growing table would slow the usage query for its own reasons).
Prints p50/p99/max of both phases, the ingest rate reached during the loaded phase, and
the goal line (p99 under load ≤ 100 ms). Rate limits are turned off for the run: the
benchmark measures latency, not throttling.

    python bench/rest_latency.py [--clients 8] [--spans 512] [--reads 400] [--json]

No assertion on timing: figures depend on the machine and on what else runs on it.
"""

from __future__ import annotations

import argparse
import json
import random
import statistics
import sys
import tempfile
import threading
import time
from collections.abc import Sequence
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:  # run as `python bench/rest_latency.py` from anywhere
    sys.path.insert(0, str(ROOT))

from agentmeter.db import make_engine, migrate  # noqa: E402
from agentmeter.settings import Settings  # noqa: E402
from agentmeter.tenants import create_tenant  # noqa: E402
from bench.figures import report  # noqa: E402
from bench.ingest import HttpClient, IdSource, Server, make_request  # noqa: E402
from bench.reads import percentile  # noqa: E402

GOAL_P99_MS = 100.0
NO_RATE_LIMITS = {"AGENTMETER_API_RATE_LIMIT": "", "AGENTMETER_INGEST_RATE_LIMIT": ""}


READS = {
    "customer": "/api/v1/customers/customer-001",  # a key lookup
    "usage": "/api/v1/usage?group_by=meter",  # an aggregate over every usage row
}


def time_reads(api: str, admin_key: str, reads: int) -> dict[str, list[float]]:
    """Milliseconds of `reads` REST reads of each kind, alternating, one at a time; any
    non-200 aborts the run."""
    latencies: dict[str, list[float]] = {name: [] for name in READS}
    with httpx.Client(
        base_url=api, headers={"authorization": f"Bearer {admin_key}"}, timeout=60
    ) as client:
        for _ in range(reads):
            for name, path in READS.items():
                started = time.perf_counter()
                response = client.get(path)
                latencies[name].append((time.perf_counter() - started) * 1000)
                if response.status_code != 200:
                    raise SystemExit(f"{path} answered {response.status_code}: {response.text}")
    return latencies


class IngestLoad:
    """`clients` threads, each sending pre-encoded exports back to back until `stop`."""

    def __init__(self, port: int, ingest_key: str, bodies: Sequence[bytes], clients: int) -> None:
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self.requests = 0
        self.errors = 0
        self._threads = [
            threading.Thread(target=self._run, args=(port, ingest_key, bodies, n), daemon=True)
            for n in range(clients)
        ]

    def _run(self, port: int, ingest_key: str, bodies: Sequence[bytes], offset: int) -> None:
        client = HttpClient(port, ingest_key)
        n = offset
        try:
            while not self._stop.is_set():
                try:
                    client.send(bodies[n % len(bodies)])
                    with self._lock:
                        self.requests += 1
                except (RuntimeError, httpx.HTTPError):
                    with self._lock:
                        self.errors += 1
                n += 1
        finally:
            client.close()

    def start(self) -> None:
        for thread in self._threads:
            thread.start()

    def stop(self) -> None:
        self._stop.set()
        for thread in self._threads:
            thread.join(timeout=180)


def _summary(latencies: Sequence[float]) -> dict[str, float]:
    """p50, p99 and max of `latencies`, in ms."""
    return {
        "p50_ms": round(statistics.median(latencies), 2),
        "p99_ms": round(percentile(latencies, 0.99), 2),
        "max_ms": round(max(latencies), 2),
    }


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--clients", type=int, default=8, help="OTLP/HTTP clients")
    parser.add_argument("--spans", type=int, default=512, help="spans per export")
    parser.add_argument("--requests", type=int, default=16, help="distinct exports encoded")
    parser.add_argument("--reads", type=int, default=400, help="REST reads per phase")
    parser.add_argument("--warmup", type=float, default=3.0, help="seconds of load before timing")
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    args = parser.parse_args(argv)

    rng = random.Random(8)
    ids = IdSource()
    bodies = [make_request(ids, args.spans, 8, rng) for _ in range(args.requests)]
    with tempfile.TemporaryDirectory(prefix="agentmeter-rest-latency-") as directory:
        database = Path(directory) / "agentmeter.db"
        url = f"sqlite:///{database}"
        engine = make_engine(Settings(database_url=url))
        migrate(engine)
        tenant = create_tenant(engine, "bench")
        engine.dispose()
        server = Server.start(url, "FULL", Path(directory) / "server.log", NO_RATE_LIMITS)
        try:
            api = f"http://127.0.0.1:{server.api_port}"
            seed = HttpClient(server.http_port, tenant.ingest_key)
            for body in bodies:
                # Every export stored once beforehand: both phases read the same table, and
                # the load re-sends them (full decoding and a write that finds duplicates).
                seed.send(body)
            seed.close()
            created = httpx.post(
                f"{api}/api/v1/customers",
                json={"id": "customer-001", "name": "Customer 1"},
                headers={"authorization": f"Bearer {tenant.admin_key}"},
                timeout=60,
            )
            if created.status_code != 201:
                raise SystemExit(f"could not create a customer: {created.text}")
            time_reads(api, tenant.admin_key, 10)  # warm-up
            idle = time_reads(api, tenant.admin_key, args.reads)

            load = IngestLoad(server.http_port, tenant.ingest_key, bodies, args.clients)
            load.start()
            time.sleep(args.warmup)
            started, before = time.monotonic(), load.requests
            loaded = time_reads(api, tenant.admin_key, args.reads)
            seconds, sent = time.monotonic() - started, load.requests - before
            load.stop()
        finally:
            server.stop()

    phases = {"idle": idle, "under_ingest": loaded}
    figures = {
        f"{read}_{phase}": _summary(samples[read])
        for read in READS
        for phase, samples in phases.items()
    }
    worst_p99 = max(percentile(samples, 0.99) for samples in loaded.values())
    result = {
        "clients": args.clients,
        "spans_per_export": args.spans,
        "usage_rows": args.requests * args.spans * 3,
        **figures,
        "ingest_spans_per_s_during_reads": round(sent * args.spans / seconds),
        "ingest_errors": load.errors,
        "goal_p99_ms": GOAL_P99_MS,
        "goal_met": worst_p99 <= GOAL_P99_MS,
    }
    report("REST p99 under saturating ingest (worst read)", worst_p99, "ms", goal=GOAL_P99_MS,
           higher_is_better=False)  # fmt: skip
    if args.json:
        print(json.dumps(result))
        return 0
    print(f"REST reads ({args.reads} of each per phase), ms        p50      p99      max")
    for name, summary in figures.items():
        print(
            f"  {name:<40} {summary['p50_ms']:>8.2f} {summary['p99_ms']:>8.2f}"
            f" {summary['max_ms']:>8.2f}"
        )
    print(f"usage rows read by the usage aggregate: {result['usage_rows']}")
    print(
        f"ingest during the loaded phase: {result['ingest_spans_per_s_during_reads']} spans/s "
        f"from {args.clients} OTLP/HTTP clients x {args.spans} spans, "
        f"{load.errors} failed exports"
    )
    verdict = "met" if result["goal_met"] else "NOT met"
    print(f"goal: p99 under load <= {GOAL_P99_MS:.0f} ms: {verdict}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
