"""A fake Anthropic: the Messages API (`POST /v1/messages`, streamed or not) on port 0, for
the real `anthropic` SDK and the frameworks built on it.

Strict: a request the real API would refuse (no `max_tokens`, no messages, a message that
is not user/assistant, an unknown top-level field, a tool result without its tool call) is
a 400 in Anthropic's error shape. Stateful: every call is remembered with what it reported.
Each call reports cache reads and writes; a request with tools is answered first with a
`tool_use` block, then (once the tool result comes back) with text; a request asking for
extended thinking gets a thinking block (Anthropic counts thinking in `output_tokens` and
reports no separate figure).
"""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

_FIELDS = frozenset(
    {
        "model",
        "max_tokens",
        "messages",
        "system",
        "stream",
        "tools",
        "tool_choice",
        "temperature",
        "top_p",
        "top_k",
        "stop_sequences",
        "metadata",
        "thinking",
        "service_tier",
    }
)


@dataclass(frozen=True)
class AnthropicUsage:
    """What the provider reports for one call; Anthropic's `input_tokens` exclude cache."""

    uncached_input_tokens: int
    cache_write_tokens: int
    cache_read_tokens: int
    output_tokens: int
    # Thinking tokens (part of output_tokens), reported only when thinking was asked for.
    thinking_tokens: int | None = None

    @property
    def input_tokens(self) -> int:
        """All input tokens, cached ones included (how OTel and AgentMeter count)."""
        return self.uncached_input_tokens + self.cache_write_tokens + self.cache_read_tokens

    def as_anthropic(self, *, output_tokens: int | None = None) -> dict[str, Any]:
        document: dict[str, Any] = {
            "input_tokens": self.uncached_input_tokens,
            "cache_creation_input_tokens": self.cache_write_tokens,
            "cache_read_input_tokens": self.cache_read_tokens,
            "output_tokens": self.output_tokens if output_tokens is None else output_tokens,
        }
        if self.thinking_tokens is not None and output_tokens is None:
            document["output_tokens_details"] = {"thinking_tokens": self.thinking_tokens}
        return document


@dataclass(frozen=True)
class AnthropicCall:
    response_id: str
    model: str
    usage: AnthropicUsage
    streamed: bool


def usage_of_call(n: int, *, thinking: bool) -> AnthropicUsage:
    """The usage reported for the n-th call (1 for the first): distinct in every figure."""
    return AnthropicUsage(
        uncached_input_tokens=100 + n,
        cache_write_tokens=200 + n,
        cache_read_tokens=300 + n,
        output_tokens=40 + n,
        thinking_tokens=10 + n if thinking else None,
    )


class BadRequestError(ValueError):
    """The request is one the real API refuses."""


def check_request(body: Any) -> None:
    """Refuse what the real Messages API refuses (the parts clients get wrong)."""
    if not isinstance(body, dict):
        raise BadRequestError("body must be a JSON object")
    unknown = set(body) - _FIELDS
    if unknown:
        raise BadRequestError(f"{sorted(unknown)[0]}: Extra inputs are not permitted")
    if not isinstance(body.get("model"), str) or not body["model"]:
        raise BadRequestError("model: Field required")
    if not isinstance(body.get("max_tokens"), int) or body["max_tokens"] < 1:
        raise BadRequestError("max_tokens: Field required")
    messages = body.get("messages")
    if not isinstance(messages, list) or not messages:
        raise BadRequestError("messages: at least one message is required")
    tool_uses: set[str] = set()
    for message in messages:
        if not isinstance(message, dict) or message.get("role") not in ("user", "assistant"):
            raise BadRequestError("messages: roles must be user or assistant")
        content = message.get("content")
        if isinstance(content, str):
            continue
        if not isinstance(content, list):
            raise BadRequestError("messages: content must be a string or a list of blocks")
        for block in content:
            if not isinstance(block, dict) or "type" not in block:
                raise BadRequestError("messages: content blocks need a type")
            if block["type"] == "tool_use":
                tool_uses.add(block["id"])
            if block["type"] == "tool_result" and block.get("tool_use_id") not in tool_uses:
                raise BadRequestError("tool_result block without a preceding tool_use")


def _wants_tool(body: dict[str, Any]) -> bool:
    """Tools offered and no tool result yet in the last user message."""
    if not body.get("tools"):
        return False
    last = body["messages"][-1].get("content")
    return not (isinstance(last, list) and any(b.get("type") == "tool_result" for b in last))


def _content(body: dict[str, Any]) -> list[dict[str, Any]]:
    blocks: list[dict[str, Any]] = []
    if isinstance(body.get("thinking"), dict) and body["thinking"].get("type") == "enabled":
        blocks.append({"type": "thinking", "thinking": "Let me think.", "signature": "sig"})
    if _wants_tool(body):
        tool = body["tools"][0]
        blocks.append(
            {"type": "tool_use", "id": "toolu_01", "name": tool["name"], "input": {"city": "Paris"}}
        )
    else:
        blocks.append({"type": "text", "text": "Done."})
    return blocks


class _MessagesHandler(BaseHTTPRequestHandler):
    server: FakeAnthropic

    def do_POST(self) -> None:
        if self.path.split("?")[0] != "/v1/messages":
            self._json(404, _error("not_found_error", f"no route {self.path}"))
            return
        try:
            body = json.loads(self.rfile.read(int(self.headers["content-length"])))
            check_request(body)
        except (BadRequestError, json.JSONDecodeError) as error:
            self._json(400, _error("invalid_request_error", str(error)))
            return
        streamed = bool(body.get("stream"))
        thinking = (
            isinstance(body.get("thinking"), dict) and body["thinking"].get("type") == "enabled"
        )
        call = self.server.next_call(body["model"], streamed, thinking)
        content = _content(body)
        stop = "tool_use" if content[-1]["type"] == "tool_use" else "end_turn"
        message = {
            "id": call.response_id,
            "type": "message",
            "role": "assistant",
            "model": call.model,
            "content": content,
            "stop_reason": stop,
            "stop_sequence": None,
            "usage": call.usage.as_anthropic(),
        }
        if streamed:
            self._stream(message, call.usage)
        else:
            self._json(200, message)

    def _stream(self, message: dict[str, Any], usage: AnthropicUsage) -> None:
        self.send_response(200)
        self.send_header("content-type", "text/event-stream")
        self.end_headers()
        start = {**message, "content": [], "stop_reason": None}
        start["usage"] = usage.as_anthropic(output_tokens=1)
        self._event("message_start", {"type": "message_start", "message": start})
        for index, block in enumerate(message["content"]):
            empty = {**block}
            delta: dict[str, Any]
            if block["type"] == "text":
                empty["text"] = ""
                delta = {"type": "text_delta", "text": block["text"]}
            elif block["type"] == "thinking":
                empty["thinking"] = ""
                delta = {"type": "thinking_delta", "thinking": block["thinking"]}
            else:
                empty["input"] = {}
                delta = {"type": "input_json_delta", "partial_json": json.dumps(block["input"])}
            self._event(
                "content_block_start",
                {"type": "content_block_start", "index": index, "content_block": empty},
            )
            self._event(
                "content_block_delta",
                {"type": "content_block_delta", "index": index, "delta": delta},
            )
            if block["type"] == "thinking":
                self._event(
                    "content_block_delta",
                    {
                        "type": "content_block_delta",
                        "index": index,
                        "delta": {"type": "signature_delta", "signature": block["signature"]},
                    },
                )
            self._event("content_block_stop", {"type": "content_block_stop", "index": index})
        self._event(
            "message_delta",
            {
                "type": "message_delta",
                "delta": {"stop_reason": message["stop_reason"], "stop_sequence": None},
                "usage": usage.as_anthropic(),
            },
        )
        self._event("message_stop", {"type": "message_stop"})

    def _event(self, name: str, data: object) -> None:
        self.wfile.write(f"event: {name}\ndata: {json.dumps(data)}\n\n".encode())
        self.wfile.flush()

    def _json(self, status: int, document: object) -> None:
        payload = json.dumps(document).encode()
        self.send_response(status)
        self.send_header("content-type", "application/json")
        self.send_header("content-length", str(len(payload)))
        self.end_headers()
        self.wfile.write(payload)

    def log_message(self, format: str, *args: Any) -> None:
        pass


def _error(kind: str, message: str) -> dict[str, Any]:
    return {"type": "error", "error": {"type": kind, "message": message}}


class FakeAnthropic(ThreadingHTTPServer):
    """Answers Messages API calls with `usage_of_call`; `calls` lists them in order."""

    daemon_threads = True

    def __init__(self) -> None:
        super().__init__(("127.0.0.1", 0), _MessagesHandler)
        self._lock = threading.Lock()
        self.calls: list[AnthropicCall] = []

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}"

    def next_call(self, model: str, streamed: bool, thinking: bool) -> AnthropicCall:
        with self._lock:
            n = len(self.calls) + 1
            usage = usage_of_call(n, thinking=thinking)
            call = AnthropicCall(f"msg_{n:04d}", model, usage, streamed)
            self.calls.append(call)
            return call

    def clear(self) -> None:
        with self._lock:
            self.calls.clear()


@contextmanager
def fake_anthropic_serving() -> Iterator[FakeAnthropic]:
    """A `FakeAnthropic` serving from a thread of its own until the block ends."""
    provider = FakeAnthropic()
    thread = threading.Thread(target=provider.serve_forever, args=(0.05,), daemon=True)
    thread.start()
    try:
        yield provider
    finally:
        provider.shutdown()
        provider.server_close()
        thread.join(timeout=10)
