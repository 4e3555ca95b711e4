"""Browser fixtures of the page tests (portal now, dashboard next): a fresh context per
test, with everything the page logs that hints at a broken page (CSP refusals, script
errors) collected, and screenshots saved by name."""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from playwright.sync_api import Browser, Page

from tests.conftest import RunningServer
from tests.web.portal_scenario import Portal


@dataclass
class BrowserPage:
    """A page, the problems its console reported, and where its screenshots go."""

    page: Page
    shots: Path
    prefix: str
    problems: list[str] = field(default_factory=list)

    def shot(self, name: str) -> Path:
        """Save a full-page screenshot `<test>-<name>.png` and return its path."""
        path = self.shots / f"{self.prefix}-{name}.png"
        self.page.screenshot(path=str(path), full_page=True)
        return path


def _open(browser: Browser, shots: Path, prefix: str, **options: object) -> Iterator[BrowserPage]:
    context = browser.new_context(accept_downloads=True, **options)  # type: ignore[arg-type]
    try:
        page = context.new_page()
        page.set_default_timeout(15_000)
        opened = BrowserPage(page, shots, prefix)
        page.on(
            "console",
            lambda m: opened.problems.append(m.text) if m.type in ("error", "warning") else None,
        )
        page.on("pageerror", lambda error: opened.problems.append(str(error)))
        yield opened
    finally:
        context.close()


def _prefix(request: pytest.FixtureRequest) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "-", request.node.name).strip("-")


@pytest.fixture
def desktop(
    browser: Browser, screenshot_dir: Path, request: pytest.FixtureRequest
) -> Iterator[BrowserPage]:
    yield from _open(
        browser, screenshot_dir, _prefix(request), viewport={"width": 1200, "height": 900}
    )


@pytest.fixture
def phone(
    browser: Browser, screenshot_dir: Path, request: pytest.FixtureRequest
) -> Iterator[BrowserPage]:
    yield from _open(
        browser,
        screenshot_dir,
        _prefix(request) + "-phone",
        viewport={"width": 390, "height": 844},
        is_mobile=True,
        has_touch=True,
    )


@pytest.fixture
def portal(server: RunningServer) -> Portal:
    """A running server with the portal scenario set up (see `portal_scenario`)."""
    return Portal(server).set_up()
