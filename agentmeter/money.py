"""The one money helper: currencies, minor units, rounding.

Amounts are Decimal while being computed and integer minor units once rounded. Rounding
happens once per invoice line (ROUND_HALF_UP, the convention of invoices and of Stripe);
totals are sums of rounded lines.
"""

from __future__ import annotations

from decimal import ROUND_HALF_UP, Decimal

# The largest amount in minor units a 64-bit column holds.
MAX_MINOR = 2**63 - 1


def _codes(text: str) -> frozenset[str]:
    return frozenset(text.split())


# ISO 4217 active codes, by the exponent of their minor unit.
_ZERO_DECIMAL = _codes("BIF CLP DJF GNF ISK JPY KMF KRW PYG RWF UGX UYI VND VUV XAF XOF XPF")
_THREE_DECIMAL = _codes("BHD IQD JOD KWD LYD OMR TND")
_TWO_DECIMAL = _codes(
    """AED AFN ALL AMD ANG AOA ARS AUD AWG AZN BAM BBD BDT BGN BMD BND BOB BRL BSD BTN BWP
    BYN BZD CAD CDF CHF CNY COP CRC CUP CVE CZK DKK DOP DZD EGP ERN ETB EUR FJD FKP GBP GEL
    GHS GIP GMD GTQ GYD HKD HNL HTG HUF IDR ILS INR IRR JMD KES KGS KHR KPW KYD KZT LAK LBP
    LKR LRD LSL MAD MDL MGA MKD MMK MNT MOP MRU MUR MVR MWK MXN MYR MZN NAD NGN NIO NOK NPR
    NZD PAB PEN PGK PHP PKR PLN QAR RON RSD RUB SAR SBD SCR SDG SEK SGD SHP SLE SOS SRD SSP
    STN SVC SYP SZL THB TJS TMT TOP TRY TTD TWD TZS UAH USD UYU UZS VES WST XCD YER ZAR ZMW
    ZWL"""
)
CURRENCIES = _ZERO_DECIMAL | _THREE_DECIMAL | _TWO_DECIMAL


class UnknownCurrencyError(ValueError):
    """Not an ISO 4217 currency code AgentMeter can bill in."""


def normalize_currency(code: str) -> str:
    """The upper-case ISO 4217 code, or `UnknownCurrencyError`."""
    upper = code.strip().upper()
    if upper not in CURRENCIES:
        raise UnknownCurrencyError(f"unknown currency {code!r}; use an ISO 4217 code like USD")
    return upper


def minor_exponent(currency: str) -> int:
    """Decimal places of the currency's minor unit: USD 2, JPY 0, KWD 3."""
    code = normalize_currency(currency)
    if code in _ZERO_DECIMAL:
        return 0
    if code in _THREE_DECIMAL:
        return 3
    return 2


def to_minor(amount: Decimal, currency: str) -> int:
    """Round `amount` (major units) once, half up, to integer minor units."""
    exponent = minor_exponent(currency)
    return int((amount.scaleb(exponent)).quantize(Decimal(1), rounding=ROUND_HALF_UP))


class InexactAmountError(ValueError):
    """Money entered with more precision than its currency's minor unit."""


def exact_minor(amount: Decimal, currency: str, what: str = "amount") -> int:
    """Money a person entered (major units) in integer minor units, exactly as written.

    The one rule for entered amounts (credits, budgets, line adjustments, credit notes,
    fees and commitments of price books): one finer than the currency's minor unit
    (USD 10.005, JPY 1.5) is refused with `InexactAmountError`, never rounded. Amounts
    AgentMeter computes round once with `to_minor`; unit prices (of price books and of
    manual lines) are not amounts.
    """
    minor = to_minor(amount, currency)
    if from_minor(minor, currency) != amount:
        places = minor_exponent(currency)
        allowed = "whole units" if places == 0 else f"at most {places} decimal places"
        raise InexactAmountError(
            f"{what} {plain_decimal(amount)} is finer than the {currency} minor unit: "
            f"{currency} amounts have {allowed}"
        )
    return minor


def from_minor(minor: int, currency: str) -> Decimal:
    """Integer minor units back to a Decimal amount in major units (exact)."""
    return Decimal(minor).scaleb(-minor_exponent(currency))


def format_minor(minor: int, currency: str) -> str:
    """`12345, "USD"` → `"123.45"`; `500, "JPY"` → `"500"` (no symbol, for APIs and CSV)."""
    exponent = minor_exponent(currency)
    return f"{from_minor(minor, currency):.{exponent}f}"


def plain_decimal(value: Decimal) -> str:
    """An exact decimal as text without exponent or trailing zeros: 8E+5 → "800000"."""
    text = format(value.normalize(), "f")
    return text if text != "-0" else "0"
