"""Headline figures of a benchmark, one machine-readable line each, for `python -m bench`.

A benchmark prints its own report as it likes and, besides, calls `report` once per figure
that has a goal (or is worth a row in the summary). `python -m bench` runs every registered
benchmark and reads these lines back (`parse`) into one table.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from dataclasses import asdict, dataclass

PREFIX = "bench-figure: "


@dataclass(frozen=True, slots=True)
class Figure:
    """One measured figure and its goal: `value` should be ≥ `goal` when `higher_is_better`,
    else ≤ `goal`; no goal, no verdict."""

    name: str
    value: float
    unit: str
    goal: float | None = None
    higher_is_better: bool = True

    @property
    def met(self) -> bool | None:
        """Whether the goal is met; None without a goal."""
        if self.goal is None:
            return None
        return self.value >= self.goal if self.higher_is_better else self.value <= self.goal


def report(
    name: str, value: float, unit: str, *, goal: float | None = None, higher_is_better: bool = True
) -> Figure:
    """Print `name`'s figure as one `bench-figure:` line (flushed) and return it."""
    figure = Figure(name, float(value), unit, goal, higher_is_better)
    print(PREFIX + json.dumps(asdict(figure)), flush=True)
    return figure


def parse(lines: Iterable[str]) -> list[Figure]:
    """The figures among a benchmark's output lines."""
    return [
        Figure(**json.loads(line.removeprefix(PREFIX))) for line in lines if line.startswith(PREFIX)
    ]
