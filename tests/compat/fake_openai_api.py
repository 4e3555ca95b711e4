"""A fake OpenAI: Chat Completions and Responses (`POST /v1/chat/completions`,
`POST /v1/responses`), streamed or not, on port 0, for the real `openai` SDK and the
frameworks built on it.

Strict: a request the real API would refuse (no model, no messages or input, an unknown
top-level field, a role it does not know, a tool result whose call it never made) is a 400 in
OpenAI's error shape. Stateful: every call is remembered with what it reported. Each call
reports cached input and reasoning tokens (OpenAI reports no cache writes); a request with
tools is answered first with a call of the first tool, then, once a tool result comes back,
with text.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

_CHAT_FIELDS = frozenset(
    {
        "model",
        "messages",
        "stream",
        "stream_options",
        "tools",
        "tool_choice",
        "parallel_tool_calls",
        "temperature",
        "top_p",
        "max_tokens",
        "max_completion_tokens",
        "n",
        "stop",
        "seed",
        "user",
        "response_format",
        "reasoning_effort",
        "metadata",
        "store",
        "logprobs",
        "top_logprobs",
        "presence_penalty",
        "frequency_penalty",
        "prompt_cache_key",
        "service_tier",
    }
)
_RESPONSES_FIELDS = frozenset(
    {
        "model",
        "input",
        "instructions",
        "stream",
        "tools",
        "tool_choice",
        "parallel_tool_calls",
        "temperature",
        "top_p",
        "max_output_tokens",
        "reasoning",
        "text",
        "include",
        "store",
        "metadata",
        "previous_response_id",
        "truncation",
        "user",
        "prompt_cache_key",
        "service_tier",
        "top_logprobs",
        "stream_options",
    }
)
_CHAT_ROLES = frozenset({"system", "developer", "user", "assistant", "tool"})


@dataclass(frozen=True)
class OpenAIUsage:
    """What the provider reports for one call (OpenAI counts cached input inside input and
    reasoning inside output, as AgentMeter stores them)."""

    input_tokens: int
    cached_tokens: int
    output_tokens: int
    reasoning_tokens: int


@dataclass(frozen=True)
class OpenAICall:
    response_id: str
    api: str  # "chat" or "responses"
    model: str
    usage: OpenAIUsage
    streamed: bool
    tool_call: bool


def usage_of_call(n: int) -> OpenAIUsage:
    """The usage reported for the n-th call (1 for the first): distinct in every figure."""
    return OpenAIUsage(
        input_tokens=500 + n, cached_tokens=200 + n, output_tokens=60 + n, reasoning_tokens=20 + n
    )


class BadRequestError(ValueError):
    """The request is one the real API refuses."""


def check_chat(body: Any) -> bool:
    """Validate a Chat Completions request; True when the answer should call a tool."""
    _check_fields(body, _CHAT_FIELDS)
    messages = body.get("messages")
    if not isinstance(messages, list) or not messages:
        raise BadRequestError("messages: at least one message is required")
    calls: set[str] = set()
    for message in messages:
        if not isinstance(message, dict) or message.get("role") not in _CHAT_ROLES:
            raise BadRequestError("messages: unknown role")
        for call in message.get("tool_calls") or []:
            calls.add(call["id"])
        if message["role"] == "tool" and message.get("tool_call_id") not in calls:
            raise BadRequestError("tool message without a preceding tool call")
    return bool(body.get("tools")) and messages[-1]["role"] != "tool"


def check_responses(body: Any) -> bool:
    """Validate a Responses request; True when the answer should call a tool."""
    _check_fields(body, _RESPONSES_FIELDS)
    items = body.get("input")
    if isinstance(items, str):
        return bool(body.get("tools"))
    if not isinstance(items, list) or not items:
        raise BadRequestError("input: a string or a non-empty list is required")
    calls: set[str] = set()
    for item in items:
        if not isinstance(item, dict):
            raise BadRequestError("input: items must be objects")
        if item.get("type") == "function_call":
            calls.add(item["call_id"])
        if item.get("type") == "function_call_output" and item.get("call_id") not in calls:
            raise BadRequestError("function_call_output without its function_call")
    last = items[-1]
    return bool(body.get("tools")) and last.get("type") != "function_call_output"


def _check_fields(body: Any, known: frozenset[str]) -> None:
    if not isinstance(body, dict):
        raise BadRequestError("body must be a JSON object")
    unknown = set(body) - known
    if unknown:
        raise BadRequestError(f"Unrecognized request argument supplied: {sorted(unknown)[0]}")
    if not isinstance(body.get("model"), str) or not body["model"]:
        raise BadRequestError("you must provide a model parameter")


def _tool_name(tool: dict[str, Any]) -> str:
    name = tool.get("name") or tool.get("function", {}).get("name")
    assert isinstance(name, str)
    return name


class _Handler(BaseHTTPRequestHandler):
    server: FakeOpenAIAPI

    def do_POST(self) -> None:
        route = self.path.split("?")[0]
        try:
            body = json.loads(self.rfile.read(int(self.headers["content-length"])))
            if route == "/v1/chat/completions":
                wants_tool = check_chat(body)
            elif route == "/v1/responses":
                wants_tool = check_responses(body)
            else:
                self._json(404, _error(f"no route {self.path}"))
                return
        except (BadRequestError, json.JSONDecodeError, KeyError) as error:
            self._json(400, _error(str(error)))
            return
        api = "chat" if route == "/v1/chat/completions" else "responses"
        streamed = bool(body.get("stream"))
        call = self.server.next_call(api, body["model"], streamed, wants_tool)
        tool = _tool_name(body["tools"][0]) if wants_tool else ""
        if api == "chat":
            self._chat(
                call,
                tool,
                include_usage=(body.get("stream_options") or {}).get("include_usage", False),
            )
        else:
            self._responses(call, tool)

    # Chat Completions ---------------------------------------------------------------------

    def _chat(self, call: OpenAICall, tool: str, *, include_usage: bool) -> None:
        usage = {
            "prompt_tokens": call.usage.input_tokens,
            "completion_tokens": call.usage.output_tokens,
            "total_tokens": call.usage.input_tokens + call.usage.output_tokens,
            "prompt_tokens_details": {"cached_tokens": call.usage.cached_tokens},
            "completion_tokens_details": {"reasoning_tokens": call.usage.reasoning_tokens},
        }
        tool_calls = [
            {
                "id": f"call_{call.response_id}",
                "type": "function",
                "function": {"name": tool, "arguments": json.dumps({"city": "Paris"})},
            }
        ]
        finish = "tool_calls" if tool else "stop"
        head = {"id": call.response_id, "created": int(time.time()), "model": call.model}
        if not call.streamed:
            message: dict[str, Any] = {"role": "assistant", "content": None if tool else "Done."}
            if tool:
                message["tool_calls"] = tool_calls
            choice = {"index": 0, "message": message, "finish_reason": finish}
            self._json(
                200, {**head, "object": "chat.completion", "choices": [choice], "usage": usage}
            )
            return
        self._start_stream()
        chunk = {**head, "object": "chat.completion.chunk"}
        delta: dict[str, Any] = {"role": "assistant"}
        if tool:
            delta["tool_calls"] = [{"index": 0, **tool_calls[0]}]
        else:
            delta["content"] = "Done."
        self._data({**chunk, "choices": [{"index": 0, "delta": delta, "finish_reason": None}]})
        self._data({**chunk, "choices": [{"index": 0, "delta": {}, "finish_reason": finish}]})
        if include_usage:
            self._data({**chunk, "choices": [], "usage": usage})
        self.wfile.write(b"data: [DONE]\n\n")

    # Responses ----------------------------------------------------------------------------

    def _responses(self, call: OpenAICall, tool: str) -> None:
        if tool:
            item: dict[str, Any] = {
                "type": "function_call",
                "id": f"fc_{call.response_id}",
                "call_id": f"call_{call.response_id}",
                "name": tool,
                "arguments": json.dumps({"city": "Paris"}),
                "status": "completed",
            }
        else:
            item = {
                "type": "message",
                "id": f"msg_{call.response_id}",
                "role": "assistant",
                "status": "completed",
                "content": [{"type": "output_text", "text": "Done.", "annotations": []}],
            }
        response = {
            "id": call.response_id,
            "object": "response",
            "created_at": int(time.time()),
            "status": "completed",
            "model": call.model,
            "output": [item],
            "parallel_tool_calls": True,
            "tool_choice": "auto",
            "tools": [],
            "usage": {
                "input_tokens": call.usage.input_tokens,
                "input_tokens_details": {"cached_tokens": call.usage.cached_tokens},
                "output_tokens": call.usage.output_tokens,
                "output_tokens_details": {"reasoning_tokens": call.usage.reasoning_tokens},
                "total_tokens": call.usage.input_tokens + call.usage.output_tokens,
            },
        }
        if not call.streamed:
            self._json(200, response)
            return
        self._start_stream()
        pending = {**response, "status": "in_progress", "output": [], "usage": None}
        events: list[dict[str, Any]] = [
            {"type": "response.created", "response": pending},
            {"type": "response.in_progress", "response": pending},
            {"type": "response.output_item.added", "output_index": 0, "item": item},
        ]
        if not tool:
            part = item["content"][0]
            events += [
                {
                    "type": "response.content_part.added",
                    "item_id": item["id"],
                    "output_index": 0,
                    "content_index": 0,
                    "part": {**part, "text": ""},
                },
                {
                    "type": "response.output_text.delta",
                    "item_id": item["id"],
                    "output_index": 0,
                    "content_index": 0,
                    "delta": part["text"],
                    "logprobs": [],
                },
                {
                    "type": "response.output_text.done",
                    "item_id": item["id"],
                    "output_index": 0,
                    "content_index": 0,
                    "text": part["text"],
                    "logprobs": [],
                },
                {
                    "type": "response.content_part.done",
                    "item_id": item["id"],
                    "output_index": 0,
                    "content_index": 0,
                    "part": part,
                },
            ]
        events += [
            {"type": "response.output_item.done", "output_index": 0, "item": item},
            {"type": "response.completed", "response": response},
        ]
        for number, event in enumerate(events):
            self._data({**event, "sequence_number": number}, event=event["type"])

    # Transport ----------------------------------------------------------------------------

    def _start_stream(self) -> None:
        self.send_response(200)
        self.send_header("content-type", "text/event-stream")
        self.end_headers()

    def _data(self, document: object, *, event: str | None = None) -> None:
        prefix = f"event: {event}\n" if event else ""
        self.wfile.write(f"{prefix}data: {json.dumps(document)}\n\n".encode())
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


def _error(message: str) -> dict[str, Any]:
    return {"error": {"message": message, "type": "invalid_request_error", "code": None}}


class FakeOpenAIAPI(ThreadingHTTPServer):
    """Answers with `usage_of_call`; `calls` lists every call in order."""

    daemon_threads = True

    def __init__(self) -> None:
        super().__init__(("127.0.0.1", 0), _Handler)
        self._lock = threading.Lock()
        self.calls: list[OpenAICall] = []

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}/v1"

    def next_call(self, api: str, model: str, streamed: bool, tool_call: bool) -> OpenAICall:
        with self._lock:
            n = len(self.calls) + 1
            prefix = "chatcmpl" if api == "chat" else "resp"
            call = OpenAICall(
                f"{prefix}-{n:04d}", api, model, usage_of_call(n), streamed, tool_call
            )
            self.calls.append(call)
            return call

    def clear(self) -> None:
        with self._lock:
            self.calls.clear()


@contextmanager
def fake_openai_api_serving() -> Iterator[FakeOpenAIAPI]:
    """A `FakeOpenAIAPI` serving from a thread of its own until the block ends."""
    provider = FakeOpenAIAPI()
    thread = threading.Thread(target=provider.serve_forever, args=(0.05,), daemon=True)
    thread.start()
    try:
        yield provider
    finally:
        provider.shutdown()
        provider.server_close()
        thread.join(timeout=10)
