"""All SQL of the pricing domain. Every query is scoped by tenant, directly or through the
tenant's price book."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence
from datetime import datetime

from sqlalchemy import delete, func, select, update
from sqlalchemy.orm import Session

from agentmeter.clock import utcnow
from agentmeter.tables import (
    CustomerOverride,
    PriceBook,
    PriceComponent,
    PriceVersion,
    ProviderCostOverride,
)


class PricingRepository:
    def __init__(self, session: Session) -> None:
        self._session = session

    def add(self, *rows: object) -> None:
        """Insert rows now, so constraint violations surface here, not at commit."""
        self._session.add_all(rows)
        self._session.flush()

    def flush(self) -> None:
        self._session.flush()

    # --- Price books -------------------------------------------------------------------

    def get_book(self, tenant_id: str, book_id: str) -> PriceBook | None:
        query = select(PriceBook).where(PriceBook.tenant_id == tenant_id, PriceBook.id == book_id)
        return self._session.scalars(query).one_or_none()

    def find_book_by_name(self, tenant_id: str, name: str) -> PriceBook | None:
        query = select(PriceBook).where(PriceBook.tenant_id == tenant_id, PriceBook.name == name)
        return self._session.scalars(query).one_or_none()

    def default_book(self, tenant_id: str) -> PriceBook | None:
        query = select(PriceBook).where(
            PriceBook.tenant_id == tenant_id, PriceBook.is_default.is_(True)
        )
        return self._session.scalars(query.order_by(PriceBook.created_at)).first()

    def list_books(self, tenant_id: str) -> Sequence[PriceBook]:
        query = select(PriceBook).where(PriceBook.tenant_id == tenant_id)
        return self._session.scalars(query.order_by(PriceBook.created_at, PriceBook.id)).all()

    def clear_default(self, tenant_id: str) -> None:
        self._session.execute(
            update(PriceBook)
            .where(PriceBook.tenant_id == tenant_id, PriceBook.is_default.is_(True))
            .values(is_default=False)
            .execution_options(synchronize_session="fetch")
        )

    # --- Versions ----------------------------------------------------------------------

    def list_versions(self, book_id: str) -> Sequence[PriceVersion]:
        query = select(PriceVersion).where(PriceVersion.book_id == book_id)
        return self._session.scalars(query.order_by(PriceVersion.number)).all()

    def get_version(self, book_id: str, number: int) -> PriceVersion | None:
        query = select(PriceVersion).where(
            PriceVersion.book_id == book_id, PriceVersion.number == number
        )
        return self._session.scalars(query).one_or_none()

    def version_starting_at(self, book_id: str, effective_from: datetime) -> PriceVersion | None:
        query = select(PriceVersion).where(
            PriceVersion.book_id == book_id, PriceVersion.effective_from == effective_from
        )
        return self._session.scalars(query).one_or_none()

    def max_version_number(self, book_id: str) -> int:
        query = select(func.max(PriceVersion.number)).where(PriceVersion.book_id == book_id)
        return self._session.scalar(query) or 0

    def delete_version(self, version: PriceVersion) -> None:
        self.delete_version_components(version.id)
        self._session.delete(version)
        self._session.flush()

    # --- Components --------------------------------------------------------------------

    def version_components(self, version_id: str) -> Sequence[PriceComponent]:
        query = select(PriceComponent).where(PriceComponent.version_id == version_id)
        return self._session.scalars(query.order_by(PriceComponent.position)).all()

    def delete_version_components(self, version_id: str) -> None:
        self._session.execute(delete(PriceComponent).where(PriceComponent.version_id == version_id))

    def override_components(self, override_ids: Sequence[str]) -> dict[str, list[PriceComponent]]:
        """Components of each override, in position order."""
        by_override: dict[str, list[PriceComponent]] = defaultdict(list)
        if not override_ids:
            return by_override
        query = (
            select(PriceComponent)
            .where(PriceComponent.override_id.in_(override_ids))
            .order_by(PriceComponent.override_id, PriceComponent.position)
        )
        for component in self._session.scalars(query):
            assert component.override_id is not None
            by_override[component.override_id].append(component)
        return by_override

    # --- Customer overrides ------------------------------------------------------------

    def list_overrides(self, tenant_id: str, customer_id: str) -> Sequence[CustomerOverride]:
        query = select(CustomerOverride).where(
            CustomerOverride.tenant_id == tenant_id, CustomerOverride.customer_id == customer_id
        )
        return self._session.scalars(
            query.order_by(CustomerOverride.effective_from, CustomerOverride.created_at)
        ).all()

    def get_override(
        self, tenant_id: str, customer_id: str, override_id: str
    ) -> CustomerOverride | None:
        query = select(CustomerOverride).where(
            CustomerOverride.tenant_id == tenant_id,
            CustomerOverride.customer_id == customer_id,
            CustomerOverride.id == override_id,
        )
        return self._session.scalars(query).one_or_none()

    def delete_override(self, override: CustomerOverride) -> None:
        self._session.execute(
            delete(PriceComponent).where(PriceComponent.override_id == override.id)
        )
        self._session.delete(override)
        self._session.flush()

    # --- Provider cost overrides -------------------------------------------------------

    def list_provider_costs(self, tenant_id: str) -> Sequence[ProviderCostOverride]:
        query = select(ProviderCostOverride).where(ProviderCostOverride.tenant_id == tenant_id)
        return self._session.scalars(
            query.order_by(
                ProviderCostOverride.provider,
                ProviderCostOverride.model,
                ProviderCostOverride.meter,
                ProviderCostOverride.effective_from,
            )
        ).all()

    def get_provider_cost(self, tenant_id: str, cost_id: str) -> ProviderCostOverride | None:
        query = select(ProviderCostOverride).where(
            ProviderCostOverride.tenant_id == tenant_id, ProviderCostOverride.id == cost_id
        )
        return self._session.scalars(query).one_or_none()

    def find_provider_cost(
        self, tenant_id: str, provider: str, model: str, meter: str, effective_from: datetime
    ) -> ProviderCostOverride | None:
        query = select(ProviderCostOverride).where(
            ProviderCostOverride.tenant_id == tenant_id,
            ProviderCostOverride.provider == provider,
            ProviderCostOverride.model == model,
            ProviderCostOverride.meter == meter,
            ProviderCostOverride.effective_from == effective_from,
        )
        return self._session.scalars(query).first()

    def delete_provider_cost(self, cost: ProviderCostOverride) -> None:
        self._session.delete(cost)
        self._session.flush()


def lock_versions_of_components(
    session: Session, tenant_id: str, component_ids: Sequence[str]
) -> None:
    """Make the tenant's price versions these components belong to immutable (idempotent)."""
    if not component_ids:
        return
    version_ids = select(PriceComponent.version_id).where(
        PriceComponent.id.in_(component_ids), PriceComponent.version_id.is_not(None)
    )
    session.execute(
        update(PriceVersion)
        .where(
            PriceVersion.id.in_(version_ids),
            PriceVersion.book_id.in_(select(PriceBook.id).where(PriceBook.tenant_id == tenant_id)),
            PriceVersion.locked_at.is_(None),
        )
        .values(locked_at=utcnow())
    )
