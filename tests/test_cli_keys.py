"""`agentmeter key issue` then `agentmeter key revoke`: rotating a tenant's keys as
docs/security.md describes, as subprocesses on each backend."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from sqlalchemy import Engine

from agentmeter.tenants import KeyKind, create_tenant, key_owner

AGENTMETER = Path(sys.executable).with_name("agentmeter")


def agentmeter(database_url: str, *args: str, stdin: str = "") -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "AGENTMETER_DATABASE_URL": database_url}
    return subprocess.run(
        [str(AGENTMETER), *args], env=env, input=stdin, capture_output=True, text=True,
        timeout=120, check=False,
    )  # fmt: skip


def test_rotate_admin_and_ingest_keys(engine: Engine, database_url: str) -> None:
    old = create_tenant(engine, "builder")
    issued = agentmeter(database_url, "key", "issue", "--tenant", old.tenant_id)
    assert issued.returncode == 0, issued.stderr
    new = json.loads(issued.stdout)
    assert new["tenant_id"] == old.tenant_id
    for key, kind in ((new["admin_key"], KeyKind.ADMIN), (new["ingest_key"], KeyKind.INGEST)):
        found = key_owner(engine, key, kind)
        assert found is not None and found.tenant_id == old.tenant_id
    for key in (old.admin_key, old.ingest_key):
        revoked = agentmeter(database_url, "key", "revoke", stdin=key + "\n")
        assert revoked.returncode == 0, revoked.stderr
    assert key_owner(engine, old.admin_key, KeyKind.ADMIN) is None
    assert key_owner(engine, old.ingest_key, KeyKind.INGEST) is None
    assert key_owner(engine, new["admin_key"], KeyKind.ADMIN) is not None
    unknown = agentmeter(database_url, "key", "issue", "--tenant", "nope")
    assert unknown.returncode == 2 and "no tenant" in unknown.stderr
