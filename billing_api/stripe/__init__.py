"""Stripe Connect: account connection, the push outbox, webhook intake. The only package
that imports `stripe`."""
