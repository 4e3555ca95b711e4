"""`agentmeter user set-password`: rotate a dashboard password from the command line, the
password read from stdin, never an argument."""

from __future__ import annotations

import subprocess
import sys
from datetime import timedelta

from sqlalchemy import Engine
from sqlalchemy.orm import Session

from agentmeter.clock import utcnow
from agentmeter.tenants import create_tenant
from billing_api.dashboard import accounts
from billing_api.dashboard.accounts import SessionPolicy

OLD, NEW = "correct horse battery", "staple onion lantern"
POLICY = SessionPolicy(idle=timedelta(minutes=30), absolute=timedelta(hours=12))


def set_password(
    database_url: str, tenant_id: str, email: str, password: str
) -> subprocess.CompletedProcess[str]:
    command = [sys.executable, "-m", "agentmeter", "user", "set-password", email,
               "--tenant", tenant_id]  # fmt: skip
    env = {"AGENTMETER_DATABASE_URL": database_url, "PATH": "/usr/bin:/bin"}
    return subprocess.run(command, input=password + "\n", env=env, capture_output=True, text=True)


def test_new_password_works_the_old_one_and_its_sessions_end(
    engine: Engine, database_url: str
) -> None:
    tenant = create_tenant(engine, "T")
    with Session(engine) as session, session.begin():
        accounts.create_user(session, tenant.tenant_id, "ops@x.test", OLD, "admin")
    with Session(engine) as session, session.begin():
        token = accounts.sign_in(session, "ops@x.test", OLD, POLICY, utcnow())
    assert token is not None

    done = set_password(database_url, tenant.tenant_id, "ops@x.test", NEW)

    assert done.returncode == 0, done.stderr
    assert NEW not in done.stdout + done.stderr
    with Session(engine) as session, session.begin():
        assert accounts.resolve_session(session, token, POLICY, utcnow()) is None
        assert accounts.sign_in(session, "ops@x.test", OLD, POLICY, utcnow()) is None
        assert accounts.sign_in(session, "ops@x.test", NEW, POLICY, utcnow()) is not None


def test_unknown_user_and_short_password_are_refused(engine: Engine, database_url: str) -> None:
    tenant = create_tenant(engine, "T")
    with Session(engine) as session, session.begin():
        accounts.create_user(session, tenant.tenant_id, "ops@x.test", OLD, "admin")

    unknown = set_password(database_url, tenant.tenant_id, "nobody@x.test", NEW)
    short = set_password(database_url, tenant.tenant_id, "ops@x.test", "short")

    assert unknown.returncode == 1 and "no user" in unknown.stderr
    assert short.returncode == 2 and "at least" in short.stderr
    with Session(engine) as session, session.begin():
        assert accounts.sign_in(session, "ops@x.test", OLD, POLICY, utcnow()) is not None
