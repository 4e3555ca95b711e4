"""The overview page and the JSON its trend chart draws (static/js/charts.js)."""

from __future__ import annotations

from fastapi import APIRouter, Request
from fastapi.responses import HTMLResponse, JSONResponse, Response

from agentmeter.clock import utcnow
from agentmeter.money import from_minor
from billing_api.dashboard import overview
from billing_api.dashboard.http import PREFIX, DashboardRoute, StaffCaller, render
from billing_api.dashboard.paging import list_page
from billing_api.deps import DbSession

router = APIRouter(prefix=PREFIX, route_class=DashboardRoute, include_in_schema=False)


@router.get("/", response_class=HTMLResponse)
def overview_page(request: Request, session: DbSession, caller: StaffCaller) -> Response:
    """This period in total and per customer, flagged customers first, a page at a time
    (`?page=`); the trend chart loads from trend.json."""
    now = utcnow()
    figures = overview.overview(session, caller, now)
    listed = list_page(request.url.path, request.query_params, len(figures.order),
                       noun="customers")  # fmt: skip
    context = {
        "o": figures,
        "rows": figures.customers(listed.offset, listed.size),
        "listed": listed,
        "trend": figures.trend,
    }
    return render(
        request, caller, "overview.html", page="overview", title="Overview", context=context
    )


@router.get("/overview/trend.json")
def trend_json(session: DbSession, caller: StaffCaller) -> JSONResponse:
    """`{"days": [period labels], "series": [{"label", "values"}]}`: revenue, provider cost
    and margin per period and currency, in major units as decimal strings."""
    points = overview.trend(session, caller, utcnow())
    currencies = sorted({c for p in points for c in p.revenue_minor})
    series = []
    for currency in currencies:
        for label, attribute in (
            ("Revenue", "revenue_minor"),
            ("Provider cost", "provider_cost_minor"),
            ("Margin", "margin_minor"),
        ):
            values = [
                str(from_minor(getattr(p, attribute).get(currency, 0), currency)) for p in points
            ]
            series.append({"label": f"{label} ({currency})", "values": values})
    return JSONResponse({"days": [p.period for p in points], "series": series})
