"""A strict, stateful fake of the parts of Stripe AgentMeter uses, served on loopback for
the real `stripe` client (reached through `AGENTMETER_STRIPE_API_BASE` / `_CONNECT_BASE`).

Stripe cannot be reached from here, and no package offers a faithful Connect server, so
this one is written to refuse what Stripe would refuse:

- the platform's secret key is required; calls that touch customers, invoices, invoice
  items and credit notes must carry `Stripe-Account` naming a connected account, and
  objects live per account (one account cannot see another's);
- parameters are decoded from Stripe's form encoding and checked against the `stripe`
  package's own typed definitions (`stripe.params.*`): unknown parameters, missing
  required ones, values of the wrong type or outside a `Literal` are a 400
  `invalid_request_error`, as Stripe answers them;
- every POST must carry an `Idempotency-Key` of the caller's making (the library puts a
  random UUID on calls without one; the fake refuses those, as AgentMeter promises keys
  derived from its own ids);
  the same key with the same parameters answers the first response again
  (`Idempotent-Replayed: true`), with other parameters a 400 `idempotency_error`. As on
  Stripe, a result is kept only once the request began executing;
- invoice rules: items join draft invoices of the same customer and currency; only drafts
  finalize or are deleted; only open or uncollectible invoices void; credit notes only on
  open or paid invoices and never beyond what is left to credit;
- failures on demand: `fail(...)` answers 429 or 500 before executing; `delay(...)`
  executes and then answers late (a client timeout: the result exists, the answer is
  lost); `hold(...)` executes and answers only when released (to kill a worker mid-call).

Invoice state changes are recorded as Stripe events (`events`), ready to be signed with
`sign_webhook` and POSTed to AgentMeter, as Stripe's Connect webhooks are.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import itertools
import json
import re
import sys
import threading
import time
import typing
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from decimal import Decimal, InvalidOperation
from typing import Any, ForwardRef, Literal, NotRequired, Required, Union, get_args, get_origin
from urllib.parse import parse_qsl

import stripe
import stripe.params
import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

API_KEY = "sk_test_agentmeter_platform"
WEBHOOK_SECRET = "whsec_agentmeter_test_secret"
CLIENT_ID = "ca_agentmeter_test"
_OPTION_KEYS = {
    "api_key",
    "stripe_version",
    "stripe_account",
    "stripe_context",
    "max_network_retries",
    "idempotency_key",
    "content_type",
    "headers",
}


class StripeRefusal(Exception):
    """A 4xx answer, shaped as Stripe's `{"error": {...}}`."""

    def __init__(self, status: int, kind: str, message: str, param: str | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.body: dict[str, Any] = {"error": {"type": kind, "message": message}}
        if param is not None:
            self.body["error"]["param"] = param


def _invalid(message: str, param: str | None = None) -> StripeRefusal:
    return StripeRefusal(400, "invalid_request_error", message, param)


# --- Form decoding and checking against stripe.params -----------------------------------


def decode_form(body: str) -> dict[str, Any]:
    """Stripe's form encoding (`a[b][0][c]=v`) back into nested dicts and lists."""
    root: dict[str, Any] = {}
    for key, value in parse_qsl(body, keep_blank_values=True, strict_parsing=False):
        parts = re.findall(r"[^\[\]]+", key)
        if not parts or key.count("[") != key.count("]"):
            raise _invalid(f"Invalid parameter name: {key}")
        node = root
        for part in parts[:-1]:
            node = node.setdefault(part, {})
            if not isinstance(node, dict):
                raise _invalid(f"Invalid parameter nesting: {key}")
        node[parts[-1]] = value
    decoded: dict[str, Any] = _lists(root)
    return decoded


def _lists(node: Any) -> Any:
    if not isinstance(node, dict):
        return node
    converted = {k: _lists(v) for k, v in node.items()}
    if converted and all(k.isdigit() for k in converted):
        indexes = sorted(int(k) for k in converted)
        if indexes != list(range(len(indexes))):
            raise _invalid("Invalid array: indexes must be 0, 1, 2, …")
        return [converted[str(i)] for i in indexes]
    return converted


def _resolve(annotation: Any, namespace: dict[str, Any]) -> Any:
    if isinstance(annotation, str):
        return eval(annotation, namespace)
    if isinstance(annotation, ForwardRef):
        return eval(annotation.__forward_arg__, namespace)
    return annotation


def _is_typeddict(kind: Any) -> bool:
    return isinstance(kind, type) and hasattr(kind, "__required_keys__")


def check_params(value: Any, kind: Any, where: str, namespace: dict[str, Any]) -> None:
    """Raise a Stripe-shaped 400 unless `value` (decoded form data, all leaves strings)
    fits the `stripe.params` annotation `kind`."""
    kind = _resolve(kind, namespace)
    origin = get_origin(kind)
    if origin in (NotRequired, Required):
        check_params(value, get_args(kind)[0], where, namespace)
        return
    if _is_typeddict(kind):
        check_typeddict(value, kind, where)
        return
    if origin is Union or type(kind).__name__ == "UnionType":
        problems = []
        for arm in get_args(kind):
            try:
                check_params(value, arm, where, namespace)
                return
            except StripeRefusal as refusal:
                problems.append(refusal.body["error"]["message"])
        raise _invalid(problems[0], where)
    if origin is Literal:
        if value not in [str(option) for option in get_args(kind)]:
            raise _invalid(f"Invalid {where}: must be one of {get_args(kind)}", where)
        return
    if origin in (list, typing.List):  # noqa: UP006
        if not isinstance(value, list):
            raise _invalid(f"Invalid array: {where}", where)
        for index, item in enumerate(value):
            check_params(item, get_args(kind)[0], f"{where}[{index}]", namespace)
        return
    if origin in (dict, typing.Dict) or (origin is not None and "StripeObject" in str(origin)):  # noqa: UP006
        if not isinstance(value, dict) or any(not isinstance(v, str) for v in value.values()):
            raise _invalid(f"Invalid hash: {where}", where)
        return
    _check_scalar(value, kind, where)


def _check_scalar(value: Any, kind: Any, where: str) -> None:
    if not isinstance(value, str):
        raise _invalid(f"Invalid {where}: expected a single value", where)
    if kind is bool:
        if value not in ("true", "false"):
            raise _invalid(f"Invalid boolean: {value}", where)
    elif kind is int:
        if not re.fullmatch(r"-?\d+", value):
            raise _invalid(f"Invalid integer: {value}", where)
    elif kind in (Decimal, float):
        try:
            Decimal(value)
        except InvalidOperation:
            raise _invalid(f"Invalid decimal: {value}", where) from None
    elif kind is not str:
        raise _invalid(f"Unsupported parameter type {kind} at {where}", where)


def check_typeddict(value: Any, kind: type, where: str = "") -> None:
    """Check a hash of parameters against a `stripe.params` TypedDict: no unknown keys, all
    required keys, each value of its annotated type."""
    if not isinstance(value, dict):
        raise _invalid(f"Invalid hash: {where or 'parameters'}", where or None)
    namespace = vars(sys.modules[kind.__module__])
    annotations = {k: v for k, v in kind.__annotations__.items() if k not in _OPTION_KEYS}
    for key in value:
        if key not in annotations:
            name = f"{where}[{key}]" if where else key
            raise _invalid(f"Received unknown parameter: {name}", name)
    required: frozenset[str] = getattr(kind, "__required_keys__", frozenset())
    for key in sorted(set(required) - _OPTION_KEYS):
        if key not in value:
            name = f"{where}[{key}]" if where else key
            raise _invalid(f"Missing required param: {name}.", name)
    for key, item in value.items():
        check_params(item, annotations[key], f"{where}[{key}]" if where else key, namespace)


# --- State --------------------------------------------------------------------------------


@dataclass
class _Failure:
    pattern: re.Pattern[str]
    times: int
    status: int = 0  # fail before executing with this status
    delay: float = 0.0  # execute, then answer this late
    hold: threading.Event | None = None  # execute, then answer once set


@dataclass
class Account:
    id: str
    customers: dict[str, dict[str, Any]] = field(default_factory=dict)
    invoices: dict[str, dict[str, Any]] = field(default_factory=dict)
    invoice_items: dict[str, dict[str, Any]] = field(default_factory=dict)
    credit_notes: dict[str, dict[str, Any]] = field(default_factory=dict)
    surcharge: int = 0


@dataclass(frozen=True)
class Call:
    method: str
    path: str
    account: str | None
    idempotency_key: str | None
    status: int
    replayed: bool


class FakeStripe:
    """The fake's state; thread-safe (the server runs in its own thread)."""

    def __init__(self) -> None:
        self.lock = threading.RLock()
        self.accounts: dict[str, Account] = {}
        self.calls: list[Call] = []
        self.events: list[dict[str, Any]] = []
        self.oauth_codes: dict[str, str] = {}
        self._failures: list[_Failure] = []
        self._idempotency: dict[tuple[str, str], tuple[str, dict[str, Any], int, Any]] = {}
        self._ids = itertools.count(1)
        self.url = ""

    # Test controls --------------------------------------------------------------------

    def add_account(self, account_id: str) -> Account:
        with self.lock:
            return self.accounts.setdefault(account_id, Account(account_id))

    def authorize(self, account_id: str) -> str:
        """What Stripe's OAuth page does when the builder accepts: a one-time code."""
        self.add_account(account_id)
        code = f"ac_{self._next()}"
        with self.lock:
            self.oauth_codes[code] = account_id
        return code

    def fail(self, pattern: str, status: int, times: int = 1) -> None:
        """Answer the next `times` calls matching `pattern` ("POST /v1/invoices") with
        `status`, before executing them."""
        with self.lock:
            self._failures.append(_Failure(re.compile(pattern), times, status=status))

    def delay(self, pattern: str, seconds: float, times: int = 1) -> None:
        """Execute the next matching calls, then answer `seconds` late."""
        with self.lock:
            self._failures.append(_Failure(re.compile(pattern), times, delay=seconds))

    def hold(self, pattern: str) -> threading.Event:
        """Execute the next matching call and answer only once the returned event is set."""
        event = threading.Event()
        with self.lock:
            self._failures.append(_Failure(re.compile(pattern), 1, hold=event))
        return event

    def held(self, pattern: str) -> bool:
        """True once a held call matching `pattern` has executed and is waiting."""
        with self.lock:
            return any(
                c.status == -1 and re.search(pattern, f"{c.method} {c.path}") for c in self.calls
            )

    def pay(self, account_id: str, invoice_id: str) -> dict[str, Any]:
        """The customer pays: the invoice turns paid; the event."""
        return self._transition(account_id, invoice_id, ("open",), "paid", "invoice.paid")

    def fail_payment(self, account_id: str, invoice_id: str) -> dict[str, Any]:
        invoice = self.accounts[account_id].invoices[invoice_id]
        return self._event(account_id, "invoice.payment_failed", invoice)

    def mark_uncollectible(self, account_id: str, invoice_id: str) -> dict[str, Any]:
        return self._transition(
            account_id, invoice_id, ("open",), "uncollectible", "invoice.marked_uncollectible"
        )

    def objects(self, account_id: str, kind: str) -> list[dict[str, Any]]:
        with self.lock:
            return list(getattr(self.accounts[account_id], kind).values())

    # Internals -------------------------------------------------------------------------

    def _next(self) -> int:
        return next(self._ids)

    def _id(self, prefix: str) -> str:
        return f"{prefix}_fake{self._next():06d}"

    def _event(self, account_id: str, kind: str, obj: dict[str, Any]) -> dict[str, Any]:
        event = {
            "id": self._id("evt"),
            "object": "event",
            "api_version": stripe.api_version,
            "account": account_id,
            "created": int(time.time()),
            "livemode": False,
            "pending_webhooks": 1,
            "type": kind,
            "data": {"object": json.loads(json.dumps(obj))},
        }
        with self.lock:
            self.events.append(event)
        return event

    def _transition(
        self, account_id: str, invoice_id: str, allowed: tuple[str, ...], status: str, kind: str
    ) -> dict[str, Any]:
        with self.lock:
            invoice = self.accounts[account_id].invoices[invoice_id]
            assert invoice["status"] in allowed, invoice["status"]
            invoice["status"] = status
            if status == "paid":
                invoice["amount_paid"], invoice["amount_remaining"] = invoice["amount_due"], 0
            return self._event(account_id, kind, invoice)

    def failure_for(self, method: str, path: str) -> _Failure | None:
        with self.lock:
            for failure in self._failures:
                if failure.times > 0 and failure.pattern.search(f"{method} {path}"):
                    failure.times -= 1
                    return failure
        return None


# --- Routes ---------------------------------------------------------------------------------


def _own_key(key: str | None) -> bool:
    """A key the caller chose; the library makes up a random UUID when given none, which
    would let a retried job create a second object."""
    if not key:
        return False
    try:
        uuid.UUID(key)
    except ValueError:
        return True
    return False


def _json(body: Any, status: int = 200, replayed: bool = False) -> JSONResponse:
    response = JSONResponse(body, status_code=status)
    response.headers["request-id"] = f"req_{int(time.time() * 1e6)}"
    if replayed:
        response.headers["idempotent-replayed"] = "true"
    return response


def _account(fake: FakeStripe, request: Request) -> Account:
    header = request.headers.get("stripe-account")
    if not header:
        raise _invalid(
            "This fake serves connected accounts only: the Stripe-Account header is required"
        )
    account = fake.accounts.get(header)
    if account is None:
        raise StripeRefusal(
            403,
            "invalid_request_error",
            f"The provided key does not have access to account '{header}' (or that account "
            "does not exist).",
        )
    return account


def _lookup(store: dict[str, dict[str, Any]], object_id: str, kind: str) -> dict[str, Any]:
    found = store.get(object_id)
    if found is None:
        raise StripeRefusal(404, "invalid_request_error", f"No such {kind}: '{object_id}'", "id")
    return found


def _recompute(account: Account, invoice: dict[str, Any]) -> None:
    if invoice["status"] != "draft":
        return
    items = [i for i in account.invoice_items.values() if i["invoice"] == invoice["id"]]
    # `surcharge`: what Stripe adds on its own (tax, say), to test that totals are compared.
    total = sum(i["amount"] for i in items) + account.surcharge
    invoice["lines"]["data"] = [
        {
            "id": f"il_{i['id']}",
            "object": "line_item",
            "amount": i["amount"],
            "currency": i["currency"],
            "description": i["description"],
            "metadata": i["metadata"],
        }
        for i in items
    ]
    invoice["lines"]["total_count"] = len(items)
    invoice.update(subtotal=total, total=total, amount_due=total, amount_remaining=total)


def _create_customer(fake: FakeStripe, account: Account, params: dict[str, Any]) -> Any:
    customer = {
        "id": fake._id("cus"),
        "object": "customer",
        "name": params.get("name"),
        "email": params.get("email"),
        "metadata": params.get("metadata", {}),
        "livemode": False,
    }
    account.customers[customer["id"]] = customer
    return customer


def _create_invoice(fake: FakeStripe, account: Account, params: dict[str, Any]) -> Any:
    if "customer" not in params:
        raise _invalid("Missing required param: customer.", "customer")
    customer = _lookup(account.customers, params["customer"], "customer")
    method = params.get("collection_method", "charge_automatically")
    if method == "send_invoice" and "days_until_due" not in params and "due_date" not in params:
        raise _invalid("Invoices with collection_method send_invoice need days_until_due")
    if method == "charge_automatically" and "days_until_due" in params:
        raise _invalid(
            "days_until_due is only for collection_method send_invoice", "days_until_due"
        )
    invoice = {
        "id": fake._id("in"),
        "object": "invoice",
        "customer": customer["id"],
        "currency": params.get("currency", "usd"),
        "collection_method": method,
        "days_until_due": int(params["days_until_due"]) if "days_until_due" in params else None,
        "auto_advance": params.get("auto_advance") == "true",
        "application_fee_amount": (
            int(params["application_fee_amount"]) if "application_fee_amount" in params else None
        ),
        "description": params.get("description"),
        "metadata": params.get("metadata", {}),
        "number": params.get("number"),
        "status": "draft",
        "lines": {"object": "list", "data": [], "has_more": False, "url": "/v1/invoices/x/lines"},
        "amount_paid": 0,
        "livemode": False,
    }
    invoice["lines"]["url"] = f"/v1/invoices/{invoice['id']}/lines"
    _recompute(account, invoice)
    account.invoices[invoice["id"]] = invoice
    return invoice


def _create_invoice_item(fake: FakeStripe, account: Account, params: dict[str, Any]) -> Any:
    customer = _lookup(account.customers, params.get("customer", ""), "customer")
    if "amount" not in params:
        raise _invalid("This fake takes exact amounts only: `amount` is required", "amount")
    if "invoice" not in params:
        raise _invalid("Items must name their invoice (pending items are not used)", "invoice")
    invoice = _lookup(account.invoices, params["invoice"], "invoice")
    if invoice["status"] != "draft":
        raise _invalid(f"Invoice {invoice['id']} is {invoice['status']}; items join drafts only")
    if invoice["customer"] != customer["id"]:
        raise _invalid("The invoice belongs to another customer", "invoice")
    if params.get("currency", invoice["currency"]) != invoice["currency"]:
        raise _invalid("The item's currency differs from the invoice's", "currency")
    item = {
        "id": fake._id("ii"),
        "object": "invoiceitem",
        "amount": int(params["amount"]),
        "currency": invoice["currency"],
        "customer": customer["id"],
        "invoice": invoice["id"],
        "description": params.get("description"),
        "metadata": params.get("metadata", {}),
        "livemode": False,
    }
    account.invoice_items[item["id"]] = item
    _recompute(account, invoice)
    return item


def _finalize(fake: FakeStripe, account: Account, invoice_id: str, params: dict[str, Any]) -> Any:
    invoice = _lookup(account.invoices, invoice_id, "invoice")
    if invoice["status"] != "draft":
        raise _invalid(f"This invoice is already finalized ({invoice['status']})")
    invoice["status"] = "open" if invoice["amount_due"] > 0 else "paid"
    invoice["number"] = invoice["number"] or f"FAKE-{fake._next():04d}"
    if "auto_advance" in params:
        invoice["auto_advance"] = params["auto_advance"] == "true"
    fake._event(account.id, "invoice.finalized", invoice)
    if invoice["status"] == "paid":
        fake._event(account.id, "invoice.paid", invoice)
    return invoice


def _void(fake: FakeStripe, account: Account, invoice_id: str) -> Any:
    invoice = _lookup(account.invoices, invoice_id, "invoice")
    if invoice["status"] not in ("open", "uncollectible"):
        raise _invalid(f"You can only void open or uncollectible invoices ({invoice['status']})")
    invoice["status"] = "void"
    fake._event(account.id, "invoice.voided", invoice)
    return invoice


def _delete(account: Account, invoice_id: str) -> Any:
    invoice = _lookup(account.invoices, invoice_id, "invoice")
    if invoice["status"] != "draft":
        raise _invalid("Only draft invoices can be deleted")
    del account.invoices[invoice_id]
    for item_id in [
        i for i, item in account.invoice_items.items() if item["invoice"] == invoice_id
    ]:
        del account.invoice_items[item_id]
    return {"id": invoice_id, "object": "invoice", "deleted": True}


def _create_credit_note(fake: FakeStripe, account: Account, params: dict[str, Any]) -> Any:
    invoice = _lookup(account.invoices, params["invoice"], "invoice")
    if invoice["status"] not in ("open", "paid"):
        raise _invalid(f"Credit notes are for open or paid invoices ({invoice['status']})")
    lines = params.get("lines", [])
    if not lines and "amount" not in params:
        raise _invalid("A credit note needs lines or an amount")
    amount = sum(int(line["unit_amount"]) * int(line.get("quantity", "1")) for line in lines)
    amount += int(params.get("amount", "0"))
    credited = sum(
        n["amount"] for n in account.credit_notes.values() if n["invoice"] == invoice["id"]
    )
    if amount <= 0 or credited + amount > invoice["total"]:
        raise _invalid("The credit note exceeds what is left to credit on the invoice")
    note = {
        "id": fake._id("cn"),
        "object": "credit_note",
        "invoice": invoice["id"],
        "amount": amount,
        "total": amount,
        "currency": invoice["currency"],
        "memo": params.get("memo"),
        "metadata": params.get("metadata", {}),
        "status": "issued",
        "livemode": False,
    }
    account.credit_notes[note["id"]] = note
    if invoice["status"] == "open":
        invoice["amount_remaining"] = invoice["amount_due"] = max(0, invoice["amount_due"] - amount)
    return note


_P = stripe.params


def _routes(fake: FakeStripe) -> list[Route]:
    """One catch-all route; `table` lists what the fake answers and its params type."""
    table: list[tuple[str, str, Any]] = [
        ("GET", r"/v1/accounts/(?P<id>[^/]+)", _P.AccountRetrieveParams),
        ("POST", r"/v1/customers", _P.CustomerCreateParams),
        ("POST", r"/v1/invoices", _P.InvoiceCreateParams),
        ("GET", r"/v1/invoices/(?P<id>[^/]+)", _P.InvoiceRetrieveParams),
        ("DELETE", r"/v1/invoices/(?P<id>[^/]+)", _P.InvoiceDeleteParams),
        ("POST", r"/v1/invoices/(?P<id>[^/]+)/finalize", _P.InvoiceFinalizeInvoiceParams),
        ("POST", r"/v1/invoices/(?P<id>[^/]+)/void", _P.InvoiceVoidInvoiceParams),
        ("POST", r"/v1/invoiceitems", _P.InvoiceItemCreateParams),
        ("POST", r"/v1/credit_notes", _P.CreditNoteCreateParams),
        ("POST", r"/oauth/token", stripe.OAuth.OAuthTokenParams),
    ]

    def execute(
        method: str, path: str, match: dict[str, str], params: dict[str, Any], request: Request
    ) -> Any:
        if path == "/oauth/token":
            if params.get("grant_type") != "authorization_code":
                raise StripeRefusal(400, "unsupported_grant_type", "authorization_code only")
            account_id = fake.oauth_codes.pop(params.get("code", ""), None)
            if account_id is None:
                return {
                    "error": "invalid_grant",
                    "error_description": "Authorization code does not exist",
                }
            return {
                "access_token": "sk_test_connected",
                "livemode": False,
                "refresh_token": "rt_fake",
                "token_type": "bearer",
                "stripe_publishable_key": "pk_test_fake",
                "stripe_user_id": account_id,
                "scope": "read_write",
            }
        if path.startswith("/v1/accounts/"):
            if request.headers.get("stripe-account"):
                raise _invalid("Retrieve a connected account as the platform (no Stripe-Account)")
            if match["id"] not in fake.accounts:
                raise StripeRefusal(
                    403, "invalid_request_error", "The platform has no access to this account"
                )
            return {"id": match["id"], "object": "account", "charges_enabled": True}
        account = _account(fake, request)
        if path == "/v1/customers":
            return _create_customer(fake, account, params)
        if path == "/v1/invoices":
            return _create_invoice(fake, account, params)
        if path == "/v1/invoiceitems":
            return _create_invoice_item(fake, account, params)
        if path == "/v1/credit_notes":
            return _create_credit_note(fake, account, params)
        if path.endswith("/finalize"):
            return _finalize(fake, account, match["id"], params)
        if path.endswith("/void"):
            return _void(fake, account, match["id"])
        if method == "DELETE":
            return _delete(account, match["id"])
        invoice = _lookup(account.invoices, match["id"], "invoice")
        _recompute(account, invoice)
        return invoice

    async def handle(request: Request) -> JSONResponse:
        method, path = request.method, request.url.path
        account_header = request.headers.get("stripe-account")
        key = request.headers.get("idempotency-key")
        status, replayed = 200, False
        try:
            if request.headers.get("authorization") != f"Bearer {API_KEY}":
                raise StripeRefusal(401, "invalid_request_error", "Invalid API Key provided")
            route = next(
                (
                    (m, t)
                    for (verb, pattern, t) in table
                    if verb == method and (m := re.fullmatch(pattern, path))
                ),
                None,
            )
            if route is None:
                raise StripeRefusal(
                    404, "invalid_request_error", f"Unrecognized request URL ({method}: {path})"
                )
            match, params_type = route
            raw = (await request.body()).decode() if method == "POST" else request.url.query
            params = decode_form(raw)
            check_typeddict(params, params_type)
            if method == "POST" and path != "/oauth/token" and not _own_key(key):
                raise _invalid(
                    "This fake requires an Idempotency-Key derived from the caller's ids on "
                    f"every POST (got {key!r}: a random one the library made up)"
                )
            failure = fake.failure_for(method, path)
            if failure is not None and failure.status:
                kind = "rate_limit_error" if failure.status == 429 else "api_error"
                status = failure.status
                return _json({"error": {"type": kind, "message": "fake failure on demand"}}, status)
            scope = (account_header or "platform", key) if key else None
            with fake.lock:
                if scope is not None and scope in fake._idempotency:
                    seen_method_path, seen_params, seen_status, seen_body = fake._idempotency[scope]
                    if (seen_method_path, seen_params) != (f"{method} {path}", params):
                        raise StripeRefusal(
                            400,
                            "idempotency_error",
                            "Keys for idempotent requests can only be used with the same "
                            "parameters they were first used with.",
                        )
                    status, body, replayed = seen_status, seen_body, True
                else:
                    try:
                        body = execute(method, path, match.groupdict(), params, request)
                        if isinstance(body, dict) and body.get("error") == "invalid_grant":
                            status = 400
                    except StripeRefusal as refusal:
                        status, body = refusal.status, refusal.body
                    if scope is not None and status != 404:
                        fake._idempotency[scope] = (f"{method} {path}", params, status, body)
                    body = json.loads(json.dumps(body))
            if failure is not None and failure.delay:
                await asyncio.sleep(failure.delay)
            if failure is not None and failure.hold is not None:
                with fake.lock:
                    fake.calls.append(Call(method, path, account_header, key, -1, replayed))
                while not failure.hold.is_set():
                    await asyncio.sleep(0.02)
            return _json(body, status, replayed)
        except StripeRefusal as refusal:
            status = refusal.status
            return _json(refusal.body, refusal.status)
        finally:
            with fake.lock:
                fake.calls.append(Call(method, path, account_header, key, status, replayed))

    return [Route("/{path:path}", handle, methods=["GET", "POST", "DELETE"])]


def sign_webhook(payload: bytes, secret: str = WEBHOOK_SECRET, timestamp: int | None = None) -> str:
    """The `Stripe-Signature` header Stripe sends: `t=<unix>,v1=<hex HMAC-SHA256 of "t.body">`."""
    t = int(time.time()) if timestamp is None else timestamp
    digest = hmac.new(secret.encode(), f"{t}.".encode() + payload, hashlib.sha256).hexdigest()
    return f"t={t},v1={digest}"


@contextmanager
def fake_stripe_serving() -> Iterator[FakeStripe]:
    """A `FakeStripe` served by uvicorn on 127.0.0.1, port chosen by the OS."""
    fake = FakeStripe()
    app = Starlette(routes=_routes(fake))
    config = uvicorn.Config(app, host="127.0.0.1", port=0, log_level="warning", lifespan="off")
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, name="fake-stripe", daemon=True)
    thread.start()
    deadline = time.monotonic() + 10
    while not server.started:
        if time.monotonic() > deadline or not thread.is_alive():
            raise RuntimeError("fake Stripe did not start")
        time.sleep(0.01)
    port = server.servers[0].sockets[0].getsockname()[1]
    fake.url = f"http://127.0.0.1:{port}"
    try:
        yield fake
    finally:
        server.should_exit = True
        thread.join(timeout=10)
