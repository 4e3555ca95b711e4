"""Customer request and response bodies."""

from __future__ import annotations

from datetime import datetime

from pydantic import BaseModel, ConfigDict, Field


class CustomerCreate(BaseModel):
    """A customer, registered under the id its agents put on spans."""

    model_config = ConfigDict(extra="forbid")

    id: str = Field(min_length=1, max_length=256, pattern=r"^\S(.*\S)?$")
    name: str = Field(min_length=1, max_length=200)
    email: str | None = Field(default=None, max_length=320, pattern=r"^[^@\s]+@[^@\s]+$")


class CustomerOut(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    id: str
    name: str
    email: str | None
    created_at: datetime
