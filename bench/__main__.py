"""Every benchmark, one after the other, and one table of their headline figures.

    scripts/test.sh --exec python -m bench [--quick] [--only ingest,rating]

Each benchmark runs as its own process (`python bench/<script> <args>`); its output goes
to standard error as it runs, and the figures it reports (`bench.figures.report`) are
gathered into the table printed at the end: figure, value, goal, met / NOT met. PostgreSQL
figures need AGENTMETER_TEST_POSTGRES_URL (`scripts/test.sh --exec` sets it). `--quick`
runs each at a small size: to see that everything works, not to quote.

To add a benchmark: one `Bench(...)` line in `BENCHES`, and `report(...)` calls in it.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from bench.figures import Figure, parse  # noqa: E402


@dataclass(frozen=True, slots=True)
class Bench:
    """A benchmark script in `bench/`, its arguments, and the smaller ones of `--quick`."""

    name: str
    script: str
    args: tuple[str, ...] = ()
    quick: tuple[str, ...] = ()


_SMALL = ("--customers", "200", "--records", "60000")
BENCHES = (
    Bench("ingest", "ingest.py", ("--backend", "both", "--phoenix"),
          ("--requests", "6", "--spans", "256", "--backend", "both", "--phoenix")),
    Bench("rating", "rating.py", (), _SMALL),
    Bench("invoicing", "invoicing.py", (), _SMALL),
    Bench("late_usage", "late_usage.py", (), _SMALL),
    Bench("portal", "portal.py", (), (*_SMALL, "--requests", "10")),
    Bench("read_paths", "read_paths.py", (), (*_SMALL, "--requests", "10")),
    Bench("dashboard", "dashboard.py", ("--requests", "20"), (*_SMALL, "--requests", "5")),
    Bench("storage", "storage.py", (), ("--spans", "5000")),
    Bench("rest_latency", "rest_latency.py", (), ("--requests", "4", "--reads", "40")),
    Bench("sink_write", "sink_write.py", (), ("--batches", "4")),
)  # fmt: skip


@dataclass(frozen=True, slots=True)
class Outcome:
    bench: Bench
    figures: list[Figure]
    seconds: float
    returncode: int


def run(bench: Bench, quick: bool) -> Outcome:
    """Run one benchmark, its output echoed to standard error; its reported figures."""
    command = [sys.executable, str(ROOT / "bench" / bench.script)]
    command += bench.quick if quick else bench.args
    print(f"== {bench.name}: {' '.join(command[1:])}", file=sys.stderr, flush=True)
    started = time.perf_counter()
    lines: list[str] = []
    with subprocess.Popen(command, cwd=ROOT, stdout=subprocess.PIPE, text=True) as process:
        assert process.stdout is not None
        for line in process.stdout:
            sys.stderr.write(line)
            lines.append(line.rstrip("\n"))
    return Outcome(bench, parse(lines), time.perf_counter() - started, process.returncode)


def _number(value: float) -> str:
    return f"{value:,.3f}" if abs(value) < 10 else f"{value:,.0f}"


def table(outcomes: Sequence[Outcome]) -> str:
    """The summary: one row per figure, and a row for a benchmark that failed."""
    rows = [["bench", "figure", "value", "unit", "goal", "met"]]
    for outcome in outcomes:
        if outcome.returncode != 0:
            rows.append([outcome.bench.name, f"FAILED (exit {outcome.returncode})", *"----"])
        for figure in outcome.figures:
            goal = "-"
            if figure.goal is not None:
                goal = f"{'≥' if figure.higher_is_better else '≤'} {_number(figure.goal)}"
            met = {None: "-", True: "met", False: "NOT met"}[figure.met]
            rows.append(
                [outcome.bench.name, figure.name, _number(figure.value), figure.unit, goal, met]
            )
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    lines = [
        "  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True))
        for row in rows
    ]
    lines.insert(1, "  ".join("-" * width for width in widths))
    return "\n".join(line.rstrip() for line in lines)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="small sizes: a smoke run")
    parser.add_argument(
        "--only", default="", help=f"comma-separated subset of {[b.name for b in BENCHES]}"
    )
    args = parser.parse_args(argv)
    wanted = {name.strip() for name in args.only.split(",") if name.strip()}
    unknown = wanted - {bench.name for bench in BENCHES}
    if unknown:
        raise SystemExit(f"unknown benchmarks: {sorted(unknown)}")
    outcomes = [run(b, args.quick) for b in BENCHES if not wanted or b.name in wanted]
    print(table(outcomes))
    return 1 if any(outcome.returncode != 0 for outcome in outcomes) else 0


if __name__ == "__main__":
    sys.exit(main())
