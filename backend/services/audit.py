"""Audit log (责任倒查): events chained by hash in the same transaction as the change they record.

Leaf hash = SHA-256(0x00 || canonical JSON of the event); chain hash = SHA-256(0x01 || previous
chain hash || leaf hash) — the RFC 6962 leaf/node domain separation applied to a linear chain.
Writers first update the single `audit_head` row, which locks it until their transaction ends, so
two concurrent transactions can never append after the same head (no fork).
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from types import SimpleNamespace
from typing import Any

import jwt
from sqlalchemy import bindparam, insert, select, update
from sqlalchemy.orm import Session

from backend.errors import DomainError
from backend.models import AuditCheckpoint, AuditEvent, AuditHead, Base
from backend.security.canonical import canonical_json
from backend.security.keystore import PURPOSE_PLATFORM, KeyStore
from backend.security.masking import mask_id_number
from backend.services.actors import Actor

GENESIS = "0" * 64
HEAD_ID = 1

# Keys whose values must never reach the audit log, whatever a caller passes.
_SECRET_KEYS = re.compile(r"token|secret|password|assertion|code_verifier|private|otp|^code$", re.I)
_ID_NUMBER_KEYS = re.compile(r"id_number|holder_code|^code_value$", re.I)


_CONTROL = re.compile(r"[\x00-\x1f\x7f]")
MAX_TEXT = 500


def clean_text(value: str, limit: int = MAX_TEXT) -> str:
    """Printable, bounded text: no NUL or control characters (PostgreSQL refuses NUL) and no lone surrogates."""
    value = _CONTROL.sub("?", value.encode("utf-8", "replace").decode("utf-8"))
    return value if len(value) <= limit else value[: limit - 1] + "…"


def _scrub(details: Any, key: str = "") -> Any:
    if isinstance(details, dict):
        return {clean_text(str(k), 64): _scrub(v, str(k)) for k, v in list(details.items())[:50]}
    if isinstance(details, list | tuple):
        return [_scrub(v, key) for v in list(details)[:100]]
    if _SECRET_KEYS.search(key):
        return "[redacted]"
    if _ID_NUMBER_KEYS.search(key) and isinstance(details, str | int) and not isinstance(details, bool) \
            and len(str(details)) > 5:
        return mask_id_number(str(details))
    if isinstance(details, float):
        return str(details)  # floats have no canonical JSON form
    if isinstance(details, str):
        return clean_text(details)
    if isinstance(details, int) and not isinstance(details, bool) and abs(details) >= 2**53:
        return str(details)  # beyond what every JSON reader keeps exactly
    if details is None or isinstance(details, bool | int):
        return details
    return clean_text(str(details))


def _timestamp(moment: datetime) -> str:
    return moment.strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def event_document(event: Any) -> dict[str, Any]:
    """The fields covered by the leaf hash."""
    return {
        "seq": event.seq,
        "occurred_at": _timestamp(event.occurred_at),
        "actor_type": event.actor_type,
        "actor_id": event.actor_id,
        "department_code": event.department_code,
        "action": event.action,
        "object_type": event.object_type,
        "object_id": event.object_id,
        "outcome": event.outcome,
        "source_ip": event.source_ip,
        "request_id": event.request_id,
        "details": event.details,
    }


def leaf_hash(document: dict[str, Any]) -> str:
    return hashlib.sha256(b"\x00" + canonical_json(document)).hexdigest()


def chain_hash(previous: str, leaf: str) -> str:
    return hashlib.sha256(b"\x01" + bytes.fromhex(previous) + bytes.fromhex(leaf)).hexdigest()


_HEAD = Base.metadata.tables["audit_head"]
_EVENTS = Base.metadata.tables["audit_event"]
_ADVANCE_HEAD = (update(_HEAD).where(_HEAD.c.id == HEAD_ID).values(seq=_HEAD.c.seq + 1)
                 .returning(_HEAD.c.seq, _HEAD.c.chain_hash))
_MOVE_HEAD = update(_HEAD).where(_HEAD.c.id == HEAD_ID).values(chain_hash=bindparam("new_chain_hash"))
_INSERT_EVENT = insert(_EVENTS)


def record_event(
    session: Session,
    *,
    actor: Actor,
    action: str,
    now: datetime,
    object_type: str | None = None,
    object_id: str | None = None,
    outcome: str = "success",
    details: dict[str, Any] | None = None,
) -> SimpleNamespace:
    """Append one event to the chain inside the caller's transaction; answers the event as written (its columns).

    Nearly every request writes one event, so the statements are plain Core on the request's connection,
    built once: the ORM's bulk-update bookkeeping cost more than the rest of the request's own work.
    """
    session.flush()  # the caller's pending changes go first, so the chain records them in order
    connection = session.connection()
    # Lock first (UPDATE) and read the new head in the same statement: a concurrent writer waits here until we
    # commit or roll back.
    head = connection.execute(_ADVANCE_HEAD).first()
    if head is None:
        raise RuntimeError("audit_head row missing: run the migrations")
    seq, previous = head
    # A plain namespace, not an AuditEvent: the ORM object's instrumented attributes cost more than the hashing.
    event = SimpleNamespace(
        seq=seq,
        occurred_at=now.astimezone(UTC),
        actor_type=actor.kind,
        actor_id=clean_text(actor.id, 64),
        department_code=actor.department_code,
        action=action,
        object_type=object_type,
        object_id=None if object_id is None else clean_text(object_id, 128),
        outcome=outcome,
        source_ip=actor.source_ip,
        request_id=actor.request_id,
        details=_scrub(details or {}),
    )
    event.leaf_hash = leaf_hash(event_document(event))
    event.chain_hash = chain_hash(previous, event.leaf_hash)
    connection.execute(_INSERT_EVENT, vars(event))
    connection.execute(_MOVE_HEAD, {"new_chain_hash": event.chain_hash})
    loaded = session.identity_map.get(session.identity_key(AuditHead, HEAD_ID))
    if loaded is not None:
        session.expire(loaded)  # a head object read earlier in this session would no longer be the head
    return event


@dataclass(frozen=True)
class ChainReport:
    ok: bool
    checked: int
    head_seq: int
    first_bad_seq: int | None = None
    problem: str | None = None


def _events(session: Session, batch: int = 1000) -> Iterator[Any]:
    """Plain rows (not ORM objects), page by page, so a long chain never fills the session."""
    last = 0
    columns = AuditEvent.__table__.c
    while True:
        rows = session.execute(select(*columns).where(columns.seq > last).order_by(columns.seq).limit(batch)).all()
        if not rows:
            return
        yield from rows
        last = rows[-1].seq


def _signed_checkpoints(session: Session, keys: KeyStore | None) -> dict[int, str]:
    """seq → chain hash of every checkpoint whose platform signature (when keys are given) is genuine."""
    checkpoints: dict[int, str] = {}
    for cp in session.scalars(select(AuditCheckpoint).order_by(AuditCheckpoint.seq)):
        if keys is not None:
            try:
                key, public = keys.public_key(cp.kid)
                claims = jwt.decode(cp.signature, public, algorithms=[key.alg], options={"verify_iat": False})
            except (DomainError, jwt.PyJWTError):
                continue
            if claims.get("seq") != cp.seq or claims.get("chain_hash") != cp.chain_hash:
                continue
        checkpoints[cp.seq] = cp.chain_hash
    return checkpoints


def verify_chain(session: Session, keys: KeyStore | None = None) -> ChainReport:
    """Recompute the chain; name the first sequence number that was edited, deleted or inserted.

    Signed checkpoints also catch what a recomputed chain cannot: a chain cut short (its last events
    deleted and the head rewound) or rewritten wholesale from some point on.
    """
    head = session.get(AuditHead, HEAD_ID)
    head_seq = head.seq if head else 0
    head_hash = head.chain_hash if head else GENESIS
    checkpoints = _signed_checkpoints(session, keys)
    expected_seq, previous, before_previous, checked = 1, GENESIS, GENESIS, 0
    for event in _events(session):
        if event.seq in checkpoints and checkpoints[event.seq] != event.chain_hash:
            return ChainReport(False, checked, head_seq, event.seq, "rewritten")
        if event.seq != expected_seq:
            if event.seq > expected_seq:
                return ChainReport(False, checked, head_seq, expected_seq, "deleted")
            return ChainReport(False, checked, head_seq, event.seq, "inserted")
        document = event_document(event)
        leaf = leaf_hash(document)
        if leaf != event.leaf_hash:
            # An untouched event renumbered one place up, still linking to the event two back: the one
            # before it is a forgery inserted into the middle (which itself hashed consistently).
            original = leaf_hash({**document, "seq": event.seq - 1})
            if original == event.leaf_hash and chain_hash(before_previous, original) == event.chain_hash:
                return ChainReport(False, checked - 1, head_seq, event.seq - 1, "inserted")
            return ChainReport(False, checked, head_seq, event.seq, "edited")
        if chain_hash(previous, leaf) != event.chain_hash:
            return ChainReport(False, checked, head_seq, event.seq, "inserted")
        before_previous, previous = previous, event.chain_hash
        expected_seq += 1
        checked += 1
    beyond = [seq for seq in checkpoints if seq > checked]
    if beyond:
        return ChainReport(False, checked, head_seq, checked + 1, "truncated")
    if checked != head_seq:
        bad = checked + 1 if checked < head_seq else head_seq + 1
        return ChainReport(False, checked, head_seq, bad, "deleted" if checked < head_seq else "inserted")
    if previous != head_hash:
        return ChainReport(False, checked, head_seq, head_seq, "edited")
    return ChainReport(True, checked, head_seq)


def checkpoint(session: Session, keys: KeyStore, *, actor: Actor, now: datetime) -> AuditCheckpoint:
    """Sign the current head with the platform key, so a later rewrite of the whole chain is evident."""
    head = session.get(AuditHead, HEAD_ID)
    if head is None:
        raise RuntimeError("audit_head row missing: run the migrations")
    key = keys.active_key(PURPOSE_PLATFORM)
    signature = keys.sign_jwt(
        key,
        {"seq": head.seq, "chain_hash": head.chain_hash, "iat": int(now.timestamp())},
        headers={"typ": "audit-checkpoint+jwt"},
    )
    cp = AuditCheckpoint(seq=head.seq, chain_hash=head.chain_hash, signature=signature, kid=key.kid, created_at=now)
    session.add(cp)
    record_event(session, actor=actor, action="audit.checkpoint", now=now, object_type="audit_head",
                 object_id=str(head.seq), details={"chain_hash": head.chain_hash})
    session.flush()
    return cp
