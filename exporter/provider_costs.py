"""Provider cost of usage records: what the builder pays the LLM provider, per record.

Costs come from the `genai-prices` data bundled with the installed package (never fetched:
nothing here starts its `UpdatePrices` updater, and the process-wide snapshot that updater
would replace is not consulted), with the builder's negotiated rates
(`ProviderCostOverride`) taking precedence. Each record gets its cost in integer pico-USD
(10^-12 USD), or None when unknown. The rules:

Model. The span's provider (OTel's names: `openai`, `gcp.vertex_ai`, `aws.bedrock`, …) is
mapped to a genai-prices provider id (`genai_provider_id`); the model is looked up in that
provider (and in the providers it resells, as genai-prices does). An empty or unrecognised
provider lets genai-prices pick the provider from the model name; a recognised provider
without the model, or an empty model, means the model is unknown.

Disjoint parts. Stored token meters are inclusive (a span's `input_tokens` include its
cache reads and writes; `output_tokens` include reasoning). Each record carries the cost of
its own disjoint part, which is how genai-prices reads a `Usage`:

- `input_tokens`: input − cache reads − cache writes (never below 0), at the input rate;
- `cache_read_tokens` / `cache_write_tokens`: at the model's cache rate, or at the input
  rate when the model has none (genai-prices then counts them as plain input);
- `output_tokens`: output − reasoning (never below 0), at the output rate;
- `output_reasoning_tokens`: at the model's reasoning rate, or at the output rate.

So a span's record costs sum to genai-prices' `calc_price(...).total_price` (to within the
rounding of each record). A model's per-request fee (genai-prices `requests_kcount`) is
owed once per span and goes on its `input_tokens` record (else `output_tokens`, else its
first token meter in the order above). A known model without a price for a part costs 0
for it (genai-prices lists free models); an unknown model costs None, never 0.

Time. Prices are those valid at the span's time (`time_unix_nano`, the span end): dated
price changes and time-of-day prices (DeepSeek off-peak) both apply.

Long context. Tiered prices (genai-prices `TieredPrices`, the "cliff" model) are chosen per
span from its total input tokens (`input_tokens`, or the cache parts if they are larger):
past a tier's start, all the span's tokens of that part pay the tier's rate.

Overrides. A `ProviderCostOverride` prices a record of its `meter` whose provider and model
match its patterns (exact, or a case-sensitive glob: `*`, `?`, `[...]`, as in price-book
filters) at `unit_cost_usd` per `per_units`, from `effective_from` on. For a token meter it
replaces genai-prices' rate of that meter's part (tiers included); the fallbacks above then
use the overridden rate (cache reads of a model without a cache rate follow an input
override). Other meters (`tool_calls`, custom meters) are priced only by overrides; without
one their cost is None. When several overrides match: the most specific patterns win (exact
model before glob model, then exact provider before glob provider, then the longer
pattern), and among the same patterns the latest `effective_from` at or before the record's
time; an override not yet in effect leaves genai-prices' rate (or the next most specific
override in effect) in place.

Rounding. Prices and quantities are exact Decimals, multiplied as exact integer fractions
(`Decimal.as_integer_ratio`: no float, no context precision, no intermediate rounding);
each record's cost is rounded once, half to even, to a whole pico-USD.

Caches. Model lookups and the rates of each price version are cached per catalog (dated
prices per UTC day, time-of-day prices per minute), so the hot path neither searches
genai-prices' data nor calls its `calc_price`. Overrides are read from the database on
every `SqlUsageSink.write` (one indexed query per batch), so every replica applies a new
override from its commit on; `exporter.recost.recost_usage` recomputes records stored
before. This module is pure: no SQL (reading overrides and recosting are `exporter.recost`).
"""

from __future__ import annotations

import functools
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal
from typing import Any

from genai_prices.data_snapshot import find_provider_by_id
from genai_prices.data_units import unit_data
from genai_prices.types import (
    ModelInfo,
    ModelPrice,
    Provider,
    TieredPrices,
    TimeOfDateConstraint,
)

from agentmeter.patterns import is_glob, pattern_matches
from agentmeter.tables import from_unix_nano, to_unix_nano
from otel_processor.usage import (
    CACHE_READ_TOKENS,
    CACHE_WRITE_TOKENS,
    INPUT_TOKENS,
    OUTPUT_REASONING_TOKENS,
    OUTPUT_TOKENS,
    TOKEN_METERS,
    Quantity,
    UsageRecord,
)

__all__ = [
    "NO_OVERRIDES",
    "CostOverride",
    "CostOverrides",
    "ProviderCostCatalog",
    "canonical_provider",
    "genai_provider_id",
]

PICO_PER_USD = 10**12
_NANOS_PER_MINUTE = 60 * 10**9
_NANOS_PER_DAY = 1_440 * _NANOS_PER_MINUTE
_PERIODS_CACHED = 4_096  # per model
_TOKEN_METERS = frozenset(TOKEN_METERS)
# Which of a span's records carries a per-request fee: the first of these it has.
_FEE_METERS = (INPUT_TOKENS, OUTPUT_TOKENS, *TOKEN_METERS)

# OTel `gen_ai.provider.name` values (and older `gen_ai.system`, OpenInference and Vercel AI
# SDK spellings) whose genai-prices provider genai-prices' own matching would miss or get
# wrong (`azure.ai.openai` would match OpenAI's direct prices). Others are matched by
# genai-prices (`openai`, `anthropic`, `aws.bedrock`, `gcp.gemini`, `mistral_ai`, …).
_PROVIDER_IDS = {
    "azure.ai.openai": "azure",
    "azure.ai.inference": "azure",
    "az.ai.openai": "azure",
    "az.ai.inference": "azure",
    "azure-openai": "azure",
    "azure_openai": "azure",
    "gcp.gen_ai": "google",
    "gcp.gemini": "google",
    "gcp.vertex_ai": "google",
    "aws.bedrock": "aws",
    "mistral_ai": "mistral",
    "x_ai": "x-ai",
    "xai": "x-ai",
    "togetherai": "together",
    "together_ai": "together",
}


def _unit(usage_key: str) -> tuple[str, int]:
    """genai-prices' price key of a usage key and how many units its price is for."""
    unit = unit_data[usage_key]
    return str(unit.get("price_key", usage_key)), int(unit["per"])


# genai-prices' usage keys are AgentMeter's token meter names.
_INPUT_KEY = _unit(INPUT_TOKENS)
_CACHE_READ_KEY = _unit(CACHE_READ_TOKENS)
_CACHE_WRITE_KEY = _unit(CACHE_WRITE_TOKENS)
_OUTPUT_KEY = _unit(OUTPUT_TOKENS)
_REASONING_KEY = _unit(OUTPUT_REASONING_TOKENS)
_REQUEST_KEY = _unit("requests")

# A rate is an exact fraction (numerator, denominator) of pico-USD per unit.
_Fraction = tuple[int, int]
_FREE: _Fraction = (0, 1)


def _per_unit(price: Decimal, per: int) -> _Fraction:
    """`price` USD per `per` units as an exact fraction of pico-USD per unit."""
    numerator, denominator = (price * PICO_PER_USD).as_integer_ratio()
    return numerator, denominator * per


def _pico(quantity: Quantity, rate: _Fraction, fee: _Fraction | None = None) -> int:
    """quantity x rate (+ fee), rounded once, half to even, to whole pico-USD."""
    numerator, denominator = rate
    if isinstance(quantity, int):
        numerator *= quantity
    else:
        q_numerator, q_denominator = quantity.as_integer_ratio()
        numerator *= q_numerator
        denominator *= q_denominator
    if fee is not None:
        numerator = numerator * fee[1] + fee[0] * denominator
        denominator *= fee[1]
    quotient, remainder = divmod(numerator, denominator)
    twice = 2 * remainder
    if twice > denominator or (twice == denominator and quotient & 1):
        quotient += 1
    return quotient


@dataclass(frozen=True, slots=True)
class _Rate:
    """One part's price: a base rate and long-context tiers (highest start first)."""

    base: _Fraction
    tiers: tuple[tuple[int, _Fraction], ...] = ()

    def at(self, total_input: Quantity) -> _Fraction:
        for start, rate in self.tiers:
            if total_input > start:
                return rate
        return self.base

    @classmethod
    def of(cls, price: Decimal | TieredPrices, per: int) -> _Rate:
        if isinstance(price, TieredPrices):
            tiers = sorted(price.tiers, key=lambda tier: tier.start, reverse=True)
            return cls(
                _per_unit(price.base, per),
                tuple((tier.start, _per_unit(tier.price, per)) for tier in tiers),
            )
        return cls(_per_unit(price, per))


_FREE_RATE = _Rate(_FREE)


@dataclass(frozen=True, slots=True)
class _RateCard:
    """The rates of one genai-prices price version for AgentMeter's token meters.

    `cache_read`, `cache_write` and `reasoning` are None when the model has no price of its
    own for them (they then follow the input or output rate); `input` and `output` are None
    only for a model genai-prices does not know.
    """

    input: _Rate | None
    cache_read: _Rate | None
    cache_write: _Rate | None
    output: _Rate | None
    reasoning: _Rate | None
    per_request: _Fraction | None

    @classmethod
    def of(cls, price: ModelPrice) -> _RateCard:
        prices: dict[str, Any] = price.__dict__

        def rate(key: tuple[str, int]) -> _Rate | None:
            value = prices.get(key[0])
            return None if value is None else _Rate.of(value, key[1])

        request_fee = prices.get(_REQUEST_KEY[0])
        return cls(
            input=rate(_INPUT_KEY) or _FREE_RATE,
            cache_read=rate(_CACHE_READ_KEY),
            cache_write=rate(_CACHE_WRITE_KEY),
            output=rate(_OUTPUT_KEY) or _FREE_RATE,
            reasoning=rate(_REASONING_KEY),
            per_request=None if request_fee is None else _per_unit(request_fee, _REQUEST_KEY[1]),
        )


_UNKNOWN_MODEL = _RateCard(None, None, None, None, None, None)


class _ModelRates:
    """The rate cards of one genai-prices model over time."""

    def __init__(self, model: ModelInfo) -> None:
        self.model = model
        self._constant: _RateCard | None = None
        # Conditional prices change at UTC midnights (start dates) or, for time-of-day
        # prices, at whole minutes: one card serves each such period.
        self._period = _NANOS_PER_DAY
        self._by_period: dict[int, _RateCard] = {}
        # Price versions by identity, keeping the ModelPrice alive so its id stays unique.
        self._by_version: dict[int, tuple[ModelPrice, _RateCard]] = {}
        if isinstance(model.prices, ModelPrice):
            self._constant = _RateCard.of(model.prices)
            return
        for conditional in model.prices:
            constraint = conditional.constraint
            if isinstance(constraint, TimeOfDateConstraint):
                whole_minutes = all(
                    not (moment.second or moment.microsecond)
                    for moment in (constraint.start_time, constraint.end_time)
                )
                self._period = min(self._period, _NANOS_PER_MINUTE if whole_minutes else 1)

    def at(self, time_unix_nano: int) -> _RateCard:
        if self._constant is not None:
            return self._constant
        period = time_unix_nano // self._period
        card = self._by_period.get(period)
        if card is None:
            if len(self._by_period) >= _PERIODS_CACHED:
                self._by_period.clear()
            moment = from_unix_nano(period * self._period)
            card = self._by_period[period] = self._card(moment)
        return card

    def _card(self, moment: datetime) -> _RateCard:
        price = self.model.get_prices(moment)
        known = self._by_version.get(id(price))
        if known is None:
            known = self._by_version[id(price)] = (price, _RateCard.of(price))
        return known[1]


def genai_provider_id(provider: str) -> str | None:
    """The genai-prices provider id for an AgentMeter (OTel) provider name, if it has one.

    `gcp.vertex_ai` → `google`, `azure.ai.openai` → `azure`, `x_ai` → `x-ai`,
    `openai.chat` (Vercel AI SDK) → `openai`; None for an empty or unknown provider.
    """
    found = _genai_provider(provider, _bundled_providers())
    return None if found is None else found.id


@functools.lru_cache(maxsize=4096)
def canonical_provider(provider: str) -> str:
    """The provider id AgentMeter stores: genai-prices' id when it knows the provider
    (`openai.responses` → `openai`, `Anthropic` → `anthropic`, `gcp.vertex_ai` → `google`),
    else the name as the span gave it."""
    return genai_provider_id(provider) or provider


def _bundled_providers() -> list[Provider]:
    # The bundled data takes ~0.2 s to import: only a catalog (or a lookup) pays for it.
    from genai_prices.data import providers

    return providers


def _genai_provider(provider: str, providers: list[Provider]) -> Provider | None:
    name = provider.strip().lower()
    if not name:
        return None
    # Vercel's AI SDK names the API after a dot: `openai.chat`, `xai.chat`.
    prefix = name.partition(".")[0]
    for candidate in (_PROVIDER_IDS.get(name), _PROVIDER_IDS.get(prefix), name, prefix):
        if candidate and (found := find_provider_by_id(providers, candidate)):
            return found
    return None


@dataclass(frozen=True, slots=True)
class CostOverride:
    """A builder's rate for one meter of matching providers and models, from a time on."""

    provider: str  # exact or glob
    model: str  # exact or glob
    meter: str
    unit_cost_usd: Decimal
    per_units: int
    effective_from_unix_nano: int
    # Breaks ties between overrides of the same patterns and start: the later one wins.
    created_unix_nano: int = 0
    id: str = ""

    @classmethod
    def from_row(cls, row: Any) -> CostOverride:
        return cls(
            provider=row.provider,
            model=row.model,
            meter=row.meter,
            unit_cost_usd=row.unit_cost_usd,
            per_units=row.per_units,
            effective_from_unix_nano=to_unix_nano(row.effective_from),
            created_unix_nano=to_unix_nano(row.created_at) if row.created_at else 0,
            id=row.id,
        )


def _specificity(override: CostOverride) -> tuple[bool, bool, int, int]:
    return (
        not is_glob(override.model),
        not is_glob(override.provider),
        len(override.model),
        len(override.provider),
    )


class CostOverrides:
    """A tenant's provider cost overrides, compiled for lookup (see the module docstring)."""

    def __init__(self, overrides: Iterable[CostOverride]) -> None:
        self._overrides = frozenset(overrides)
        self._by_meter: dict[str, list[CostOverride]] = {}
        for override in self._overrides:
            self._by_meter.setdefault(override.meter, []).append(override)
        # (provider, model, meter) → matching overrides, the one to try first first.
        self._matching: dict[tuple[str, str, str], tuple[tuple[int, _Rate], ...]] = {}

    def __bool__(self) -> bool:
        return bool(self._by_meter)

    def __eq__(self, other: object) -> bool:
        """The same overrides (so the same costs): how a writer sees they changed."""
        return isinstance(other, CostOverrides) and self._overrides == other._overrides

    def __hash__(self) -> int:
        return hash(self._overrides)

    def _rate(self, provider: str, model: str, meter: str, time_unix_nano: int) -> _Rate | None:
        """The overriding rate of `meter` for this provider and model at this time, if any."""
        if meter not in self._by_meter:
            return None
        key = (provider, model, meter)
        candidates = self._matching.get(key)
        if candidates is None:
            matching = [
                o
                for o in self._by_meter[meter]
                if pattern_matches(o.provider, provider) and pattern_matches(o.model, model)
            ]
            matching.sort(
                key=lambda o: (
                    _specificity(o),
                    o.effective_from_unix_nano,
                    o.created_unix_nano,
                    o.id,
                ),
                reverse=True,
            )
            candidates = self._matching[key] = tuple(
                (o.effective_from_unix_nano, _Rate(_per_unit(o.unit_cost_usd, o.per_units)))
                for o in matching
            )
        for effective_from, rate in candidates:
            if effective_from <= time_unix_nano:
                return rate
        return None


NO_OVERRIDES = CostOverrides(())


class ProviderCostCatalog:
    """Provider cost per usage record, from bundled genai-prices data and tenant overrides.

    Pure computation over in-memory caches: safe to share between threads, never blocks on
    I/O. Building one loads genai-prices' bundled data (about 0.2 s, once per process).
    """

    def __init__(self, *, cache_size: int = 10_000) -> None:
        self._providers = _bundled_providers()
        self._cache_size = cache_size
        # Keys come from spans (untrusted): bounded by clearing when full.
        self._models: dict[tuple[str, str], _ModelRates | None] = {}

    def model(self, provider: str, model: str) -> ModelInfo | None:
        """The genai-prices model that prices `model` served by `provider`, if any."""
        rates = self._rates(provider, model)
        return None if rates is None else rates.model

    def costs(
        self, records: Sequence[UsageRecord], overrides: CostOverrides = NO_OVERRIDES
    ) -> list[int | None]:
        """The cost of each record (pico-USD, None when unknown), records of any spans.

        Records are costed span by span (trace id, span id): a span's parts and its
        long-context tier depend on its other records.
        """
        # A span's records usually come one after another: cost each run, unless a span
        # shows up in two places.
        costs: list[int | None] = []
        seen: set[tuple[str, str]] = set()
        begin = 0
        for index in range(1, len(records) + 1):
            if index < len(records):
                previous, record = records[index - 1], records[index]
                if record.span_id == previous.span_id and record.trace_id == previous.trace_id:
                    continue
            span = (records[begin].trace_id, records[begin].span_id)
            if span in seen:
                return self._scattered_costs(records, overrides)
            seen.add(span)
            costs.extend(self.span_costs(records[begin:index], overrides))
            begin = index
        return costs

    def _scattered_costs(
        self, records: Sequence[UsageRecord], overrides: CostOverrides
    ) -> list[int | None]:
        spans: dict[tuple[str, str], list[int]] = {}
        for index, record in enumerate(records):
            spans.setdefault((record.trace_id, record.span_id), []).append(index)
        costs: list[int | None] = [None] * len(records)
        for indexes in spans.values():
            span_costs = self.span_costs([records[i] for i in indexes], overrides)
            for index, cost in zip(indexes, span_costs, strict=True):
                costs[index] = cost
        return costs

    def span_costs(
        self, records: Sequence[UsageRecord], overrides: CostOverrides = NO_OVERRIDES
    ) -> list[int | None]:
        """The cost of each record of ONE span (pico-USD, None when unknown), in order.

        The span's records share its provider, model and time.
        """
        if not records:
            return []
        head = records[0]
        provider, model, when = head.provider, head.model, head.time_unix_nano
        has_overrides = bool(overrides)
        rates = self._rates(provider, model)
        if rates is None and not has_overrides:
            return [None] * len(records)
        card = _UNKNOWN_MODEL if rates is None else rates.at(when)

        quantities: dict[str, Quantity] = {}
        for record in records:
            if record.meter in _TOKEN_METERS:
                quantities[record.meter] = record.quantity
        get = quantities.get
        input_total, cache_read, cache_write = (
            get(INPUT_TOKENS, 0),
            get(CACHE_READ_TOKENS, 0),
            get(CACHE_WRITE_TOKENS, 0),
        )
        output_total, reasoning = get(OUTPUT_TOKENS, 0), get(OUTPUT_REASONING_TOKENS, 0)
        cached = cache_read + cache_write
        total_input = input_total if input_total > cached else cached

        # Overrides first, then the model's rate of the part, then the fallback rate.
        override: _Rate | None
        input_rate = None if card.input is None else card.input.at(total_input)
        output_rate = None if card.output is None else card.output.at(total_input)
        if has_overrides:
            if override := overrides._rate(provider, model, INPUT_TOKENS, when):
                input_rate = override.base
            if override := overrides._rate(provider, model, OUTPUT_TOKENS, when):
                output_rate = override.base
        fee = card.per_request
        fee_meter = None
        if fee is not None:
            fee_meter = next(m for m in _FEE_METERS if m in quantities)

        costs: list[int | None] = []
        for record in records:
            meter = record.meter
            rate: _Fraction | None
            own: _Rate | None
            if meter == INPUT_TOKENS:
                part: Quantity = input_total - cached if input_total > cached else 0
                rate = input_rate
            elif meter == OUTPUT_TOKENS:
                part = output_total - reasoning if output_total > reasoning else 0
                rate = output_rate
            elif meter in _TOKEN_METERS:
                part = record.quantity
                if meter == CACHE_READ_TOKENS:
                    own, rate = card.cache_read, input_rate
                elif meter == CACHE_WRITE_TOKENS:
                    own, rate = card.cache_write, input_rate
                else:
                    own, rate = card.reasoning, output_rate
                if own is not None:
                    rate = own.at(total_input)
                if has_overrides and (override := overrides._rate(provider, model, meter, when)):
                    rate = override.base
            else:
                override = overrides._rate(record.provider, record.model, meter, when)
                costs.append(None if override is None else _pico(record.quantity, override.base))
                continue
            if rate is None:
                costs.append(None)
            else:
                costs.append(_pico(part, rate, fee if meter == fee_meter else None))
        return costs

    def _rates(self, provider: str, model: str) -> _ModelRates | None:
        key = (provider, model)
        try:
            return self._models[key]
        except KeyError:
            pass
        found = self._find(provider, model)
        rates = None if found is None else _ModelRates(found)
        if len(self._models) >= self._cache_size:
            self._models.clear()
        self._models[key] = rates
        return rates

    def _find(self, provider: str, model: str) -> ModelInfo | None:
        """Look the model up as genai-prices' `calc_price` does, on the bundled data only."""
        model_ref = model.strip().lower()
        if not model_ref:
            return None
        found = _genai_provider(provider, self._providers)
        if found is None:
            # No (known) provider: the first provider claiming the model name, as genai-prices.
            found = next(
                (
                    p
                    for p in self._providers
                    if p.model_match is not None and p.model_match.is_match(model_ref)
                ),
                None,
            )
            if found is None:
                return None
        return found.find_model(model_ref, all_providers=self._providers)
