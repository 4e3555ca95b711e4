"""Form input checked by the same Pydantic schemas the REST API checks JSON with, so a page
accepts exactly what the API accepts; refusals come back per field for the template to
show next to the input."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any, TypeVar

from pydantic import BaseModel, ValidationError

Model = TypeVar("Model", bound=BaseModel)

FieldErrors = dict[str, str]
"""Field name ("amount", "components.0.unit_price") → message; "" for the whole form."""


def field_errors(error: ValidationError, fields: Iterable[str] = ()) -> FieldErrors:
    """Pydantic's errors keyed by dotted field path, first message per field. A check of
    the whole model whose message starts with one of `fields` ("amount in USD has at most
    2 decimal places") belongs next to that field."""
    found: FieldErrors = {}
    names = set(fields)
    for problem in error.errors():
        path = ".".join(str(part) for part in problem["loc"])
        message = str(problem["msg"]).removeprefix("Value error, ")
        if not path and message.split(" ", 1)[0] in names:
            path = message.split(" ", 1)[0]
        found.setdefault(path, message)
    return found


def parse(schema: type[Model], data: Mapping[str, Any]) -> tuple[Model | None, FieldErrors]:
    """`schema` from form data with empty fields left out (so defaults apply), or the
    errors per field."""
    values = {k: v for k, v in data.items() if v not in ("", None)}
    try:
        return schema.model_validate(values), {}
    except ValidationError as error:
        return None, field_errors(error, schema.model_fields)
