"""The server's signing secrets (portal links, CSRF cookies).

`AGENTMETER_SECRET_KEYS` lists them, newest last: the newest signs, every one verifies, so
a key is rotated by appending a new one, then dropping the old once its links have expired.
Without it, one secret is generated on first use and kept in the database, so every replica
sharing the database signs and verifies alike and links survive restarts.
"""

from __future__ import annotations

import secrets

from sqlalchemy import Engine, select
from sqlalchemy.orm import Session

from agentmeter.settings import Settings
from agentmeter.tables import ServerSecret


def signing_keys(engine: Engine, settings: Settings) -> list[str]:
    """The secrets, oldest first (itsdangerous signs with the last)."""
    configured = [key.strip() for key in settings.secret_keys.split(",") if key.strip()]
    if configured:
        return configured
    first = select(ServerSecret.secret).order_by(ServerSecret.id).limit(1)
    with Session(engine) as session, session.begin():
        if session.scalar(first) is None:
            session.add(ServerSecret(secret=secrets.token_urlsafe(48)))
    # Read again: of two replicas generating at once, both keep the first row.
    with Session(engine) as session:
        secret = session.scalar(first)
    assert secret is not None
    return [secret]
