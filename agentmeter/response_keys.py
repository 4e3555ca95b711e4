"""How the usage store keeps a provider's response id: a short fixed-length key.

The once-per-call rule (`exporter.provider_calls`) only ever compares response ids for
equality, within one tenant, provider and meter. A key of 80 bits of the id's SHA-256, in
hex, compares the same way, is the same on every receiver and in SQL (PostgreSQL:
`left(encode(sha256(convert_to(id, 'UTF8')), 'hex'), 20)`), and stores 20 characters
where OpenAI's ids take 38 and others more, in every record and its index entry. Two
different calls of one tenant, provider and meter share a key with probability ~4·10^-5
after 10^10 calls (birthday bound).
"""

from __future__ import annotations

import hashlib

RESPONSE_KEY_LENGTH = 20


def response_key(response_id: str) -> str:
    """The stored key of a response id ("" for none)."""
    if not response_id:
        return ""
    return hashlib.sha256(response_id.encode()).hexdigest()[:RESPONSE_KEY_LENGTH]
