"""A draft price version as an HTML form holds it, and back.

A draft lives only in the form until it is published: rows of component fields named
`c-<row>-<field>` (a row without a name is left out), tiers as text — one tier a line,
`up_to unit_price [flat_fee]`, `*` for the unbounded last tier — and filters as
`dimension=pattern` pairs separated by commas. The result is the JSON body the REST API
takes (`VersionCreate`), checked by that same schema; its errors map back to the fields.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from billing_api.dashboard.forms import FieldErrors, parse
from billing_api.pricing.schemas import ComponentOut, VersionCreate

COMPONENT_FIELDS = (
    "name",
    "charge",
    "meter",
    "filters",
    "unit_price",
    "per_units",
    "tiers",
    "package_size",
    "included_quantity",
    "amount",
    "markup",
    "priority",
)
BLANK_ROWS = 2


@dataclass
class Draft:
    """The editor's state: the raw text of every field, and errors per field id
    ("effective_from", "c-0-unit_price", "c-0" for a row, "" for the whole draft)."""

    effective_from: str = ""
    copy_from_version: str = ""
    rows: list[dict[str, str]] = field(default_factory=list)
    errors: FieldErrors = field(default_factory=dict)

    def with_blank_rows(self, count: int = BLANK_ROWS) -> Draft:
        """The same draft with `count` empty rows to fill in."""
        blank = dict.fromkeys(COMPONENT_FIELDS, "")
        return Draft(self.effective_from, self.copy_from_version,
                     [*self.rows, *(dict(blank) for _ in range(count))], self.errors)  # fmt: skip


def from_form(form: Mapping[str, str]) -> Draft:
    """The draft a submitted editor form holds (rows without a name are dropped)."""
    rows: dict[int, dict[str, str]] = {}
    for key, value in form.items():
        parts = key.split("-", 2)
        if (
            len(parts) == 3
            and parts[0] == "c"
            and parts[1].isdigit()
            and parts[2] in COMPONENT_FIELDS
        ):
            rows.setdefault(int(parts[1]), dict.fromkeys(COMPONENT_FIELDS, ""))[parts[2]] = value
    kept = [rows[i] for i in sorted(rows) if rows[i]["name"].strip()]
    return Draft(
        effective_from=form.get("effective_from", "").strip(),
        copy_from_version=form.get("copy_from_version", "").strip(),
        rows=kept,
    )


def from_components(components: Sequence[ComponentOut], effective_from: str) -> Draft:
    """A draft starting from a version's components (to change them in a new version)."""
    rows = []
    for c in components:
        tiers = "\n".join(
            " ".join(
                [str(t.up_to) if t.up_to is not None else "*", str(t.unit_price)]
                + ([str(t.flat_fee)] if t.flat_fee else [])
            )
            for t in c.tiers or []
        )
        values: dict[str, Any] = {
            **c.model_dump(include=set(COMPONENT_FIELDS) - {"filters", "tiers"}),
            "filters": ", ".join(f"{k}={v}" for k, v in c.filters.items()),
            "tiers": tiers,
        }
        if values["per_units"] == 1:
            values["per_units"] = None
        if values["priority"] == 0:
            values["priority"] = None
        rows.append({k: "" if values[k] is None else str(values[k]) for k in COMPONENT_FIELDS})
    return Draft(effective_from=effective_from, rows=rows)


def _tiers(text: str) -> list[dict[str, str | None]]:
    tiers = []
    for number, line in enumerate((x.strip() for x in text.splitlines()), start=1):
        if not line:
            continue
        parts = line.split()
        if len(parts) not in (2, 3):
            raise ValueError(f"tier line {number}: write 'up_to unit_price [flat_fee]'")
        tier: dict[str, str | None] = {
            "up_to": None if parts[0] == "*" else parts[0],
            "unit_price": parts[1],
        }
        if len(parts) == 3:
            tier["flat_fee"] = parts[2]
        tiers.append(tier)
    return tiers


def _filters(text: str) -> dict[str, str]:
    found = {}
    for pair in (p.strip() for p in text.split(",")):
        if not pair:
            continue
        dimension, equals, pattern = pair.partition("=")
        if not equals or not dimension.strip() or not pattern.strip():
            raise ValueError(f"write filters as dimension=pattern, not {pair!r}")
        found[dimension.strip()] = pattern.strip()
    return found


def _named_field(message: str) -> str:
    """The field a component-wide message is about ("… requires unit_price", "… does not
    take meter"), so it shows next to that field."""
    for marker in (" requires ", " does not take "):
        if marker in message:
            return message.split(marker, 1)[1].split(",")[0].strip()
    return ""


def to_version(draft: Draft) -> tuple[VersionCreate | None, FieldErrors]:
    """The API body of the draft, or errors keyed by the form's field ids."""
    errors: FieldErrors = {}
    components: list[dict[str, Any]] = []
    for index, row in enumerate(draft.rows):
        component: dict[str, Any] = {
            k: v.strip() for k, v in row.items() if k not in ("filters", "tiers") and v.strip()
        }
        for name, convert in (("filters", _filters), ("tiers", _tiers)):
            if row.get(name, "").strip():
                try:
                    component[name] = convert(row[name])
                except ValueError as error:
                    errors[f"c-{index}-{name}"] = str(error)
        components.append(component)
    body = {"effective_from": draft.effective_from, "components": components,
            "copy_from_version": draft.copy_from_version}  # fmt: skip
    version, problems = parse(VersionCreate, body)
    for path, message in problems.items():
        parts = path.split(".")
        if parts[0] == "components" and len(parts) >= 2 and parts[1].isdigit():
            named = parts[2] if len(parts) >= 3 else _named_field(message)
            key = f"c-{parts[1]}-{named}" if named in COMPONENT_FIELDS else f"c-{parts[1]}"
        else:
            key = parts[0] if parts[0] in ("effective_from", "copy_from_version") else ""
        errors.setdefault(key, message)
    return (None, errors) if errors else (version, {})
