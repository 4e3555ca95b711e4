"""Agent-side attribution: name the customer once, every span of the work carries it.

    from otel_processor import CustomerSpanProcessor, customer

    provider.add_span_processor(CustomerSpanProcessor())
    with customer("acme"):
        agent.run(...)          # every span started in here gets agentmeter.customer.id

The customer travels as OTel baggage (`agentmeter.customer.id`, and `agentmeter.step`
when set with `step(...)`), so it follows the OTel context: into nested calls, into asyncio
tasks created inside the block (they copy the context when created), and to other services
through baggage propagation. A new thread starts with an empty context: run its work inside
its own `with customer(...)`, or hand the context over with `contextvars.copy_context().run`
(or `opentelemetry-instrumentation-threading`). Baggage leaves the process in HTTP headers:
put an opaque customer id in it, never a secret or personal data.
"""

from __future__ import annotations

import functools
import inspect
from collections.abc import Callable
from contextvars import Token
from typing import Any, TypeVar, cast

from opentelemetry import baggage, context
from opentelemetry.context import Context
from opentelemetry.processor.baggage import BaggageSpanProcessor

from otel_processor.conventions import STEP

CUSTOMER_KEY = "agentmeter.customer.id"
_KEYS = frozenset({CUSTOMER_KEY, STEP})

F = TypeVar("F", bound=Callable[..., Any])


class CustomerSpanProcessor(BaggageSpanProcessor):
    """Copies `agentmeter.customer.id` and `agentmeter.step` from baggage onto every span
    when it starts, including spans that instrumentation libraries create.

    Other baggage entries are left alone (they may be private). `on_start` does not block.
    """

    def __init__(self) -> None:
        super().__init__(lambda key: key in _KEYS)


class _BaggageScope:
    """A context manager and decorator that sets one baggage entry for its extent.

    Re-entrant: each `with` attaches its own context and detaches it on exit.
    """

    def __init__(self, key: str, value: str) -> None:
        if not value or not value.strip():
            raise ValueError(f"{key} must be a non-empty string")
        self._key = key
        self._value = value
        self._tokens: list[Token[Context]] = []

    def __enter__(self) -> None:
        self._tokens.append(context.attach(baggage.set_baggage(self._key, self._value)))

    def __exit__(self, *exc_info: object) -> None:
        context.detach(self._tokens.pop())

    def __call__(self, function: F) -> F:
        # Each call gets its own scope, so concurrent calls never share a token stack.
        def scope() -> _BaggageScope:
            return _BaggageScope(self._key, self._value)

        if inspect.iscoroutinefunction(function):

            @functools.wraps(function)
            async def run_async(*args: Any, **kwargs: Any) -> Any:
                with scope():
                    return await function(*args, **kwargs)

            return cast(F, run_async)

        @functools.wraps(function)
        def run(*args: Any, **kwargs: Any) -> Any:
            with scope():
                return function(*args, **kwargs)

        return cast(F, run)


def customer(customer_id: str) -> _BaggageScope:
    """Attribute everything started inside to `customer_id`.

    Use as `with customer("acme"):` or as a decorator (`@customer("acme")`, sync or async).
    """
    return _BaggageScope(CUSTOMER_KEY, customer_id)


def step(name: str) -> _BaggageScope:
    """Label everything started inside with billing step `name` (`agentmeter.step`)."""
    return _BaggageScope(STEP, name)
