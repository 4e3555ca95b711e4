"""The shared page layer of the portal and the dashboard.

One base template owns layout, assets and the security headers (`security`); pages get a
`<body>` class naming them so a brand's stylesheet can target them; CSRF is checked once by
middleware (`csrf`), not per form; static assets (our CSS and JS, and the vendored chart
library and htmx under `static/vendor/`, refreshed by `scripts/vendor_assets.sh`) are served
by the app itself; money, numbers and dates are formatted for a locale by one helper
(`formatting.LocaleFormat`). Audiences (`billing_api.portal`, later `billing_api.dashboard`)
add their templates and routes; they render through `Pages.render`.
"""

from billing_api.web.pages import PageError, Pages, install_pages

__all__ = ["PageError", "Pages", "install_pages"]
