"""The `agentmeter` command: wires the receiver, the store and the billing API together.

The only package that imports `billing_api`; nothing in the foundation imports it.
"""
