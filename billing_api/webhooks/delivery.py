"""Sending the webhook outbox: signed POSTs, retried with exponential backoff.

Each event is POSTed as JSON `{"id", "type", "created_at", "data"}` to the tenant's URL
with the header

    AgentMeter-Signature: t=<unix seconds>,v1=<hex HMAC-SHA256>

where the HMAC key is the tenant's signing secret (the whole `whsec_…` string, UTF-8) and
the message is `f"{t}.".encode() + body`, body being the exact bytes received. This is
Stripe's scheme. To verify a delivery, a receiver:

1. reads the raw body before parsing it (re-serialized JSON will not match),
2. splits the header on "," into `key=value` pairs, takes `t` and every `v1`,
3. computes `hmac.new(secret.encode(), f"{t}.".encode() + body, hashlib.sha256).hexdigest()`
   and compares it with each `v1` using `hmac.compare_digest`,
4. rejects the delivery if none matches, or if `t` is more than 5 minutes from its own
   clock (a replayed request),
5. answers 2xx quickly and deduplicates by the event `id`: delivery is at least once.

`verify_signature` below does steps 2 to 4. The outcome recorded (`last_error`, which the
tenant reads) is the status code and its standard phrase or a short reason; the reply's body
is never read. Any 2xx answer marks the delivery delivered;
anything else (an error status, a timeout, a refused connection, an address that is not
public: see `targets`) schedules a retry after
30 s, 1 min, 2 min, … (capped at 6 h); after `max_attempts` the delivery is "failed".

Claims (`billing_api.jobs.leasing`, the claim/lease and backoff every background queue
shares): a worker takes a due delivery with a compare-and-set UPDATE that also pushes its
next attempt time past a lease, commits, and only then sends; the outcome is written in a
second short transaction. No transaction is open during the HTTP call, two workers never
send one attempt twice, and a delivery claimed by a worker that died is retried once its
lease runs out.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import logging
import time
from dataclasses import dataclass
from datetime import datetime, timedelta
from http import HTTPStatus
from typing import Any

import httpx
from sqlalchemy import Engine
from sqlalchemy.orm import Session

from agentmeter.clock import utcnow
from agentmeter.settings import Settings
from billing_api.jobs.leasing import retry_delay as retry_delay  # the schedule, re-exported
from billing_api.webhooks import repository, targets

logger = logging.getLogger("agentmeter.webhooks")

SIGNATURE_HEADER = "AgentMeter-Signature"
SIGNATURE_TOLERANCE_SECONDS = 300
MAX_ATTEMPTS = 10
TIMEOUT_SECONDS = 5.0
# Longer than a batch of sends can take (BATCH_SIZE × TIMEOUT_SECONDS), so a live worker's
# claim never lapses before it records the outcome.
LEASE = timedelta(minutes=5)
BATCH_SIZE = 20
USER_AGENT = "AgentMeter-Webhooks/1"
# `last_error` is shown to the tenant: a status or a short reason, never the reply's body.
ERROR_LENGTH = 200


def signature(secret: str, body: bytes, timestamp: int) -> str:
    """The `AgentMeter-Signature` header value for `body` sent at `timestamp`."""
    digest = hmac.new(secret.encode(), f"{timestamp}.".encode() + body, hashlib.sha256)
    return f"t={timestamp},v1={digest.hexdigest()}"


def verify_signature(
    secret: str,
    body: bytes,
    header: str,
    *,
    now: float | None = None,
    tolerance_seconds: int = SIGNATURE_TOLERANCE_SECONDS,
) -> bool:
    """True if `header` signs `body` with `secret` within `tolerance_seconds` of `now`."""
    timestamp: int | None = None
    candidates: list[str] = []
    for item in header.split(","):
        key, _, value = item.strip().partition("=")
        if key == "t" and value.isdigit():
            timestamp = int(value)
        elif key == "v1":
            candidates.append(value)
    if timestamp is None or not candidates:
        return False
    current = time.time() if now is None else now
    if abs(current - timestamp) > tolerance_seconds:
        return False
    expected = signature(secret, body, timestamp).rpartition("v1=")[2]
    return any(hmac.compare_digest(expected, candidate) for candidate in candidates)


def encode_body(payload: dict[str, Any]) -> bytes:
    """The exact bytes POSTed (and signed) for an event."""
    return json.dumps(payload, separators=(",", ":"), ensure_ascii=False).encode()


@dataclass(slots=True)
class DeliveryReport:
    """What one `deliver_due` pass did."""

    delivered: int = 0
    retrying: int = 0
    failed: int = 0
    skipped: int = 0


@dataclass(frozen=True, slots=True)
class _Claim:
    id: str
    attempts: int  # including the one now claimed
    url: str
    secret: str
    payload: dict[str, Any]


def deliver_due(
    engine: Engine,
    now: datetime | None = None,
    *,
    allow_private: bool | None = None,
    max_attempts: int = MAX_ATTEMPTS,
    limit: int = 1000,
) -> DeliveryReport:
    """Send every delivery due at `now` (at most `limit`), in batches; return the counts.

    A job boundary: opens and commits its own short transactions. Blocking; run it in a
    worker thread from async code. The signature's `t` is the wall clock at sending.
    Deliveries go only to public addresses (`targets`) unless `allow_private` (default:
    the `webhook_allow_private` setting).
    """
    now = now or utcnow()
    if allow_private is None:
        allow_private = Settings().webhook_allow_private
    report = DeliveryReport()
    http = httpx.Client(
        transport=targets.PinnedTransport(allow_private=allow_private),
        timeout=TIMEOUT_SECONDS,
        follow_redirects=False,
        trust_env=False,  # no proxy from the environment: connect to the checked address
        headers={"user-agent": USER_AGENT},
    )
    try:
        handled = 0
        while handled < limit:
            size = min(BATCH_SIZE, limit - handled)
            seen, claims = _claim_batch(engine, now, size, max_attempts, report)
            if not seen:
                break
            handled += seen
            for claim in claims:
                error = _send(http, claim)
                _record(engine, claim, error, now, max_attempts, report)
    finally:
        http.close()
    return report


def _claim_batch(
    engine: Engine, now: datetime, size: int, max_attempts: int, report: DeliveryReport
) -> tuple[int, list[_Claim]]:
    """Claim up to `size` due deliveries: how many were due, and the claims to send."""
    with Session(engine) as session, session.begin():
        due = repository.due_deliveries(session, now, size)
        targets = repository.endpoints(session, {d.tenant_id for d in due})
        claims = []
        for delivery in due:
            seen_status, seen_attempts = delivery.status, delivery.attempts
            if not repository.claim(session, delivery.id, seen_status, seen_attempts, now + LEASE):
                continue
            target = targets.get(delivery.tenant_id)
            lost_worker = seen_status == repository.SENDING and seen_attempts >= max_attempts
            if target is None or lost_worker:
                status = repository.SKIPPED if target is None else repository.FAILED
                error = "no webhook URL configured" if target is None else "worker lost mid-send"
                repository.finish_attempt(
                    session,
                    delivery.id,
                    seen_attempts + 1,
                    status=status,
                    next_attempt_at=now,
                    last_error=error,
                    delivered_at=None,
                )
                if target is None:
                    report.skipped += 1
                else:
                    report.failed += 1
                continue
            url, secret = target
            claims.append(_Claim(delivery.id, seen_attempts + 1, url, secret, delivery.payload))
        return len(due), claims


def _send(http: httpx.Client, claim: _Claim) -> str | None:
    """POST one event; None on a 2xx answer, else what went wrong."""
    body = encode_body(claim.payload)
    headers = {
        "content-type": "application/json",
        SIGNATURE_HEADER: signature(claim.secret, body, int(time.time())),
    }
    try:
        with http.stream("POST", claim.url, content=body, headers=headers) as response:
            status = response.status_code  # the body is never read, let alone stored
    except targets.TargetRefusedError as error:
        return f"refused: {error}"[:ERROR_LENGTH]
    except httpx.HTTPError as error:
        return f"{type(error).__name__}: {error}"[:ERROR_LENGTH]
    if 200 <= status < 300:
        return None
    return f"HTTP {status} {_phrase(status)}".rstrip()


def _phrase(status: int) -> str:
    """The standard reason phrase (not the receiver's, which is its own text)."""
    try:
        return HTTPStatus(status).phrase
    except ValueError:
        return ""


def _record(
    engine: Engine,
    claim: _Claim,
    error: str | None,
    now: datetime,
    max_attempts: int,
    report: DeliveryReport,
) -> None:
    if error is None:
        status, next_attempt_at, delivered_at = repository.DELIVERED, now, utcnow()
        report.delivered += 1
    elif claim.attempts >= max_attempts:
        status, next_attempt_at, delivered_at = repository.FAILED, now, None
        report.failed += 1
    else:
        status, next_attempt_at = repository.PENDING, now + retry_delay(claim.attempts)
        delivered_at = None
        report.retrying += 1
    with Session(engine) as session, session.begin():
        recorded = repository.finish_attempt(
            session,
            claim.id,
            claim.attempts,
            status=status,
            next_attempt_at=next_attempt_at,
            last_error=error or "",
            delivered_at=delivered_at,
        )
    if not recorded:
        logger.warning(
            "webhook delivery %s was re-claimed before its outcome was recorded", claim.id
        )
    if error is not None:
        logger.info(
            "webhook delivery failed",
            extra={"delivery_id": claim.id, "attempts": claim.attempts, "error": error},
        )
