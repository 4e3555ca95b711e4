"""Tenant settings request and response bodies."""

from __future__ import annotations

import re
from typing import Annotated

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, StringConstraints

# An OTel attribute key: letters, digits and `._-/:`, e.g. `ai.telemetry.metadata.customerId`.
_ATTRIBUTE_KEY = re.compile(r"^[A-Za-z0-9_.\-/:]+$")


def _attribute_key(key: str) -> str:
    # Pydantic's own pattern error ("String should match pattern '^[A-Za-z0-9…'") names
    # neither the key nor the rule in words; the API and the dashboard both show this one.
    if not _ATTRIBUTE_KEY.fullmatch(key):
        raise ValueError(
            f"{key!r} is not an attribute key: use only letters, digits and . _ - / : "
            "(no spaces), e.g. customer.id"
        )
    return key


AttributeKey = Annotated[
    str,
    StringConstraints(min_length=1, max_length=256),
    AfterValidator(_attribute_key),
    Field(json_schema_extra={"pattern": _ATTRIBUTE_KEY.pattern}),
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
