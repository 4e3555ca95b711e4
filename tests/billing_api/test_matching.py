"""Which component prices a usage group (`billing_api.rating.matching`): most specific wins
(more filters, then more exact filters), then higher priority, then lower position."""

from __future__ import annotations

from collections.abc import Mapping
from random import Random

import pytest
from hypothesis import given
from hypothesis import strategies as st

from agentmeter.patterns import is_glob
from billing_api.pricing.components import ChargeModel, Component, Filters
from billing_api.rating.matching import best_component, matches

GPT_4O = {"provider": "openai", "model": "gpt-4o-2024-08-06", "operation": "chat"}


def component(
    name: str,
    filters: Mapping[str, str] | None = None,
    *,
    meter: str = "input_tokens",
    priority: int = 0,
    position: int = 0,
) -> Component:
    return Component(
        id=name,
        name=name,
        meter=meter,
        filters=Filters(filters or {}),
        charge=ChargeModel.PER_UNIT,
        priority=priority,
        position=position,
    )


def winner(components: list[Component], dims: Mapping[str, str] = GPT_4O) -> str | None:
    found = best_component(components, "input_tokens", dims)
    return None if found is None else found.name


@pytest.mark.parametrize(
    ("pattern", "glob"),
    [
        pytest.param("gpt-4o", False, id="plain"),
        pytest.param("gpt-4o*", True, id="star"),
        pytest.param("gpt-4?", True, id="question-mark"),
        pytest.param("gpt-[34]o", True, id="class"),
        pytest.param("", False, id="empty"),
    ],
)
def test_is_glob(pattern: str, glob: bool) -> None:
    assert is_glob(pattern) is glob


@pytest.mark.parametrize(
    ("filters", "dims", "expected"),
    [
        pytest.param({}, GPT_4O, True, id="no-filters-match-everything"),
        pytest.param({"model": "gpt-4o-2024-08-06"}, GPT_4O, True, id="exact"),
        pytest.param({"model": "gpt-4o"}, GPT_4O, False, id="exact-is-not-prefix"),
        pytest.param({"model": "gpt-4o*"}, GPT_4O, True, id="star"),
        pytest.param({"model": "GPT-4o*"}, GPT_4O, False, id="glob-is-case-sensitive"),
        pytest.param({"model": "gpt-4o-2024-0?-06"}, GPT_4O, True, id="question-mark"),
        pytest.param({"model": "gpt-4o-2024-0[89]-*"}, GPT_4O, True, id="class"),
        pytest.param({"model": "gpt-4o-2024-0[12]-*"}, GPT_4O, False, id="class-miss"),
        pytest.param(
            {"provider": "openai", "model": "claude*"}, GPT_4O, False, id="every-filter-must-match"
        ),
        # A dimension the usage lacks reads as "": "*" matches it, a value does not.
        pytest.param({"tool": "*"}, GPT_4O, True, id="missing-dim-glob"),
        pytest.param({"tool": "search"}, GPT_4O, False, id="missing-dim-exact"),
    ],
)
def test_matches(filters: dict[str, str], dims: dict[str, str], expected: bool) -> None:
    assert matches(component("c", filters), "input_tokens", dims) is expected


def test_meter_must_be_equal() -> None:
    assert not matches(component("c", meter="output_tokens"), "input_tokens", GPT_4O)
    assert winner([component("c", meter="output_tokens")]) is None


@pytest.mark.parametrize(
    ("components", "expected"),
    [
        pytest.param(
            [component("any"), component("model", {"model": "gpt-4o*"})],
            "model",
            id="a-filter-beats-none",
        ),
        pytest.param(
            [
                component("model", {"model": "gpt-4o-2024-08-06"}),
                component("provider+model", {"provider": "open*", "model": "gpt-*"}),
            ],
            "provider+model",
            id="more-filters-beat-more-exact",
        ),
        pytest.param(
            [
                component("glob", {"model": "gpt-4o*"}, priority=10),
                component("exact", {"model": "gpt-4o-2024-08-06"}, position=5),
            ],
            "exact",
            id="exact-beats-glob-before-priority",
        ),
        pytest.param(
            [
                component("one-exact", {"provider": "openai", "model": "gpt-*"}),
                component("two-exact", {"provider": "openai", "model": "gpt-4o-2024-08-06"}),
            ],
            "two-exact",
            id="more-exact-of-same-count",
        ),
        pytest.param(
            [
                component("low", {"model": "gpt-*"}, priority=0),
                component("high", {"model": "*-08-06"}, priority=1, position=9),
            ],
            "high",
            id="priority-breaks-a-tie",
        ),
        pytest.param(
            [
                component("second", {"model": "*-08-06"}, position=1),
                component("first", {"model": "gpt-*"}, position=0),
            ],
            "first",
            id="position-breaks-a-tie",
        ),
        pytest.param(
            [
                component("claude", {"model": "claude-*"}),
                component("other-meter", meter="output_tokens"),
            ],
            None,
            id="no-match",
        ),
        pytest.param([], None, id="no-components"),
    ],
)
def test_best_component(components: list[Component], expected: str | None) -> None:
    assert winner(components) == expected
    # The rule is total: the list's order does not matter.
    assert winner(list(reversed(components))) == expected


specs = st.lists(
    st.tuples(
        st.dictionaries(
            st.sampled_from(["provider", "model", "operation"]),
            st.sampled_from(["openai", "gpt-4o-2024-08-06", "chat", "*", "gpt-*", "o*", "x"]),
            max_size=3,
        ),
        st.integers(min_value=0, max_value=2),
    ),
    max_size=6,
)


@given(specs, st.randoms(use_true_random=False))
def test_winner_does_not_depend_on_order(
    spec: list[tuple[dict[str, str], int]], random: Random
) -> None:
    components = [
        component(f"c{i}", filters, priority=priority, position=i)
        for i, (filters, priority) in enumerate(spec)
    ]
    shuffled = list(components)
    random.shuffle(shuffled)
    assert winner(shuffled) == winner(components)
    found = winner(components)
    if found is not None:
        chosen = next(c for c in components if c.name == found)
        assert matches(chosen, "input_tokens", GPT_4O)
