"""Browser fixtures of page tests: Debian's Chromium driven by Playwright (one per session)
and the app served by uvicorn in a thread on a port the OS picks, over a fresh SQLite
database; screenshots go to tests/output/ (git-ignored)."""

from __future__ import annotations

import re
import shutil
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import uvicorn
from playwright.sync_api import Browser, Page, sync_playwright
from prometheus_client import CollectorRegistry
from sqlalchemy import Engine

from agentmeter.db import make_engine
from agentmeter.settings import Settings
from billing_api.app import create_app

CHROMIUM = "/usr/bin/chromium"
# No internet here: these flags stop Chromium's own background connections.
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
OUTPUT = Path(__file__).resolve().parents[1] / "output"


@pytest.fixture(scope="session")
def browser() -> Iterator[Browser]:
    """Debian's Chromium, headless."""
    with sync_playwright() as playwright:
        launched = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            yield launched
        finally:
            launched.close()


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
    """Save a full-page screenshot as tests/output/<module>/<test>-<name>.png."""
    folder = OUTPUT / Path(str(request.node.path)).stem
    folder.mkdir(parents=True, exist_ok=True)
    test = re.sub(r"[^A-Za-z0-9_.-]+", "_", request.node.name)
    path = folder / f"{test}-{name}.png"
    page.screenshot(path=path, full_page=True)
    return path
