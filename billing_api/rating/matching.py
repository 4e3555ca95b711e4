"""Which price component prices a group of usage.

A component matches usage of its meter when every filter matches the usage's dimension:
an exact value, or a glob pattern (`*`, `?`, `[...]`, case-sensitive). Among matches the
most specific wins: more filters first, then more exact (non-glob) filters, then the
higher `priority`, then the component listed first (`position`). The rule is total, so a
usage group always lands on exactly one component or on none (then it is unpriced).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from agentmeter.patterns import is_glob, pattern_matches
from billing_api.pricing.components import Component


def matches(component: Component, meter: str, dims: Mapping[str, str]) -> bool:
    if component.meter != meter:
        return False
    for dim, pattern in component.filters.items():
        if not pattern_matches(pattern, dims.get(dim, "")):
            return False
    return True


def _rank(component: Component) -> tuple[int, int, int, int]:
    exact = sum(1 for pattern in component.filters.values() if not is_glob(pattern))
    return (len(component.filters), exact, component.priority, -component.position)


def best_component(
    components: Sequence[Component], meter: str, dims: Mapping[str, str]
) -> Component | None:
    """The component that prices usage of `meter` with dimensions `dims`, if any."""
    candidates = [c for c in components if matches(c, meter, dims)]
    return max(candidates, key=_rank) if candidates else None
