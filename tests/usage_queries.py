"""Reading usage back from a running `agentmeter serve`: `GET /api/v1/usage`, and the
`usage_records` table itself."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import httpx
from sqlalchemy import Engine, func, select

from agentmeter.tables import UsageRow
from tests.conftest import RunningServer

# Rows of the usage API keyed by their dimensions, valued by the quantity string.
UsageTable = dict[tuple[str, ...], str]


def usage_response(
    server: RunningServer,
    params: Mapping[str, str | Sequence[str]] | None = None,
    headers: Mapping[str, str] | None = None,
) -> httpx.Response:
    """`GET /api/v1/usage`, with the tenant's admin key unless `headers` are given."""
    return httpx.get(
        f"{server.api_url}/api/v1/usage",
        params=params,
        headers=server.admin_headers if headers is None else headers,
        timeout=30,
    )


def usage_rows(server: RunningServer, **params: str) -> list[dict[str, str]]:
    response = usage_response(server, params)
    assert response.status_code == 200, response.text
    rows: list[dict[str, str]] = response.json()["rows"]
    return rows


def usage_table(server: RunningServer, *dims: str, **params: str) -> UsageTable:
    """`{(customer_id, meter, *dims): quantity}`, asking the API to group by `dims`."""
    if dims:
        params["group_by"] = ",".join(dims)
    table: UsageTable = {}
    for row in usage_rows(server, **params):
        assert set(row) == {"customer_id", "meter", *dims, "quantity"}, row
        key = (row["customer_id"], row["meter"], *(row[d] for d in dims))
        assert key not in table, f"two rows for {key}"
        table[key] = row["quantity"]
    return table


def stored_row_count(engine: Engine) -> int:
    """How many rows the `usage_records` table holds, of every tenant."""
    with engine.connect() as connection:
        count: int = connection.execute(select(func.count()).select_from(UsageRow)).scalar_one()
        return count
