"""The billing REST API (FastAPI).

One folder per domain, each with endpoints, service, repository and schemas.
"""
