"""The white-label customer portal: each customer sees its own usage and invoices under
the builder's brand, through a signed, revocable link (`sessions`), as pages (`pages`) and
as a small JSON API (`endpoints`), all reading through `service`."""
