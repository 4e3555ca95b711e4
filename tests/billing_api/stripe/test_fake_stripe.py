"""The fake Stripe is only worth its passes if it refuses what Stripe refuses: checked here
with the real `stripe` client, as AgentMeter calls it."""

from __future__ import annotations

import pytest
import stripe

from tests.billing_api.stripe.conftest import ACCOUNT
from tests.fake_stripe import API_KEY, FakeStripe, check_typeddict


@pytest.fixture
def client(fake: FakeStripe) -> stripe.StripeClient:
    return stripe.StripeClient(
        API_KEY,
        base_addresses={"api": fake.url, "connect": fake.url},
        max_network_retries=0,
        http_client=stripe.RequestsClient(timeout=5),
    )


def _customer(client: stripe.StripeClient, key: str = "k-customer") -> str:
    return client.v1.customers.create(
        {"name": "Acme"}, {"stripe_account": ACCOUNT, "idempotency_key": key}
    ).id


class TestParameters:
    def test_unknown_parameters_are_refused(self, client: stripe.StripeClient) -> None:
        with pytest.raises(stripe.InvalidRequestError, match="unknown parameter: nickname"):
            client.v1.customers.create(
                {"nickname": "x"},  # type: ignore[arg-type]
                {"stripe_account": ACCOUNT, "idempotency_key": "k1"},
            )

    def test_nested_and_typed_values_are_checked(self) -> None:
        with pytest.raises(Exception, match=r"unknown parameter: lines\[0\]\[price\]"):
            check_typeddict(
                {"invoice": "in_1", "lines": [{"type": "custom_line_item", "price": "1"}]},
                stripe.params.CreditNoteCreateParams,
            )
        with pytest.raises(Exception, match=r"Missing required param: lines\[0\]\[type\]"):
            check_typeddict(
                {"invoice": "in_1", "lines": [{"quantity": "1"}]},
                stripe.params.CreditNoteCreateParams,
            )
        with pytest.raises(Exception, match="Invalid integer"):
            check_typeddict({"amount": "12.5"}, stripe.params.InvoiceItemCreateParams)
        with pytest.raises(Exception, match="Invalid boolean"):
            check_typeddict({"auto_advance": "yes"}, stripe.params.InvoiceCreateParams)
        with pytest.raises(Exception, match="must be one of"):
            check_typeddict({"grant_type": "password"}, stripe.OAuth.OAuthTokenParams)
        check_typeddict(
            {"customer": "cus_1", "days_until_due": "30", "metadata": {"a": "b"}},
            stripe.params.InvoiceCreateParams,
        )

    def test_connected_calls_need_the_account_header(self, client: stripe.StripeClient) -> None:
        with pytest.raises(stripe.InvalidRequestError, match="Stripe-Account header is required"):
            client.v1.customers.create({"name": "x"}, {"idempotency_key": "k2"})
        with pytest.raises(stripe.PermissionError):
            client.v1.customers.create(
                {"name": "x"}, {"stripe_account": "acct_unknown", "idempotency_key": "k3"}
            )

    def test_writes_need_a_key_of_our_own(self, client: stripe.StripeClient) -> None:
        with pytest.raises(stripe.InvalidRequestError, match="made up"):
            client.v1.customers.create({"name": "x"}, {"stripe_account": ACCOUNT})

    def test_a_wrong_key_is_refused(self, fake: FakeStripe) -> None:
        other = stripe.StripeClient(
            "sk_test_wrong", base_addresses={"api": fake.url}, max_network_retries=0
        )
        with pytest.raises(stripe.AuthenticationError):
            other.v1.accounts.retrieve(ACCOUNT)


class TestIdempotency:
    def test_same_key_same_params_is_the_same_object(
        self, client: stripe.StripeClient, fake: FakeStripe
    ) -> None:
        assert _customer(client) == _customer(client)
        assert len(fake.objects(ACCOUNT, "customers")) == 1

    def test_same_key_other_params_is_an_error(self, client: stripe.StripeClient) -> None:
        _customer(client)
        with pytest.raises(stripe.IdempotencyError):
            client.v1.customers.create(
                {"name": "Someone else"},
                {"stripe_account": ACCOUNT, "idempotency_key": "k-customer"},
            )

    def test_keys_belong_to_their_account(
        self, client: stripe.StripeClient, fake: FakeStripe
    ) -> None:
        fake.add_account("acct_1Other")
        mine = _customer(client)
        theirs = client.v1.customers.create(
            {"name": "Acme"}, {"stripe_account": "acct_1Other", "idempotency_key": "k-customer"}
        ).id
        assert mine != theirs
        assert len(fake.objects("acct_1Other", "customers")) == 1


class TestInvoiceRules:
    def test_items_join_drafts_and_finalized_invoices_are_closed(
        self, client: stripe.StripeClient
    ) -> None:
        options: stripe.RequestOptions = {"stripe_account": ACCOUNT}
        customer = _customer(client)
        invoice = client.v1.invoices.create(
            {"customer": customer, "collection_method": "send_invoice", "days_until_due": 30},
            {**options, "idempotency_key": "k-inv"},
        )
        assert invoice.id is not None
        client.v1.invoice_items.create(
            {"customer": customer, "invoice": invoice.id, "amount": 1234, "currency": "usd"},
            {**options, "idempotency_key": "k-item"},
        )
        finalized = client.v1.invoices.finalize_invoice(
            invoice.id, options={**options, "idempotency_key": "k-fin"}
        )
        assert (finalized.status, finalized.total) == ("open", 1234)
        with pytest.raises(stripe.InvalidRequestError, match="drafts only"):
            client.v1.invoice_items.create(
                {"customer": customer, "invoice": invoice.id, "amount": 1, "currency": "usd"},
                {**options, "idempotency_key": "k-item-2"},
            )
        with pytest.raises(stripe.InvalidRequestError, match="days_until_due"):
            client.v1.invoices.create(
                {"customer": customer, "collection_method": "send_invoice"},
                {**options, "idempotency_key": "k-inv-2"},
            )
        with pytest.raises(stripe.InvalidRequestError, match="left to credit"):
            client.v1.credit_notes.create(
                {
                    "invoice": invoice.id,
                    "lines": [
                        {
                            "type": "custom_line_item",
                            "quantity": 1,
                            "unit_amount": 1235,
                            "description": "x",
                        }
                    ],
                },
                {**options, "idempotency_key": "k-cn"},
            )

    def test_failures_on_demand(self, client: stripe.StripeClient, fake: FakeStripe) -> None:
        fake.fail("POST /v1/customers", 429)
        with pytest.raises(stripe.RateLimitError):
            _customer(client)
        fake.fail("POST /v1/customers", 500)
        with pytest.raises(stripe.APIError):
            _customer(client)
        assert fake.objects(ACCOUNT, "customers") == []  # refused before executing
        assert _customer(client)
