"""Request guards that apply to every route, so no endpoint can forget them."""

from __future__ import annotations

import json

from fastapi import Request

from billing_api.errors import UnprocessableError


async def require_encodable_json(request: Request) -> None:
    """Refuse a JSON body whose strings cannot be stored: JSON may spell a lone UTF-16
    surrogate (`"\\ud800"`), which Python decodes but no database encodes.

    A body that is not JSON at all is left to the endpoint's own validation.
    """
    if "json" not in request.headers.get("content-type", ""):
        return
    body = await request.body()
    if b"\\u" not in body:
        return  # only an escape can spell a surrogate; UTF-8 bytes cannot
    try:
        value = json.loads(body)
    except ValueError:
        return
    try:
        json.dumps(value, ensure_ascii=False).encode()
    except UnicodeEncodeError:
        raise UnprocessableError(
            "body: strings must be valid Unicode text (a lone surrogate escape such as "
            "\\ud800 is not)"
        ) from None
