"""Webhook endpoint and delivery bodies."""

from __future__ import annotations

from datetime import datetime
from typing import Any, Literal
from urllib.parse import urlsplit

from pydantic import BaseModel, ConfigDict, Field, field_validator

DeliveryStatus = Literal["pending", "sending", "delivered", "failed", "skipped"]


class WebhookEndpointSet(BaseModel):
    """Where events are POSTed. Setting it (again) issues a new signing secret."""

    model_config = ConfigDict(extra="forbid")

    url: str = Field(max_length=2000, examples=["https://billing.example.com/agentmeter"])

    @field_validator("url")
    @classmethod
    def _http_url(cls, url: str) -> str:
        url = url.strip()
        parts = urlsplit(url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError("must be an absolute http:// or https:// URL")
        if parts.username or parts.password:
            raise ValueError("must not carry credentials; verify the signature instead")
        if parts.port == 0:  # reading .port raises ValueError above 65535
            raise ValueError("port must be 1 to 65535")
        return url


class WebhookEndpointOut(BaseModel):
    url: str | None


class WebhookSecretOut(BaseModel):
    """The endpoint with its signing secret: shown this once, store it now."""

    url: str
    secret: str
    signature_header: str


class WebhookDeliveryOut(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    id: str
    event_type: str
    status: str
    attempts: int
    next_attempt_at: datetime
    last_error: str
    created_at: datetime
    delivered_at: datetime | None
    payload: dict[str, Any]
