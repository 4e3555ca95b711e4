"""The tenant's own settings: which span attributes name a customer."""
