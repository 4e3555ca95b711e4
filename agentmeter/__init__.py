"""Shared foundation of AgentMeter: settings, database tables, migrations, and the command.

`exporter/` and `billing_api/` both import the settings and tables from here; only the
`agentmeter` command (`agentmeter.cli`) imports `billing_api`.
"""
