"""Rendering pages: one Jinja environment over the page layer's and each audience's
templates, the response headers of `security`, and the HTML error page."""

from __future__ import annotations

import hashlib
from collections.abc import Mapping, Sequence
from functools import cache
from importlib.resources import files
from typing import Any

from fastapi import FastAPI, Request
from fastapi.responses import HTMLResponse
from fastapi.staticfiles import StaticFiles
from jinja2 import ChoiceLoader, Environment, PackageLoader, StrictUndefined, select_autoescape

from billing_api.web.csrf import CsrfMiddleware, csrf_token
from billing_api.web.formatting import LocaleFormat
from billing_api.web.security import PageSecurityHeaders, page_headers

STATIC_PACKAGE = "billing_api.web"
STATIC_URL = "/static"


@cache
def _asset_version(path: str) -> str:
    """A content hash for cache busting: `?v=` changes when the file does."""
    data = files(STATIC_PACKAGE).joinpath("static", path).read_bytes()
    return hashlib.sha256(data).hexdigest()[:12]


def static_url(path: str) -> str:
    """The URL of a file under `billing_api/web/static/`, versioned by its content."""
    return f"{STATIC_URL}/{path}?v={_asset_version(path)}"


class PageError(Exception):
    """A page that cannot be shown: rendered as the error page with `status`, no data."""

    def __init__(self, status: int, title: str, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.title = title
        self.message = message


class Pages:
    """Templates of the page layer (`billing_api.web`) and of the given audience packages,
    each with a `templates/` folder (`billing_api.portal` → `portal/…` names)."""

    def __init__(self, packages: Sequence[str]) -> None:
        self.environment = Environment(
            loader=ChoiceLoader(
                [PackageLoader(package, "templates") for package in (STATIC_PACKAGE, *packages)]
            ),
            autoescape=select_autoescape(default=True),
            undefined=StrictUndefined,
            trim_blocks=True,
            lstrip_blocks=True,
        )
        self.environment.globals["static_url"] = static_url

    def render(
        self,
        request: Request,
        template: str,
        *,
        body_class: str,
        title: str,
        fmt: LocaleFormat,
        context: Mapping[str, Any],
        status: int = 200,
        frame_ancestors: Sequence[str] = (),
    ) -> HTMLResponse:
        """`template` as a full page. `body_class` names the page ("portal portal-usage")
        for brand stylesheets; `fmt` formats figures; `frame_ancestors` may embed it."""
        html = self.environment.get_template(template).render(
            request=request,
            body_class=body_class,
            title=title,
            fmt=fmt,
            csrf_token=lambda: csrf_token(request),
            **context,
        )
        response = HTMLResponse(html, status_code=status)
        response.headers.update(page_headers(frame_ancestors))
        return response

    def error(
        self, request: Request, error: PageError, context: Mapping[str, Any] | None = None
    ) -> HTMLResponse:
        """The error page: a title and a sentence, nothing of anyone's data."""
        return self.render(
            request,
            "error.html",
            body_class=f"error error-{error.status}",
            title=error.title,
            fmt=LocaleFormat(),
            context={"message": error.message, "status": error.status, **(context or {})},
            status=error.status,
        )


def install_pages(
    app: FastAPI, packages: Sequence[str], secrets: Sequence[str], *, secure: bool
) -> Pages:
    """Serve `/static`, add the page security headers and CSRF middleware, render
    `PageError` as the error page; `app.state.pages` is the returned renderer."""
    pages = Pages(packages)
    app.state.pages = pages
    app.mount(STATIC_URL, StaticFiles(packages=[(STATIC_PACKAGE, "static")]), name="static")
    app.add_middleware(CsrfMiddleware, secrets=secrets, secure=secure)
    app.add_middleware(PageSecurityHeaders)

    @app.exception_handler(PageError)
    async def _page_error(request: Request, error: PageError) -> HTMLResponse:
        return pages.error(request, error)

    return pages
