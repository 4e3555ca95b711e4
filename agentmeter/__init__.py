"""Shared foundation of AgentMeter: settings, database tables, migrations, money, keys.

`exporter/` and `billing_api/` both import the foundation; the foundation imports nothing
above it. The `agentmeter` command lives in `agentmeter.command` and is the only code that
imports `billing_api` (`tests/test_layering.py` enforces both rules).
"""
