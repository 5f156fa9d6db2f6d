"""The callback outbox of access requests: after a decision, the department's callback URL receives a signed POST."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import select, update
from sqlalchemy.orm import Session

from backend.adapters.callbacks import CallbackSender, DeliveryResult, sign_callback
from backend.audit.chain import record_event
from backend.kernel.actors import Actor
from backend.keys.keystore import KeyStore
from backend.models import AccessRequest, ApiClient, Grant
from backend.models.sharing import REQUEST_APPROVED

log = logging.getLogger("ecert.callbacks")

LEASE = timedelta(seconds=60)  # a claimed attempt is not claimed again before this, even if its node died
FIRST_RETRY_SECONDS = 30
MAX_RETRY_SECONDS = 3600
DEFAULT_MAX_ATTEMPTS = 8
ACTOR = Actor.system("callbacks")


@dataclass(frozen=True)
class ClaimedCallback:
    """One attempt this node owns until the lease ends."""

    access_request_id: int
    public_id: str
    url: str
    audience: str  # the receiving client's client_id
    payload: dict[str, Any]
    attempt: int


def callback_payload(session: Session, request: AccessRequest) -> dict[str, Any]:
    """{request_id, status, grant_id?, decided_at}: the decision, nothing about the holder."""
    assert request.decided_at is not None
    payload: dict[str, Any] = {"request_id": request.public_id, "status": request.status,
                               "decided_at": request.decided_at.isoformat()}
    if request.status == REQUEST_APPROVED:
        grant_id = session.scalar(select(Grant.public_id).where(Grant.access_request_id == request.id))
        if grant_id is not None:
            payload["grant_id"] = grant_id
    return payload


def _claim(session: Session, request: AccessRequest, *, now: datetime) -> ClaimedCallback | None:
    due = request.callback_next_at
    if due is None or due > now or request.callback_delivered_at is not None or request.callback_url is None:
        return None
    won = session.execute(
        update(AccessRequest)
        .where(AccessRequest.id == request.id, AccessRequest.callback_next_at == due,
               AccessRequest.callback_delivered_at.is_(None))
        .values(callback_next_at=now + LEASE, callback_attempts=AccessRequest.callback_attempts + 1)
        .execution_options(synchronize_session=False)).rowcount  # type: ignore[attr-defined]
    if won != 1:
        return None
    session.refresh(request)
    audience = session.scalar(select(ApiClient.client_id).where(ApiClient.id == request.api_client_id))
    assert audience is not None
    return ClaimedCallback(request.id, request.public_id, request.callback_url, audience,
                           callback_payload(session, request), request.callback_attempts)


def claim_one(session: Session, access_request_id: int, *, now: datetime) -> ClaimedCallback | None:
    """Claim the callback of one request if it is due (right before posting it: the lease is for one POST)."""
    request = session.get(AccessRequest, access_request_id)
    return None if request is None else _claim(session, request, now=now)


def due_callbacks(session: Session, *, now: datetime, limit: int = 100) -> list[int]:
    """The access requests of up to `limit` due callbacks, oldest first, not claimed: a job claims each right before
    it posts it (`claim_one`), so that the lease covers that POST, however long the ones before it took."""
    return list(session.scalars(select(AccessRequest.id)
                                .where(AccessRequest.callback_next_at <= now,
                                       AccessRequest.callback_delivered_at.is_(None))
                                .order_by(AccessRequest.callback_next_at).limit(limit)))


def send(keys: KeyStore, sender: CallbackSender, claimed: ClaimedCallback, *, issuer: str,
         now: datetime) -> DeliveryResult:
    """Sign and post one claimed attempt (no database work: call it outside a transaction)."""
    signed = sign_callback(keys, claimed.payload, issuer=issuer, audience=claimed.audience, now=now)
    return sender.send(claimed.url, signed)


def backoff(attempt: int) -> timedelta:
    """30 s after the first failure, doubling, at most an hour."""
    return timedelta(seconds=min(FIRST_RETRY_SECONDS * 2 ** max(attempt - 1, 0), MAX_RETRY_SECONDS))


def record_outcome(session: Session, claimed: ClaimedCallback, result: DeliveryResult, *, now: datetime,
                   max_attempts: int = DEFAULT_MAX_ATTEMPTS) -> str:
    """Store what happened to an attempt: `delivered`, `retry` (next time set) or `abandoned`."""
    details = {"attempt": claimed.attempt, "status": result.status, "reason": result.reason}
    if result.delivered:
        values: dict[str, Any] = {"callback_delivered_at": now, "callback_next_at": None}
        outcome, action = "delivered", "access_request.callback_delivered"
    elif claimed.attempt >= max_attempts:
        values = {"callback_next_at": None}
        outcome, action = "abandoned", "access_request.callback_abandoned"
    else:
        values = {"callback_next_at": now + backoff(claimed.attempt)}
        outcome, action = "retry", "access_request.callback_failed"
        details["next_attempt_at"] = values["callback_next_at"].isoformat()
    session.execute(update(AccessRequest).where(AccessRequest.id == claimed.access_request_id,
                                                AccessRequest.callback_delivered_at.is_(None))
                    .values(**values).execution_options(synchronize_session=False))
    record_event(session, actor=ACTOR, action=action, now=now, outcome="success" if result.delivered else "failure",
                 object_type="access_request", object_id=claimed.public_id, details=details)
    log.info("callback attempt", extra={"fields": {"access_request": claimed.public_id, "outcome": outcome,
                                                   "attempt": claimed.attempt, "status": result.status}})
    return outcome
