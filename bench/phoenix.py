"""Arize Phoenix as the peer of the ingest benchmark: the same OTLP/HTTP requests, timed
until Phoenix has stored their spans.

Phoenix pins its own OpenTelemetry versions, so it never joins AgentMeter's environment: it
is installed on first use into `bench/.phoenix-venv` (gitignored) from PyPI at `VERSION`,
and runs as a subprocess (`phoenix serve`) on a fresh SQLite file. Phoenix acknowledges an
export once the spans sit in its in-memory queue and writes them later, so the clock and
the CPU count run until its `spans` table holds every span sent.
"""

from __future__ import annotations

import os
import socket
import sqlite3
import subprocess
import sys
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import httpx
import psutil

VERSION = "20.26.1"
VENV = Path(__file__).resolve().parent / ".phoenix-venv"
PROTOBUF = "application/x-protobuf"
STORE_TIMEOUT_SECONDS = 900.0


@dataclass
class PeerResult:
    requests: int
    spans: int
    wall_s: float
    server_cpu_s: float
    idle_cpu_share: float  # of one CPU, measured over two seconds before sending

    @property
    def spans_per_cpu_s(self) -> float:
        return self.spans / self.server_cpu_s


def installed() -> Path:
    """The `phoenix` command of the bench's own Phoenix environment, installed if missing."""
    command = VENV / "bin" / "phoenix"
    version = VENV / "installed-version"
    if command.exists() and version.exists() and version.read_text().strip() == VERSION:
        return command
    print(f"installing arize-phoenix=={VERSION} into {VENV} (once)", flush=True)
    subprocess.run([sys.executable, "-m", "venv", "--clear", str(VENV)], check=True)
    subprocess.run(
        [str(VENV / "bin" / "pip"), "install", "--quiet", f"arize-phoenix=={VERSION}"],
        check=True,
    )
    version.write_text(VERSION)
    return command


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
    return port


def _tree_cpu_seconds(process: psutil.Process) -> float:
    total = 0.0
    for proc in (process, *process.children(recursive=True)):
        try:
            times = proc.cpu_times()
        except psutil.NoSuchProcess:
            continue
        total += times.user + times.system
    return total


def _stored_spans(database: Path) -> int:
    if not database.exists():
        return 0
    connection = sqlite3.connect(f"file:{database}?mode=ro", uri=True, timeout=30)
    try:
        count: int = connection.execute("SELECT count(*) FROM spans").fetchone()[0]
    except sqlite3.OperationalError:  # not migrated yet
        return 0
    finally:
        connection.close()
    return count


def measure(
    bodies: Sequence[bytes], spans_per_request: int, work: Path, concurrency: int
) -> PeerResult:
    """Start Phoenix on a fresh SQLite file in `work`, send `bodies` from `concurrency`
    clients, and time it (wall and the CPU of its process tree) until all spans are stored."""
    command = installed()
    work.mkdir(parents=True, exist_ok=True)
    database = work / "phoenix.db"
    port = _free_port()
    env = {
        **os.environ,
        "PHOENIX_WORKING_DIR": str(work),
        "PHOENIX_SQL_DATABASE_URL": f"sqlite:///{database}",
        "PHOENIX_PORT": str(port),
        "PHOENIX_GRPC_PORT": str(_free_port()),
        "PHOENIX_HOST": "127.0.0.1",
        "PHOENIX_TELEMETRY_ENABLED": "false",
    }
    with (work / "phoenix.log").open("w") as log:
        process = subprocess.Popen(
            [str(command), "serve"], env=env, stdout=log, stderr=subprocess.STDOUT
        )
    try:
        base = f"http://127.0.0.1:{port}"
        _wait_ready(base, process, work / "phoenix.log")
        ps = psutil.Process(process.pid)
        expected = len(bodies) * spans_per_request
        idle_before = _tree_cpu_seconds(ps)
        time.sleep(2.0)
        cpu_before = _tree_cpu_seconds(ps)
        idle = (cpu_before - idle_before) / 2.0
        started = time.perf_counter()
        _send(f"{base}/v1/traces", bodies, concurrency)
        deadline = time.monotonic() + STORE_TIMEOUT_SECONDS
        while (stored := _stored_spans(database)) < expected:
            if time.monotonic() > deadline or process.poll() is not None:
                raise SystemExit(f"phoenix stored {stored} of {expected} spans")
            time.sleep(0.05)
        wall = time.perf_counter() - started
        cpu = _tree_cpu_seconds(ps) - cpu_before
    finally:
        process.terminate()
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
    return PeerResult(len(bodies), expected, wall, cpu, idle)


def _wait_ready(base: str, process: subprocess.Popen[bytes], log: Path) -> None:
    deadline = time.monotonic() + 180
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise SystemExit(f"phoenix exited ({process.returncode}):\n{log.read_text()[-2000:]}")
        try:
            if httpx.get(f"{base}/healthz", timeout=2).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.5)
    raise SystemExit("phoenix did not become ready in 180 s")


def _send(url: str, bodies: Sequence[bytes], concurrency: int) -> None:
    pending = list(reversed(bodies))
    lock = threading.Lock()
    errors: list[str] = []

    def work() -> None:
        with httpx.Client(timeout=300) as client:
            while True:
                with lock:
                    if not pending or errors:
                        return
                    body = pending.pop()
                response = client.post(url, content=body, headers={"content-type": PROTOBUF})
                if response.status_code >= 300:
                    errors.append(f"HTTP {response.status_code}: {response.text[:300]}")

    threads = [threading.Thread(target=work, daemon=True) for _ in range(concurrency)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    if errors:
        raise SystemExit(f"phoenix refused an export: {errors[0]}")
