"""Meter registry bodies."""

from __future__ import annotations

from datetime import datetime

from pydantic import BaseModel, ConfigDict, Field

from billing_api.meters.service import MeterOrigin
from otel_processor.usage import METER_NAME_PATTERN


class MeterCreate(BaseModel):
    """A custom meter, as spans report it in `agentmeter.usage.<name>`."""

    model_config = ConfigDict(extra="forbid")

    name: str = Field(pattern=f"^{METER_NAME_PATTERN}$", examples=["web_searches"])
    description: str = Field(default="", max_length=500)


class MeterOut(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    name: str
    origin: MeterOrigin = Field(
        description="canonical: built in; declared: through this API; usage: found in usage"
    )
    description: str
    created_at: datetime | None
