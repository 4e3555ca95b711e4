"""Tenant settings request and response bodies."""

from __future__ import annotations

from typing import Annotated

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, StringConstraints

# An OTel attribute key: letters, digits and `._-/:`, e.g. `ai.telemetry.metadata.customerId`.
AttributeKey = Annotated[
    str, StringConstraints(min_length=1, max_length=256, pattern=r"^[A-Za-z0-9_.\-/:]+$")
]


def _distinct(keys: list[str]) -> list[str]:
    if len(set(keys)) != len(keys):
        raise ValueError("customer_attribute_keys must not repeat a key")
    return keys


CustomerAttributeKeys = Annotated[
    list[AttributeKey], Field(min_length=1, max_length=16), AfterValidator(_distinct)
]


class TenantOut(BaseModel):
    """The tenant and its settings."""

    model_config = ConfigDict(from_attributes=True)

    id: str
    name: str
    customer_attribute_keys: list[str] = Field(
        description="span, then resource, attribute keys that name the customer; first wins"
    )


class TenantUpdate(BaseModel):
    """Settings to change; absent fields stay as they are."""

    model_config = ConfigDict(extra="forbid")

    customer_attribute_keys: CustomerAttributeKeys | None = None
