"""Server-side paging of the dashboard's long lists (the customers, a period's invoices).

A list is shown `PAGE_SIZE` rows at a time in a stable order; its query parameter (`page`
unless a page shows two lists) asks for page N, counted from 1, and the Previous / Next
links keep the rest of the query (the search, the period, the other list's page).
A page number that is not a whole number from 1 is refused (422), as is one past the last
page (404); an empty list has one page, empty.
"""

from __future__ import annotations

from dataclasses import dataclass
from urllib.parse import urlencode

from starlette.datastructures import QueryParams

from billing_api.errors import NotFoundError, UnprocessableError

PAGE_SIZE = 50
# More digits than any list has pages; longer numbers are refused before int() reads them.
_MAX_DIGITS = 9


@dataclass(frozen=True)
class ListPage:
    """Page `number` of a list of `total` rows, `size` rows a page, with the links to the
    pages before and after it (None at either end)."""

    number: int
    size: int
    total: int
    previous_url: str | None
    next_url: str | None

    @property
    def offset(self) -> int:
        """How many rows come before this page."""
        return (self.number - 1) * self.size

    @property
    def first(self) -> int:
        """The position (from 1) of the page's first row; 0 on an empty list."""
        return self.offset + 1 if self.total else 0

    @property
    def last(self) -> int:
        """The position of the page's last row."""
        return min(self.offset + self.size, self.total)

    @property
    def pages(self) -> int:
        """How many pages the list has (one, empty, when it has no rows)."""
        return _page_count(self.total, self.size)


def page_number(raw: str | None, param: str) -> int:
    """The page a query parameter asks for: 1 when absent or empty; `UnprocessableError`
    unless it is a whole number from 1."""
    if not raw:
        return 1
    if not (raw.isascii() and raw.isdigit()) or len(raw) > _MAX_DIGITS or int(raw) < 1:
        raise UnprocessableError(f"{param}: a page number is a whole number from 1, not {raw!r}")
    return int(raw)


def list_page(
    path: str,
    query: QueryParams,
    total: int,
    *,
    noun: str,
    param: str = "page",
    size: int = PAGE_SIZE,
) -> ListPage:
    """The page of a `total`-row list that `query` asks for in `param`, linked to its
    neighbours at `path`; `NotFoundError` when it is past the last page, named by `noun`
    (e.g. "customers")."""
    number = page_number(query.get(param), param)
    pages = _page_count(total, size)
    if number > pages:
        raise NotFoundError(
            f"there is no page {number} of these {noun}: {total:,} fill {pages} "
            f"page{'s' if pages > 1 else ''}"
        )
    return ListPage(
        number,
        size,
        total,
        _url(path, query, param, number - 1) if number > 1 else None,
        _url(path, query, param, number + 1) if number < pages else None,
    )


def _page_count(total: int, size: int) -> int:
    return max(1, -(-total // size))


def _url(path: str, query: QueryParams, param: str, number: int) -> str:
    kept = [(k, v) for k, v in query.multi_items() if k != param]
    encoded = urlencode([*kept, (param, str(number))] if number > 1 else kept)
    return f"{path}?{encoded}" if encoded else path
