"""The one door to Stripe: a `StripeClient` built once at start-up, and the calls AgentMeter
makes through it, with Stripe's errors sorted into "retry later" and "will not work".

Every call on a connected account passes `stripe_account` (the `Stripe-Account` header) and,
when it creates or changes something, an idempotency key the caller derives from its own ids,
so a retried or duplicated job gets Stripe's first answer back instead of a second object.
The library's own retries are off (`max_network_retries=0`): the outbox retries, durably.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

import stripe

from agentmeter.settings import Settings


class StripeCallError(Exception):
    """A Stripe call that failed; `retryable` for 429, 409 lock, 5xx, timeouts and
    connection errors, otherwise retrying the same call cannot succeed."""

    def __init__(self, message: str, *, retryable: bool) -> None:
        super().__init__(message)
        self.message = message
        self.retryable = retryable


class WebhookSignatureError(Exception):
    """A webhook whose `Stripe-Signature` does not sign its body with our secret (or is
    too old), or whose body is not a Stripe event."""


@dataclass(frozen=True, slots=True)
class RemoteInvoice:
    """What AgentMeter reads back of an invoice on Stripe."""

    id: str
    status: str  # draft | open | paid | uncollectible | void
    total: int
    currency: str


def _classify(error: stripe.StripeError) -> StripeCallError:
    status = error.http_status
    retryable = (
        isinstance(error, stripe.RateLimitError | stripe.APIConnectionError)
        or status is None
        or status == 409  # a concurrent request with the same idempotency key, or a lock
        or status >= 500
    ) and not isinstance(error, stripe.IdempotencyError)
    kind = type(error).__name__
    message = f"{kind} ({status}): {error.user_message or error}"[:2000]
    return StripeCallError(message, retryable=retryable)


def _as_invoice(found: Any) -> RemoteInvoice:
    return RemoteInvoice(
        id=found.id, status=found.status, total=int(found.total), currency=found.currency
    )


class StripeGateway:
    """AgentMeter's calls to Stripe. Thread-safe (the client is); every method blocks on
    HTTP and raises `StripeCallError`, never a `stripe` exception."""

    def __init__(
        self,
        client: stripe.StripeClient,
        *,
        webhook_secret: str | None,
        oauth_enabled: bool,
        webhook_tolerance_seconds: int = 300,
    ) -> None:
        self._client = client
        self.webhook_secret = webhook_secret
        self.oauth_enabled = oauth_enabled
        self._tolerance = webhook_tolerance_seconds

    # --- The platform's own calls -------------------------------------------------------

    def account_exists(self, account_id: str) -> bool:
        """True if the platform can act on `account_id` (a connected account)."""
        try:
            self._client.v1.accounts.retrieve(account_id)
        except (stripe.InvalidRequestError, stripe.PermissionError):
            return False
        except stripe.StripeError as error:
            raise _classify(error) from None
        return True

    def authorize_url(self, state: str) -> str:
        """Where to send the builder to connect its account by OAuth (read_write)."""
        return self._client.oauth.authorize_url({"state": state, "scope": "read_write"})

    def exchange_code(self, code: str) -> str:
        """Turn an OAuth authorization code into the connected account's id."""
        try:
            token = self._client.oauth.token({"grant_type": "authorization_code", "code": code})
        except stripe.StripeError as error:
            raise _classify(error) from None
        account_id = getattr(token, "stripe_user_id", None)
        if not isinstance(account_id, str) or not account_id:
            raise StripeCallError("OAuth token answer carries no stripe_user_id", retryable=False)
        return account_id

    def verify_webhook(self, payload: bytes, header: str | None) -> dict[str, Any]:
        """The event in `payload` if `header` signs it with the webhook secret, within the
        tolerance; raises `WebhookSignatureError` otherwise."""
        try:
            stripe.WebhookSignature.verify_header(
                payload, header, self.webhook_secret, self._tolerance
            )
            event = json.loads(payload)
        except (stripe.SignatureVerificationError, UnicodeDecodeError, ValueError) as error:
            raise WebhookSignatureError(str(error).split(". ")[0][:300]) from None
        if (
            not isinstance(event, dict)
            or not isinstance(event.get("id"), str)
            or not isinstance(event.get("type"), str)
            or not isinstance(event.get("data"), dict)
        ):
            raise WebhookSignatureError("the body is not a Stripe event")
        return event

    # --- Calls on a connected account ---------------------------------------------------

    def create_customer(self, account: str, key: str, params: dict[str, Any]) -> str:
        """Create a customer on `account`; its id."""
        try:
            found = self._client.v1.customers.create(
                params,  # type: ignore[arg-type]
                {"stripe_account": account, "idempotency_key": key},
            )
        except stripe.StripeError as error:
            raise _classify(error) from None
        return found.id

    def create_invoice(self, account: str, key: str, params: dict[str, Any]) -> str:
        """Create a draft invoice on `account`; its id."""
        try:
            found = self._client.v1.invoices.create(
                params,  # type: ignore[arg-type]
                {"stripe_account": account, "idempotency_key": key},
            )
        except stripe.StripeError as error:
            raise _classify(error) from None
        assert found.id is not None
        return found.id

    def add_invoice_item(self, account: str, key: str, params: dict[str, Any]) -> str:
        """Add one line (an invoice item with an exact `amount`) to a draft; its id."""
        try:
            found = self._client.v1.invoice_items.create(
                params,  # type: ignore[arg-type]
                {"stripe_account": account, "idempotency_key": key},
            )
        except stripe.StripeError as error:
            raise _classify(error) from None
        return found.id

    def retrieve_invoice(self, account: str, invoice_id: str) -> RemoteInvoice:
        """The invoice as Stripe has it now: status and total."""
        try:
            found = self._client.v1.invoices.retrieve(
                invoice_id, options={"stripe_account": account}
            )
        except stripe.StripeError as error:
            raise _classify(error) from None
        return _as_invoice(found)

    def finalize_invoice(self, account: str, key: str, invoice_id: str) -> RemoteInvoice:
        """Finalize a draft; Stripe then sends or charges it (`auto_advance`)."""
        try:
            found = self._client.v1.invoices.finalize_invoice(
                invoice_id,
                {"auto_advance": True},
                {"stripe_account": account, "idempotency_key": key},
            )
        except stripe.StripeError as error:
            raise _classify(error) from None
        return _as_invoice(found)

    def void_invoice(self, account: str, key: str, invoice_id: str) -> RemoteInvoice:
        """Void an open or uncollectible invoice."""
        try:
            found = self._client.v1.invoices.void_invoice(
                invoice_id, options={"stripe_account": account, "idempotency_key": key}
            )
        except stripe.StripeError as error:
            raise _classify(error) from None
        return _as_invoice(found)

    def delete_draft(self, account: str, invoice_id: str) -> None:
        """Delete a draft invoice (drafts cannot be voided)."""
        try:
            self._client.v1.invoices.delete(invoice_id, options={"stripe_account": account})
        except stripe.StripeError as error:
            raise _classify(error) from None

    def create_credit_note(self, account: str, key: str, params: dict[str, Any]) -> str:
        """Credit (part of) a finalized invoice on `account`; the credit note's id."""
        try:
            found = self._client.v1.credit_notes.create(
                params,  # type: ignore[arg-type]
                {"stripe_account": account, "idempotency_key": key},
            )
        except stripe.StripeError as error:
            raise _classify(error) from None
        return found.id


def build_gateway(settings: Settings) -> StripeGateway | None:
    """The gateway for `settings`, or None when Stripe is off (no API key). Call once at
    start-up; it holds the HTTP client's connection pool."""
    if not settings.stripe_api_key:
        return None
    client = stripe.StripeClient(
        settings.stripe_api_key,
        client_id=settings.stripe_client_id,
        base_addresses={
            "api": (settings.stripe_api_base or stripe.DEFAULT_API_BASE).rstrip("/"),
            "connect": (settings.stripe_connect_base or stripe.DEFAULT_CONNECT_API_BASE).rstrip(
                "/"
            ),
        },
        max_network_retries=0,
        http_client=stripe.RequestsClient(timeout=settings.stripe_timeout_seconds),
    )
    return StripeGateway(
        client,
        webhook_secret=settings.stripe_webhook_secret,
        oauth_enabled=bool(settings.stripe_client_id),
    )
