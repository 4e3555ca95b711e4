"""Dimension patterns, one rule for price filters and provider cost overrides alike: an
exact value, or a case-sensitive glob (`*`, `?`, `[...]`)."""

from __future__ import annotations

from fnmatch import fnmatchcase

_GLOB = frozenset("*?[")


def is_glob(pattern: str) -> bool:
    return any(char in _GLOB for char in pattern)


def pattern_matches(pattern: str, value: str) -> bool:
    return fnmatchcase(value, pattern) if is_glob(pattern) else value == pattern
