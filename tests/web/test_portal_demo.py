"""`agentmeter serve --demo` ends in something to click: it prints one portal link, which
opens the demo customer's portal."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import httpx


def test_demo_prints_a_portal_link_that_opens(tmp_path: Path) -> None:
    env = {**os.environ, "AGENTMETER_DATABASE_URL": f"sqlite:///{tmp_path / 'demo.db'}"}
    command = [sys.executable, "-m", "agentmeter", "serve", "--demo"]
    command += ["--grpc-port", "0", "--http-port", "0", "--api-port", "0"]
    with (tmp_path / "server.log").open("w") as log:
        process = subprocess.Popen(command, env=env, stdout=subprocess.PIPE, stderr=log, text=True)
    try:
        assert process.stdout is not None
        events = [json.loads(process.stdout.readline()) for _ in range(3)]
        assert [e["event"] for e in events] == ["demo", "ready", "portal_link"]
        link = events[2]
        assert link["url"].startswith(f"http://127.0.0.1:{events[1]['api_port']}/portal/open?")
        with httpx.Client(follow_redirects=True, timeout=30) as client:
            page = client.get(link["url"])
        assert page.status_code == 200
        assert str(page.url).endswith("/portal/")
        assert "Acme Inc" in page.text and "Estimated total" in page.text
    finally:
        process.terminate()
        process.wait(timeout=30)
