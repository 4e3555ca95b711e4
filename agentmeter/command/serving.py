"""Running an ASGI app on uvicorn inside an event loop that the caller owns."""

from __future__ import annotations

import asyncio
import contextlib
import gc
from collections.abc import Iterator

import uvicorn


def freeze_startup_heap() -> None:
    """Put every object alive now (modules, the app, its routes, schemas and templates) out
    of the garbage collector's reach, so a full collection walks only what requests
    allocate. Without it a full collection walked the whole start-up heap: ~140 ms pauses
    that were the portal's p99 at 10 M records (`gc.freeze`, which Python's documentation
    advises for long-lived servers)."""
    gc.collect()
    gc.freeze()


class _Server(uvicorn.Server):
    """A uvicorn server that leaves signal handling to its caller (several share a loop)."""

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        yield


async def start_http(
    app: object, host: str, port: int
) -> tuple[uvicorn.Server, asyncio.Task[None], int]:
    """Start serving `app` on `host:port` (0: any free port); return the server, its task
    and the bound port once it listens. Set `should_exit` and await the task to stop it."""
    config = uvicorn.Config(
        app,  # type: ignore[arg-type]
        host=host,
        port=port,
        lifespan="off",
        log_level="warning",
        access_log=False,
    )
    server = _Server(config)
    task = asyncio.create_task(server.serve())
    while not server.started:
        if task.done():
            task.result()  # raises the bind error
            raise RuntimeError(f"HTTP server on {host}:{port} stopped during startup")
        await asyncio.sleep(0.01)
    bound: int = server.servers[0].sockets[0].getsockname()[1]
    freeze_startup_heap()
    return server, task, bound
