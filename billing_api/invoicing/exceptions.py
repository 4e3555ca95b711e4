"""Billing exceptions: what a reviewer must settle, kept in step with the rules' findings.

A finding (`checks`) becomes an exception in a scope (`invoice:<id>`, `run:<period>`,
`late:<invoice id>`), identified there by its type and fingerprint. Re-checking a scope
makes its exceptions match the findings: new ones open, known ones keep the reviewer's
status (a waiver survives a re-run) with fresh evidence, and gone ones are resolved by the
system. A reviewer resolves or waives an exception with a note, or reopens it; each change
is in the audit log.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from datetime import datetime

from sqlalchemy.orm import Session

from agentmeter.clock import utcnow
from agentmeter.tables import BillingException
from billing_api.audit import log as audit_log
from billing_api.auth import Caller, Role
from billing_api.errors import NotFoundError, UnprocessableError
from billing_api.invoicing import repository
from billing_api.invoicing.checks import Finding
from billing_api.invoicing.repository import new_id
from billing_api.invoicing.states import SYSTEM_ACTOR, ExceptionStatus
from billing_api.invoicing.views import ExceptionView


def sync_exceptions(
    session: Session,
    tenant_id: str,
    *,
    scope: str,
    period: str,
    customer_id: str,
    invoice_id: str | None,
    findings: Iterable[Finding],
    known_in_scope: Sequence[BillingException] | None = None,
) -> None:
    """Make the scope's exceptions match `findings`: new ones open, known ones keep their
    status (a waiver survives a re-run) with fresh evidence, gone ones are resolved by the
    system. `known_in_scope` saves the query when the caller loaded them in bulk. Changes
    are flushed with the session's next flush (a billing run flushes once per chunk of
    customers, not once per customer)."""
    if known_in_scope is None:
        known_in_scope = repository.exceptions_in_scope(session, tenant_id, scope)
    known = {(e.type, e.fingerprint): e for e in known_in_scope}
    seen: set[tuple[str, str]] = set()
    for finding in findings:
        key: tuple[str, str] = (finding.type, finding.fingerprint)
        seen.add(key)
        exception = known.get(key)
        if exception is None:
            session.add(
                BillingException(
                    id=new_id(),
                    tenant_id=tenant_id,
                    scope=scope,
                    invoice_id=invoice_id,
                    period=period,
                    customer_id=customer_id,
                    type=finding.type,
                    severity=finding.severity,
                    fingerprint=finding.fingerprint,
                    message=finding.message,
                    evidence=finding.evidence,
                )
            )
            continue
        exception.message = finding.message
        exception.evidence = finding.evidence
        if exception.status == ExceptionStatus.RESOLVED and exception.resolved_by == SYSTEM_ACTOR:
            exception.status = ExceptionStatus.OPEN  # it came back
            exception.resolved_at = None
            exception.resolved_by = ""
    for key, exception in known.items():
        if key not in seen and exception.status == ExceptionStatus.OPEN:
            exception.status = ExceptionStatus.RESOLVED
            exception.resolved_at = utcnow()
            exception.resolved_by = SYSTEM_ACTOR
            exception.note = "no longer applies after re-rating"


def set_exception_status(
    session: Session,
    caller: Caller,
    exception_id: str,
    *,
    status: ExceptionStatus,
    note: str,
    now: datetime,
) -> ExceptionView:
    """Resolve or waive an exception (or reopen it), with who (the caller's actor) and
    why."""
    caller.require(Role.BILLING)
    if status != ExceptionStatus.OPEN and not note.strip():
        raise UnprocessableError("a note is required to resolve or waive an exception")
    exception = repository.get_exception(session, caller.tenant_id, exception_id)
    if exception is None:
        raise NotFoundError(f"no exception {exception_id!r}")
    before = {"status": exception.status, "note": exception.note}
    exception.status = status
    exception.note = note
    exception.resolved_by = "" if status == ExceptionStatus.OPEN else caller.actor
    exception.resolved_at = None if status == ExceptionStatus.OPEN else now
    audit_log.record(
        session,
        caller,
        entity="exception",
        entity_id=exception.id,
        action=status,
        before=before,
        after={"status": status, "note": note},
        reason=note,
    )
    session.flush()
    return ExceptionView.of(exception)
