"""`start_http`, which serves both the API and the OTLP/HTTP receiver: it answers on the port
it reports, and it leaves the start-up heap out of the garbage collector's full collections."""

from __future__ import annotations

import asyncio
import gc

import httpx
from fastapi import FastAPI

from agentmeter.command.serving import start_http


def test_serves_on_the_reported_port_with_the_start_up_heap_frozen() -> None:
    app = FastAPI()

    @app.get("/ping")
    def ping() -> dict[str, str]:
        return {"pong": "yes"}

    started_with = [object() for _ in range(1000)]  # alive before the server starts

    async def scenario() -> tuple[int, dict[str, str], int]:
        server, task, port = await start_http(app, "127.0.0.1", 0)
        frozen = gc.get_freeze_count()
        async with httpx.AsyncClient() as client:
            answer = await client.get(f"http://127.0.0.1:{port}/ping")
        server.should_exit = True
        await task
        return port, answer.json(), frozen

    gc.unfreeze()
    try:
        port, body, frozen = asyncio.run(scenario())
    finally:
        gc.unfreeze()  # give the rest of the test session its heap back
    assert port > 0
    assert body == {"pong": "yes"}
    assert frozen >= len(started_with)
