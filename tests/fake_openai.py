"""A fake LLM provider: an OpenAI-compatible `POST /v1/chat/completions` on port 0, for the
real `openai` client to talk to. What it reports for each call is the test's to choose, and
it remembers every call."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any


@dataclass(frozen=True)
class ProviderUsage:
    """What the provider reports for one call, as the OpenAI API shapes it; the token
    details are left out of the answer when None."""

    prompt_tokens: int
    completion_tokens: int
    cached_tokens: int | None = None
    reasoning_tokens: int | None = None

    def as_openai(self) -> dict[str, Any]:
        document: dict[str, Any] = {
            "prompt_tokens": self.prompt_tokens,
            "completion_tokens": self.completion_tokens,
            "total_tokens": self.prompt_tokens + self.completion_tokens,
        }
        if self.cached_tokens is not None:
            document["prompt_tokens_details"] = {"cached_tokens": self.cached_tokens}
        if self.reasoning_tokens is not None:
            document["completion_tokens_details"] = {"reasoning_tokens": self.reasoning_tokens}
        return document


@dataclass(frozen=True)
class ProviderCall:
    response_id: str
    request_model: str
    response_model: str
    usage: ProviderUsage


# What to report for a call: from the call's number (1 for the first) and its request body.
UsagePolicy = Callable[[int, dict[str, Any]], ProviderUsage]


class _ChatCompletionsHandler(BaseHTTPRequestHandler):
    server: FakeOpenAI

    def do_POST(self) -> None:
        if self.path != "/v1/chat/completions":
            self._answer(404, {"error": {"message": f"no route {self.path}"}})
            return
        call = self.server.next_call(
            json.loads(self.rfile.read(int(self.headers["content-length"])))
        )
        self._answer(
            200,
            {
                "id": call.response_id,
                "object": "chat.completion",
                "created": int(time.time()),
                "model": call.response_model,
                "choices": [
                    {
                        "index": 0,
                        "message": {"role": "assistant", "content": "Done."},
                        "finish_reason": "stop",
                    }
                ],
                "usage": call.usage.as_openai(),
            },
        )

    def _answer(self, status: int, document: object) -> None:
        payload = json.dumps(document).encode()
        self.send_response(status)
        self.send_header("content-type", "application/json")
        self.send_header("content-length", str(len(payload)))
        self.end_headers()
        self.wfile.write(payload)

    def log_message(self, format: str, *args: Any) -> None:
        pass


class FakeOpenAI(ThreadingHTTPServer):
    """Answers every chat completion with the usage `policy` gives, and the request's model
    dated as the response model; `calls` lists what it reported, in order."""

    daemon_threads = True

    def __init__(self, policy: UsagePolicy) -> None:
        super().__init__(("127.0.0.1", 0), _ChatCompletionsHandler)
        self._policy = policy
        self._lock = threading.Lock()
        self.calls: list[ProviderCall] = []

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}/v1"

    @property
    def tokens(self) -> int:
        """Prompt and completion tokens of every call so far."""
        with self._lock:
            return sum(c.usage.prompt_tokens + c.usage.completion_tokens for c in self.calls)

    def next_call(self, body: dict[str, Any]) -> ProviderCall:
        with self._lock:
            n = len(self.calls) + 1
            request_model = body["model"]
            call = ProviderCall(
                f"chatcmpl-{n}", request_model, f"{request_model}-2024-07-18", self._policy(n, body)
            )
            self.calls.append(call)
            return call


@contextmanager
def fake_openai_serving(policy: UsagePolicy) -> Iterator[FakeOpenAI]:
    """A `FakeOpenAI` serving from a thread of its own until the block ends."""
    provider = FakeOpenAI(policy)
    thread = threading.Thread(target=provider.serve_forever, args=(0.05,), daemon=True)
    thread.start()
    try:
        yield provider
    finally:
        provider.shutdown()
        provider.server_close()
        thread.join(timeout=10)
