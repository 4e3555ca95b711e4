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

import asyncio
import contextvars
import functools
import inspect
from collections.abc import Callable
from contextvars import ContextVar, Token
from typing import Any, TypeVar, cast

from opentelemetry import baggage, context
from opentelemetry.context import Context
from opentelemetry.processor.baggage import BaggageSpanProcessor
from opentelemetry.trace import Span

from otel_processor.conventions import STEP

CUSTOMER_KEY = "agentmeter.customer.id"
_KEYS = frozenset({CUSTOMER_KEY, STEP})

F = TypeVar("F", bound=Callable[..., Any])


class CustomerSpanProcessor(BaggageSpanProcessor):
    """Copies `agentmeter.customer.id` and `agentmeter.step` from baggage onto every span
    when it starts, including spans that instrumentation libraries create.

    An attribute given explicitly when the span is created wins over baggage. Other
    baggage entries are left alone (they may be private). `on_start` does not block.
    """

    def __init__(self) -> None:
        super().__init__(lambda key: key in _KEYS)

    def on_start(self, span: Span, parent_context: Context | None = None) -> None:
        # The API's Span has no attributes; the SDK's (what an SDK processor gets) does.
        given = getattr(span, "attributes", None) or {}
        explicit = {key: given[key] for key in _KEYS if key in given}
        super().on_start(span, parent_context)
        for key, value in explicit.items():
            span.set_attribute(key, value)


class _BaggageScope:
    """A context manager and decorator that sets one baggage entry for its extent.

    As a context manager it is re-entrant and may be shared: each thread and asyncio task
    keeps its own stack of attached contexts. As a decorator it covers every call of a
    function, coroutine, generator or async generator, including the generator's steps,
    without leaking the entry into the caller between them.
    """

    def __init__(self, key: str, value: str) -> None:
        if not value or not value.strip():
            raise ValueError(f"{key} must be a non-empty string")
        self._key = key
        self._value = value
        self._tokens: ContextVar[tuple[Token[Context], ...]] = ContextVar(
            f"agentmeter_scope_{id(self)}", default=()
        )

    def __enter__(self) -> None:
        token = context.attach(baggage.set_baggage(self._key, self._value))
        self._tokens.set((*self._tokens.get(), token))

    def __exit__(self, *exc_info: object) -> None:
        *rest, token = self._tokens.get()
        self._tokens.set(tuple(rest))
        context.detach(token)

    def _context(self) -> contextvars.Context:
        """A copy of the caller's context with the entry set, for running generator steps."""
        scoped = contextvars.copy_context()
        scoped.run(context.attach, baggage.set_baggage(self._key, self._value))
        return scoped

    def __call__(self, function: F) -> F:
        if inspect.isasyncgenfunction(function):

            @functools.wraps(function)
            async def run_async_generator(*args: Any, **kwargs: Any) -> Any:
                scoped = self._context()
                steps = function(*args, **kwargs)
                try:
                    while True:
                        try:
                            # Each step runs as a task in the scoped context.
                            item = await asyncio.create_task(steps.__anext__(), context=scoped)
                        except StopAsyncIteration:
                            return
                        yield item
                finally:
                    await asyncio.create_task(steps.aclose(), context=scoped)

            return cast(F, run_async_generator)

        if inspect.isgeneratorfunction(function):

            @functools.wraps(function)
            def run_generator(*args: Any, **kwargs: Any) -> Any:
                scoped = self._context()
                steps = scoped.run(function, *args, **kwargs)
                try:
                    while True:
                        try:
                            item = scoped.run(next, steps)
                        except StopIteration as stop:
                            return stop.value
                        yield item
                finally:
                    scoped.run(steps.close)

            return cast(F, run_generator)

        if inspect.iscoroutinefunction(function):

            @functools.wraps(function)
            async def run_async(*args: Any, **kwargs: Any) -> Any:
                with self:
                    return await function(*args, **kwargs)

            return cast(F, run_async)

        @functools.wraps(function)
        def run(*args: Any, **kwargs: Any) -> Any:
            with self:
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
