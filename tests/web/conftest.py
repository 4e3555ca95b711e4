"""Fixtures of the page tests (portal and dashboard): a fresh browser context per test,
with everything the page logs that hints at a broken page (CSP refusals, script errors)
collected; the app served by uvicorn in a thread over a fresh SQLite database; screenshots
saved by name under the session's screenshot folder (git-ignored). The browser itself is
`tests.conftest.browser`, one per module."""

from __future__ import annotations

import re
import shutil
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest
import uvicorn
from playwright.sync_api import Browser, Page
from prometheus_client import CollectorRegistry
from sqlalchemy import Engine

from agentmeter.db import make_engine
from agentmeter.settings import Settings
from billing_api.app import create_app
from tests.conftest import SCREENSHOTS, RunningServer
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


@dataclass
class LiveApp:
    """The app on a real socket: `url` is its base, `engine` its database."""

    url: str
    engine: Engine


@pytest.fixture
def live_app(tmp_path: Path, migrated_templates: dict[str, str]) -> Iterator[LiveApp]:
    """`create_app` over a fresh migrated SQLite database, served by uvicorn on port 0."""
    path = tmp_path / "agentmeter.db"
    shutil.copyfile(migrated_templates["sqlite"], path)
    settings = Settings(database_url=f"sqlite:///{path}", secret_keys="test-secret-" + "x" * 32)
    engine = make_engine(settings)
    app = create_app(engine, CollectorRegistry(), settings)
    server = uvicorn.Server(
        uvicorn.Config(app, host="127.0.0.1", port=0, log_level="warning", lifespan="off")
    )
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not server.started:
        assert time.monotonic() < deadline, "uvicorn did not start"
        time.sleep(0.01)
    port = server.servers[0].sockets[0].getsockname()[1]
    try:
        yield LiveApp(url=f"http://127.0.0.1:{port}", engine=engine)
    finally:
        server.should_exit = True
        thread.join(timeout=30)
        engine.dispose()


@pytest.fixture
def page(browser: Browser) -> Iterator[Page]:
    """A fresh browser context (no cookies) and page, phone-friendly desktop size."""
    context = browser.new_context(viewport={"width": 1100, "height": 900})
    try:
        opened = context.new_page()
        opened.set_default_timeout(15_000)
        yield opened
    finally:
        context.close()


def screenshot(page: Page, request: pytest.FixtureRequest, name: str) -> Path:
    """Save a full-page screenshot as <screenshots>/<module>/<test>-<name>.png."""
    folder = SCREENSHOTS / Path(str(request.node.path)).stem
    folder.mkdir(parents=True, exist_ok=True)
    test = re.sub(r"[^A-Za-z0-9_.-]+", "_", request.node.name)
    path = folder / f"{test}-{name}.png"
    page.screenshot(path=path, full_page=True)
    return path
