"""Staff accounts of the dashboard: the service on both backends, sign-in in the browser.

Sign-in works for an enabled user with the right password only; failures are throttled
per address; sessions end when idle, at their absolute end, at sign-out and when the user
is disabled; only admins list and disable users, and the server refuses forged requests.
"""

from __future__ import annotations

import subprocess
import sys
from datetime import timedelta

import pytest
from playwright.sync_api import Page, expect
from sqlalchemy import Engine, select
from sqlalchemy.orm import Session

from agentmeter.clock import utcnow
from agentmeter.tables import StaffUser
from agentmeter.tenants import create_tenant
from billing_api.auth import Role
from billing_api.dashboard import accounts
from billing_api.dashboard.accounts import SessionPolicy, ThrottledError
from billing_api.errors import ConflictError, ForbiddenError, UnprocessableError
from tests.web.conftest import LiveApp, screenshot
from tests.web.dashboard_helpers import PASSWORD, browser_client, csrf, make_staff, sign_in

POLICY = SessionPolicy(idle=timedelta(minutes=30), absolute=timedelta(hours=12))


class TestAccounts:
    def test_password_is_hashed_with_argon2id_and_email_folded(self, engine: Engine) -> None:
        tenant = create_tenant(engine, "T")
        with Session(engine) as session, session.begin():
            user = accounts.create_user(
                session, tenant.tenant_id, " Amy@X.test ", PASSWORD, "billing"
            )
        assert (user.email, user.role) == ("amy@x.test", Role.BILLING)
        with Session(engine) as session:
            stored = session.scalars(select(StaffUser.password_hash)).one()
        assert stored.startswith("$argon2id$") and PASSWORD not in stored

    @pytest.mark.parametrize(
        ("email", "password", "role", "error"),
        [
            pytest.param("not-an-address", PASSWORD, "admin", UnprocessableError, id="email"),
            pytest.param("a@x.test", "short", "admin", UnprocessableError, id="short password"),
            pytest.param("a@x.test", PASSWORD, "customer", UnprocessableError, id="role"),
        ],
    )
    def test_bad_input_is_refused(
        self, engine: Engine, email: str, password: str, role: str, error: type[Exception]
    ) -> None:
        tenant = create_tenant(engine, "T")
        with Session(engine) as session, pytest.raises(error):
            accounts.create_user(session, tenant.tenant_id, email, password, role)

    def test_email_is_unique_per_tenant_only(self, engine: Engine) -> None:
        first, second = create_tenant(engine, "A"), create_tenant(engine, "B")
        with Session(engine) as session, session.begin():
            accounts.create_user(session, first.tenant_id, "a@x.test", PASSWORD, "admin")
            accounts.create_user(session, second.tenant_id, "a@x.test", PASSWORD, "admin")
        with Session(engine) as session, pytest.raises(ConflictError):
            accounts.create_user(session, first.tenant_id, "A@x.test", PASSWORD, "viewer")

    def test_sessions_expire_idle_and_absolute(self, engine: Engine) -> None:
        staff = make_staff(engine)
        now = utcnow()
        with Session(engine) as session, session.begin():
            token = accounts.sign_in(session, staff.viewer, PASSWORD, POLICY, now)
        assert token is not None
        with Session(engine) as session, session.begin():
            # Used every 29 minutes it stays alive, up to its absolute end.
            at = now
            while at + timedelta(minutes=29) < now + POLICY.absolute:
                at += timedelta(minutes=29)
                caller = accounts.resolve_session(session, token, POLICY, at)
                assert caller is not None and caller.role is Role.VIEWER
            assert accounts.resolve_session(session, token, POLICY, now + POLICY.absolute) is None
        with Session(engine) as session, session.begin():
            token = accounts.sign_in(session, staff.viewer, PASSWORD, POLICY, now)
            assert token is not None
            idle = now + POLICY.idle + timedelta(seconds=1)
            assert accounts.resolve_session(session, token, POLICY, idle) is None

    def test_failures_are_throttled_per_address(self, engine: Engine) -> None:
        staff = make_staff(engine)
        now = utcnow()
        for _ in range(accounts.MAX_FAILURES):
            with Session(engine) as session, session.begin():
                assert accounts.sign_in(session, staff.admin, "wrong" * 3, POLICY, now) is None
        with Session(engine) as session, pytest.raises(ThrottledError):
            accounts.sign_in(session, staff.admin, PASSWORD, POLICY, now)  # even the right one
        with Session(engine) as session, session.begin():
            assert accounts.sign_in(session, staff.billing, PASSWORD, POLICY, now) is not None
            later = now + accounts.FAILURE_WINDOW + timedelta(seconds=1)
            assert accounts.sign_in(session, staff.admin, PASSWORD, POLICY, later) is not None

    def test_only_admins_disable_and_disabling_ends_sessions(self, engine: Engine) -> None:
        staff = make_staff(engine)
        now = utcnow()
        with Session(engine) as session, session.begin():
            token = accounts.sign_in(session, staff.billing, PASSWORD, POLICY, now)
            admin_token = accounts.sign_in(session, staff.admin, PASSWORD, POLICY, now)
            assert token and admin_token
            billing = accounts.resolve_session(session, token, POLICY, now)
            admin = accounts.resolve_session(session, admin_token, POLICY, now)
            assert billing and admin
        with Session(engine) as session, pytest.raises(ForbiddenError):
            accounts.list_users(session, billing)
        with Session(engine) as session, session.begin():
            users = {u.email: u for u in accounts.list_users(session, admin)}
            with pytest.raises(ConflictError):
                accounts.set_disabled(session, admin, users[staff.admin].id, True, now)
            accounts.set_disabled(session, admin, users[staff.billing].id, True, now)
        with Session(engine) as session, session.begin():
            assert accounts.resolve_session(session, token, POLICY, now) is None
            assert accounts.sign_in(session, staff.billing, PASSWORD, POLICY, now) is None


def test_cli_creates_a_user_reading_the_password_from_stdin(
    engine: Engine, database_url: str
) -> None:
    tenant = create_tenant(engine, "T")
    command = [sys.executable, "-m", "agentmeter", "user", "create", "ops@x.test",
               "--tenant", tenant.tenant_id, "--role", "billing"]  # fmt: skip
    env = {"AGENTMETER_DATABASE_URL": database_url, "PATH": "/usr/bin:/bin"}
    done = subprocess.run(command, input=PASSWORD + "\n", env=env, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    assert PASSWORD not in done.stdout
    with Session(engine) as session, session.begin():
        assert accounts.sign_in(session, "ops@x.test", PASSWORD, POLICY, utcnow()) is not None


class TestSignInPages:
    def test_sign_in_and_out(
        self, live_app: LiveApp, page: Page, request: pytest.FixtureRequest
    ) -> None:
        staff = make_staff(live_app.engine)
        page.goto(f"{live_app.url}/dashboard/customers")
        expect(page).to_have_url(f"{live_app.url}/dashboard/login?next=/dashboard/customers")
        screenshot(page, request, "login")
        cookie_names = set()
        page.get_by_label("E-mail").fill(staff.admin)
        page.get_by_label("Password").fill(PASSWORD)
        page.get_by_role("button", name="Sign in").click()
        expect(page.locator("body.dashboard-customers")).to_be_visible()
        for cookie in page.context.cookies():
            cookie_names.add(cookie["name"])
            if cookie["name"] == "agentmeter_dashboard":
                assert cookie["httpOnly"] and cookie["sameSite"] == "Lax"
        assert "agentmeter_dashboard" in cookie_names
        page.get_by_role("button", name="Sign out").click()
        expect(page.locator("body.dashboard-login")).to_be_visible()
        page.goto(f"{live_app.url}/dashboard/")
        expect(page.locator("body.dashboard-login")).to_be_visible()

    @pytest.mark.parametrize("case", ["wrong password", "disabled user", "unknown user"])
    def test_refused(
        self, live_app: LiveApp, page: Page, case: str, request: pytest.FixtureRequest
    ) -> None:
        staff = make_staff(live_app.engine)
        email, password = staff.viewer, PASSWORD
        if case == "wrong password":
            password = "not the password"
        elif case == "unknown user":
            email = "nobody@builder.test"
        else:
            with Session(live_app.engine) as session, session.begin():
                user = session.scalars(select(StaffUser).where(StaffUser.email == email)).one()
                user.disabled_at = utcnow()
        page.goto(f"{live_app.url}/dashboard/login")
        page.get_by_label("E-mail").fill(email)
        page.get_by_label("Password").fill(password)
        with page.expect_response(lambda r: r.request.method == "POST") as answer:
            page.get_by_role("button", name="Sign in").click()
        assert answer.value.status == 401
        expect(page.get_by_role("alert")).to_contain_text("Wrong e-mail or password")
        assert "agentmeter_dashboard" not in {c["name"] for c in page.context.cookies()}
        screenshot(page, request, "refused")

    def test_throttled_after_repeated_failures(self, live_app: LiveApp, page: Page) -> None:
        staff = make_staff(live_app.engine)
        page.goto(f"{live_app.url}/dashboard/login")
        for _ in range(accounts.MAX_FAILURES):
            page.get_by_label("E-mail").fill(staff.admin)
            page.get_by_label("Password").fill("wrong password!")
            page.get_by_role("button", name="Sign in").click()
            expect(page.get_by_role("alert")).to_contain_text("Wrong e-mail or password")
        page.get_by_label("E-mail").fill(staff.admin)
        page.get_by_label("Password").fill(PASSWORD)
        page.get_by_role("button", name="Sign in").click()
        expect(page.get_by_role("alert")).to_contain_text("too many failed sign-ins")

    def test_admin_disables_a_user_viewer_cannot(
        self, live_app: LiveApp, page: Page, request: pytest.FixtureRequest
    ) -> None:
        staff = make_staff(live_app.engine)
        sign_in(page, live_app.url, staff.admin)
        page.get_by_role("link", name="Users").click()
        screenshot(page, request, "users")
        page.get_by_role("button", name=f"Disable {staff.viewer}").click()
        row = page.get_by_role("row").filter(has_text=staff.viewer)
        expect(row).to_contain_text("disabled")

        viewer_page = page.context.browser.new_context().new_page()  # type: ignore[union-attr]
        try:
            viewer_page.goto(f"{live_app.url}/dashboard/login")
            viewer_page.get_by_label("E-mail").fill(staff.billing)
            viewer_page.get_by_label("Password").fill(PASSWORD)
            viewer_page.get_by_role("button", name="Sign in").click()
            expect(viewer_page.locator("body.dashboard-overview")).to_be_visible()
            expect(viewer_page.get_by_role("link", name="Users")).to_have_count(0)
            with browser_client(viewer_page, live_app.url) as client:
                assert client.get("/dashboard/users").status_code == 403
                with Session(live_app.engine) as session:
                    admin_id = session.scalars(
                        select(StaffUser.id).where(StaffUser.email == staff.admin)
                    ).one()
                forged = client.post(f"/dashboard/users/{admin_id}/disable", data=csrf(client))
                assert forged.status_code == 403, forged.text
        finally:
            viewer_page.context.close()
        with Session(live_app.engine) as session:
            admin = session.scalars(select(StaffUser).where(StaffUser.email == staff.admin)).one()
            assert admin.disabled_at is None

    def test_posts_without_csrf_token_are_refused(self, live_app: LiveApp, page: Page) -> None:
        staff = make_staff(live_app.engine)
        sign_in(page, live_app.url, staff.admin)
        with browser_client(page, live_app.url) as client, Session(live_app.engine) as session:
            viewer_id = session.scalars(
                select(StaffUser.id).where(StaffUser.email == staff.viewer)
            ).one()
            refused = client.post(f"/dashboard/users/{viewer_id}/disable", data={})
            assert refused.status_code == 403
            login = client.post(
                "/dashboard/login", data={"email": staff.admin, "password": PASSWORD}
            )
            assert login.status_code == 403
        with Session(live_app.engine) as session:
            viewer = session.get(StaffUser, viewer_id)
            assert viewer is not None and viewer.disabled_at is None
