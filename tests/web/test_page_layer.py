"""The page layer's pure parts: locale formatting through Babel, and the CSP it sends."""

from __future__ import annotations

from datetime import UTC, date, datetime
from decimal import Decimal

import pytest

from billing_api.web.formatting import LocaleFormat, parse_locale
from billing_api.web.security import content_security_policy, is_frame_source, page_headers


class TestLocaleFormat:
    @pytest.mark.parametrize(
        ("locale", "minor", "currency", "expected"),
        [
            pytest.param("en-US", 123456, "USD", "$1,234.56", id="en-US dollars"),
            pytest.param("de-DE", 123456, "EUR", "1.234,56\xa0€", id="de-DE euros"),
            pytest.param("en-US", 500, "JPY", "¥500", id="zero-decimal yen"),
            pytest.param("en-US", 1234, "KWD", "KWD1.234", id="three-decimal dinar"),
            pytest.param("en-US", -5, "USD", "-$0.05", id="negative"),
        ],
    )
    def test_money_from_minor_units(
        self, locale: str, minor: int, currency: str, expected: str
    ) -> None:
        assert LocaleFormat(locale).money(minor, currency) == expected

    def test_numbers_keep_every_place(self) -> None:
        fmt = LocaleFormat("en-US")
        assert fmt.number(Decimal("1234567.123456")) == "1,234,567.123456"
        assert fmt.number(Decimal(0)) == "0"
        assert LocaleFormat("de-DE").number(Decimal("1234.5")) == "1.234,5"

    def test_unit_price_states_its_unit(self) -> None:
        fmt = LocaleFormat("en-US")
        assert fmt.unit_price(Decimal("3.00"), "USD", 1_000_000) == "$3.00 / 1,000,000"
        assert fmt.unit_price(Decimal("0.000125"), "USD", 1) == "$0.000125"
        assert fmt.unit_price(None, "USD", 1) == ""

    def test_dates_by_locale(self) -> None:
        moment = datetime(2026, 11, 3, 23, 30, tzinfo=UTC)
        assert LocaleFormat("en-US").date(moment) == "Nov 3, 2026"
        assert LocaleFormat("de-DE").date(date(2026, 11, 3)) == "03.11.2026"

    def test_percent(self) -> None:
        assert LocaleFormat("en-US").percent(Decimal("41.5")) == "41.5%"

    def test_html_lang_tag(self) -> None:
        assert LocaleFormat("pt_BR").tag == "pt-BR"
        assert LocaleFormat().tag == "en-US"

    @pytest.mark.parametrize("tag", ["xx-YY", "", "en US; drop"])
    def test_unknown_locale_is_refused(self, tag: str) -> None:
        with pytest.raises(ValueError, match="unknown locale"):
            parse_locale(tag)


class TestFrameSources:
    @pytest.mark.parametrize(
        "source",
        [
            "'self'",
            "https://app.example.com",
            "https://*.example.com",
            "https://app.example.com:8443",
            "https://app.example.com/embed/",
            "http://localhost:3000",
        ],
    )
    def test_accepted(self, source: str) -> None:
        assert is_frame_source(source)

    @pytest.mark.parametrize(
        "source",
        [
            "*",
            "https:",
            "http://app.example.com",
            "https://app.example.com; script-src *",
            "https://a.com https://b.com",
            "https://a.com,https://b.com",
            "'unsafe-inline'",
            "'none'",
            "javascript:alert(1)",
            "https://exa mple.com",
            "https://app.example.com\nX-Injected: 1",
            "",
        ],
    )
    def test_refused(self, source: str) -> None:
        assert not is_frame_source(source)

    def test_policy_frames_nobody_by_default(self) -> None:
        policy = content_security_policy()
        assert policy.endswith("frame-ancestors 'none'")
        assert "'unsafe-inline'" not in policy
        assert "script-src 'self'" in policy and "style-src 'self'" in policy

    def test_policy_lists_the_tenants_sources_and_drops_bad_ones(self) -> None:
        policy = content_security_policy(["https://app.example.com", "x; script-src *"])
        assert policy.endswith("frame-ancestors https://app.example.com")
        assert policy.count(";") == 8  # nine directives, none injected

    def test_embeddable_pages_carry_no_x_frame_options(self) -> None:
        assert page_headers()["x-frame-options"] == "DENY"
        assert "x-frame-options" not in page_headers(["https://app.example.com"])
