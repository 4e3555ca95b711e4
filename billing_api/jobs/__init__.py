"""Background jobs: one durable queue with claim/lease, retries and a dead letter.

Enqueue with `billing_api.jobs.service.enqueue` in the transaction of the cause; register
handlers in `billing_api.jobs.kinds`; `billing_api.jobs.worker` runs them (its docstring
is the protocol).
"""
