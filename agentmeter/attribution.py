"""Where a span's customer id is read when a tenant has not said otherwise.

A tenant's `customer_attribute_keys` start as these (`agentmeter.tenants.create_tenant`) and
the receiver falls back to them (`otel_processor.conventions` re-exports them beside the
other attribute names). Span attribute first, then resource attribute, for each key in
order (DESIGN.md, "Customer attribution").
"""

DEFAULT_CUSTOMER_KEYS = ("agentmeter.customer.id", "customer.id")
