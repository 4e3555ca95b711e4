"""`agentmeter serve --demo` says where the demo tenant's invoices go on Stripe."""

from __future__ import annotations

import json

import pytest
from sqlalchemy import Engine
from sqlalchemy.orm import Session

from agentmeter.command.demo import seed_demo
from agentmeter.tables import StripeAccount


def test_the_demo_line_shows_the_stripe_connection(
    engine: Engine, capsys: pytest.CaptureFixture[str]
) -> None:
    seed_demo(engine)
    first = json.loads(capsys.readouterr().out)
    assert first["stripe"] == "not_connected"
    with Session(engine) as session, session.begin():
        session.add(
            StripeAccount(
                tenant_id=first["tenant_id"], account_id="acct_1Demo", connected_via="api"
            )
        )
    seed_demo(engine)
    assert json.loads(capsys.readouterr().out)["stripe"] == "acct_1Demo"
