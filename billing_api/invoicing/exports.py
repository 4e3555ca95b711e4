"""Invoice exports in the customer's view: JSON, CSV of lines, printable HTML under the
builder's brand. Provider cost and margin never appear in any of them."""

from __future__ import annotations

import csv
import io
import re

from jinja2 import Environment, PackageLoader, select_autoescape

from agentmeter.tables import Tenant
from billing_api.invoicing.schemas import CustomerInvoiceOut
from billing_api.invoicing.views import InvoiceView

_TEMPLATES = Environment(
    loader=PackageLoader("billing_api.invoicing", "templates"),
    autoescape=select_autoescape(["html"]),
)
CSV_COLUMNS = (
    "invoice",
    "period",
    "line",
    "kind",
    "description",
    "meter",
    "quantity",
    "unit_price",
    "per_units",
    "amount",
    "currency",
)


def as_json(invoice: InvoiceView) -> CustomerInvoiceOut:
    """The invoice as the customer's JSON document."""
    return CustomerInvoiceOut.of(invoice)


# Formula injection (OWASP "CSV Injection"): a spreadsheet runs a cell that starts with one
# of these. Such text cells get a leading single quote, shown as text. Plain numbers, such
# as the negative amount of a discount, stay numbers: "-5.00" cannot be a formula.
_FORMULA_START = ("=", "+", "-", "@", "\t", "\r")
_PLAIN_NUMBER = re.compile(r"-?[0-9]+(\.[0-9]+)?")


def spreadsheet_safe(cell: object) -> str:
    """`cell` as CSV text that no spreadsheet evaluates as a formula."""
    text = str(cell)
    if text.startswith(_FORMULA_START) and not _PLAIN_NUMBER.fullmatch(text):
        return "'" + text
    return text


def as_csv(invoice: InvoiceView) -> str:
    """The customer's invoice lines as CSV, every cell made safe for spreadsheets."""
    view = CustomerInvoiceOut.of(invoice)
    out = io.StringIO()
    writer = csv.writer(out)
    writer.writerow(CSV_COLUMNS)
    for position, line in enumerate(view.lines, start=1):
        row = (
            view.number or view.id,
            view.period,
            position,
            line.kind,
            line.description,
            line.meter or "",
            line.quantity,
            line.unit_price or "",
            line.per_units,
            line.amount,
            view.currency,
        )
        writer.writerow([spreadsheet_safe(cell) for cell in row])
    return out.getvalue()


def as_html(invoice: InvoiceView, tenant: Tenant, customer_name: str) -> str:
    """The printable invoice page under the tenant's brand."""
    view = CustomerInvoiceOut.of(invoice)
    brand = tenant.brand_name or tenant.name
    return _TEMPLATES.get_template("invoice.html").render(
        title=f"{brand} invoice {view.number or '(draft)'}",
        invoice=view,
        brand_name=brand,
        brand_color=tenant.brand_color or "#3b5bdb",
        logo_url=tenant.brand_logo_url,
        customer_name=customer_name,
    )
