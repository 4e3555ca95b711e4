"""The inputs of rating as plain values: price terms in effect, and usage aggregates."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from decimal import Decimal

from billing_api.pricing.components import Component
from billing_api.rating.matching import best_component


@dataclass(frozen=True, slots=True)
class UsageGroup:
    """Usage of one meter with one combination of dimensions, summed by the database."""

    meter: str
    dims: tuple[tuple[str, str], ...]
    quantity_micros: int
    cost_pico: int  # known provider cost, 10^-12 USD
    unknown_cost_records: int  # records whose provider cost is unknown


@dataclass(frozen=True, slots=True)
class VersionTerms:
    id: str
    number: int
    effective_from: datetime
    components: tuple[Component, ...]


@dataclass(frozen=True, slots=True)
class OverrideTerms:
    id: str
    effective_from: datetime
    effective_until: datetime | None
    components: tuple[Component, ...]

    def active_at(self, moment: datetime) -> bool:
        return self.effective_from <= moment and (
            self.effective_until is None or moment < self.effective_until
        )


@dataclass(frozen=True, slots=True)
class BookTerms:
    id: str
    name: str
    currency: str
    usd_rate: Decimal
    versions: tuple[VersionTerms, ...]  # by effective_from

    def version_at(self, moment: datetime) -> VersionTerms | None:
        current = None
        for version in self.versions:
            if version.effective_from <= moment:
                current = version
        return current


@dataclass(frozen=True, slots=True)
class SliceTerms:
    """The components in effect from one instant: the book version's, with the customer's
    overrides layered on top (same name replaces, new name adds; later override wins)."""

    version: VersionTerms | None
    components: tuple[Component, ...]
    override_of: Mapping[str, str]  # component id → override id, for components from overrides
    # best_component answers, memoized: many customers share the same terms and dimensions.
    matches: dict[tuple[str, tuple[tuple[str, str], ...]], Component | None] = field(
        default_factory=dict, compare=False
    )

    def component_for(self, meter: str, dims: tuple[tuple[str, str], ...]) -> Component | None:
        key = (meter, dims)
        if key not in self.matches:
            self.matches[key] = best_component(self.components, meter, dict(dims))
        return self.matches[key]


@dataclass(frozen=True, slots=True)
class TenantPricing:
    """Everything rating needs to know about a tenant's prices, loaded once.

    `assigned_books`, `registered` and `billing_days` hold the customers it was loaded for
    (`load_pricing`'s `customer_ids`; all of the tenant's by default)."""

    books: Mapping[str, BookTerms]
    default_book_id: str | None
    assigned_books: Mapping[str, str]
    overrides: Mapping[str, tuple[OverrideTerms, ...]]
    registered: frozenset[str]
    billing_days: Mapping[str, int]
    # terms_at answers shared by customers on the same book without overrides.
    _shared_terms: dict[tuple[str | None, str | None], SliceTerms] = field(
        default_factory=dict, compare=False
    )

    @property
    def filter_dimensions(self) -> tuple[str, ...]:
        """The dimensions any component of any book or override filters on, sorted."""
        components = [c for b in self.books.values() for v in b.versions for c in v.components]
        components += [c for os in self.overrides.values() for o in os for c in o.components]
        return tuple(sorted({dim for c in components for dim in c.filters}))

    def book_for(self, customer_id: str) -> BookTerms | None:
        book_id = self.assigned_books.get(customer_id, self.default_book_id)
        return self.books.get(book_id) if book_id else None

    def boundaries(self, start: datetime, end: datetime) -> list[datetime]:
        """Instants in (start, end) where any book's or override's terms change."""
        instants = {v.effective_from for b in self.books.values() for v in b.versions}
        for overrides in self.overrides.values():
            for override in overrides:
                instants.add(override.effective_from)
                if override.effective_until is not None:
                    instants.add(override.effective_until)
        return sorted(i for i in instants if start < i < end)

    def terms_at(self, customer_id: str, moment: datetime) -> SliceTerms:
        book = self.book_for(customer_id)
        version = book.version_at(moment) if book else None
        active = [o for o in self.overrides.get(customer_id, ()) if o.active_at(moment)]
        if not active:
            key = (book.id if book else None, version.id if version else None)
            shared = self._shared_terms.get(key)
            if shared is None:
                components = version.components if version else ()
                shared = SliceTerms(version=version, components=components, override_of={})
                self._shared_terms[key] = shared
            return shared
        by_name = {c.name: c for c in version.components} if version else {}
        override_of: dict[str, str] = {}
        for override in active:
            for component in override.components:
                by_name[component.name] = component
                override_of[component.id] = override.id
        return SliceTerms(
            version=version, components=tuple(by_name.values()), override_of=override_of
        )
