"""Money, numbers and dates for people, in their locale: the one formatting helper of pages.

Babel (CLDR data) does the formatting; nothing here is hand-written per locale. Amounts
come in as integer minor units and quantities as exact Decimals, and are shown exactly:
never through float, never rounded beyond what the invoice itself rounded.
"""

from __future__ import annotations

from datetime import UTC, date, datetime
from decimal import Decimal

from babel import Locale, UnknownLocaleError
from babel.dates import format_date, format_datetime
from babel.numbers import format_currency, format_percent

from agentmeter.clock import as_utc
from agentmeter.money import from_minor

DEFAULT_LOCALE = "en_US"


def parse_locale(tag: str) -> Locale:
    """A BCP 47 or POSIX tag ("de-CH", "fr_FR") as a Babel locale; `ValueError` if CLDR
    does not know it."""
    try:
        return Locale.parse(tag.strip().replace("-", "_"))
    except (UnknownLocaleError, ValueError, TypeError) as error:
        raise ValueError(f"unknown locale {tag!r}; use a tag like en-US or de-DE") from error


class LocaleFormat:
    """Formats figures for one locale; templates get one as `fmt`."""

    def __init__(self, locale: str | None = None) -> None:
        self.locale = parse_locale(locale or DEFAULT_LOCALE)
        # What format_decimal looks up on every call; pages format thousands of figures.
        self._decimal_pattern = self.locale.decimal_formats[None]

    @property
    def tag(self) -> str:
        """The locale as an HTML `lang` value ("en-US")."""
        return str(self.locale).replace("_", "-")

    def money(self, minor: int, currency: str) -> str:
        """`12345, "USD"` → "$123.45" (en-US) or "123,45 $" (fr-FR)."""
        return format_currency(from_minor(minor, currency), currency, locale=self.locale)

    def number(self, value: Decimal | int) -> str:
        """An exact quantity with the locale's grouping: 1234567.5 → "1,234,567.5"."""
        text: str = self._decimal_pattern.apply(value, self.locale, decimal_quantization=False)
        return text

    def unit_price(self, price: Decimal | None, currency: str, per_units: int) -> str:
        """ "$3.00 / 1,000,000": a unit price as the invoice states it (all its places)."""
        if price is None:
            return ""
        amount = format_currency(price, currency, locale=self.locale, decimal_quantization=False)
        return amount if per_units == 1 else f"{amount} / {self.number(per_units)}"

    def percent(self, value: Decimal) -> str:
        """A percentage given in percent points: 41.5 → "41.5%"."""
        return format_percent(value / 100, locale=self.locale, decimal_quantization=False)

    def date(self, moment: datetime | date) -> str:
        """A calendar date, medium length: "Nov 3, 2026"."""
        day = as_utc(moment).date() if isinstance(moment, datetime) else moment
        return format_date(day, format="medium", locale=self.locale)

    def datetime(self, moment: datetime) -> str:
        """A moment in UTC, medium length, saying so."""
        return format_datetime(moment, format="medium", tzinfo=UTC, locale=self.locale) + " UTC"
