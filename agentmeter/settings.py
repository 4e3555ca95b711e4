"""The one settings object: argument → `AGENTMETER_*` environment variable → default."""

from __future__ import annotations

from pathlib import Path

from limits import parse as parse_rate
from pydantic import Field, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

DEFAULT_DATABASE_PATH = Path("agentmeter.db")


class Settings(BaseSettings):
    """Everything AgentMeter reads from its environment.

    Construct with keyword arguments to override; otherwise each field is read from the
    environment variable `AGENTMETER_<FIELD>` and falls back to its default.
    """

    model_config = SettingsConfigDict(env_prefix="AGENTMETER_", extra="ignore")

    database_url: str = Field(
        default=f"sqlite:///{DEFAULT_DATABASE_PATH}",
        description="SQLAlchemy URL; PostgreSQL as postgresql+psycopg://user@host/db",
    )
    host: str = "127.0.0.1"
    grpc_port: int = 4317
    http_port: int = 4318
    api_port: int = 8000
    max_request_bytes: int = Field(
        default=16 * 1024 * 1024,
        description="Largest OTLP request accepted, measured after decompression",
    )
    max_pending_exports: int = Field(
        default=32,
        description="Exports waiting for the store at once; past this, 503/UNAVAILABLE",
    )
    retry_after_seconds: int = 2
    sqlite_synchronous: str = Field(
        default="FULL",
        pattern="^(OFF|NORMAL|FULL|EXTRA)$",
        description="SQLite synchronous pragma; FULL keeps an acknowledged export on power loss",
    )
    sqlite_busy_timeout_seconds: float = Field(
        default=30.0, description="How long a SQLite write waits for another writer's lock"
    )
    db_pool_size: int = 8
    webhook_allow_private: bool = Field(
        default=False,
        description="Let webhooks go to loopback/private addresses and plain http (local "
        "development and tests only: it opens SSRF into the operator's network)",
    )
    run_lease_seconds: float = Field(
        default=60.0,
        gt=0,
        description="A billing run without a heartbeat for this long is reported interrupted",
    )
    background_interval_seconds: float = Field(
        default=30.0,
        gt=0,
        description=(
            "How often `serve` sweeps budgets, expires credit, sends webhooks and catches up"
            " the dashboard's rated months"
        ),
    )
    # Stripe Connect (billing_api.stripe). Without an API key Stripe is off.
    stripe_api_key: str | None = Field(
        default=None, description="The platform's secret key; unset: invoices are not pushed"
    )
    stripe_api_base: str | None = Field(
        default=None, description="Stripe API base address; unset: the library's default"
    )
    stripe_connect_base: str | None = Field(
        default=None, description="Stripe Connect (OAuth) base address; unset: the default"
    )
    stripe_client_id: str | None = Field(
        default=None, description="The platform's Connect client id (ca_…), for OAuth"
    )
    stripe_webhook_secret: str | None = Field(
        default=None, description="Signing secret (whsec_…) of the Connect webhook endpoint"
    )
    stripe_timeout_seconds: float = Field(
        default=20.0, gt=0, description="How long one Stripe call may take before a retry"
    )
    public_url: str | None = Field(
        default=None,
        description="Base URL of links given out (portal links); default the API's own address",
    )
    secret_keys: str = Field(
        default="",
        description="Comma-separated signing secrets for portal links and page cookies, "
        "newest last (it signs; all verify, so a key can be rotated out). Empty: one "
        "generated secret kept in the database",
    )
    dashboard_idle_minutes: int = Field(
        default=30, gt=0, description="A dashboard session ends after this long unused"
    )
    dashboard_session_hours: int = Field(
        default=12, gt=0, description="A dashboard session ends this long after sign-in"
    )
    ingest_rate_limit: str = Field(
        default="1000/second",
        description=(
            "Exports accepted per ingest key (OTLP and UsageService), e.g. '1000/second' or "
            "'10000/minute'; past it 429 / RESOURCE_EXHAUSTED with a retry delay. Empty: off"
        ),
    )
    api_rate_limit: str = Field(
        default="1000/second",
        description="REST requests accepted per API key; past it 429 with Retry-After. Empty: off",
    )

    @field_validator("ingest_rate_limit", "api_rate_limit")
    @classmethod
    def _rate_limit(cls, value: str) -> str:
        if value.strip():
            parse_rate(value)  # raises ValueError on a malformed rate
        return value
