"""Audit log (责任倒查): events chained by hash in the same transaction as the change they record."""

from __future__ import annotations

import hashlib
import re
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from enum import StrEnum
from types import SimpleNamespace
from typing import Any

from sqlalchemy import bindparam, insert, select, update
from sqlalchemy.orm import Session

from backend.audit.checkpoints import (
    CHECKPOINT_ACTION,
    CHECKPOINT_TYP,
    Checkpoint,
    Ledger,
    read_checkpoints,
    recorded_target,
)
from backend.audit.checkpoints import claims as checkpoint_claims
from backend.crypto.canonical import canonical_json
from backend.crypto.masking import mask_id_number
from backend.errors import AuditNote
from backend.kernel.actors import Actor
from backend.keys.keystore import PURPOSE_PLATFORM, KeyStore
from backend.models import AuditCheckpoint, AuditEvent, AuditHead, Base

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


def record_refusal(session: Session, note: AuditNote, *, now: datetime) -> None:
    """Audit a refused attempt (an error's `audit` note) once the request's own work was rolled back."""
    record_event(session, actor=note.actor, action=note.action, now=now, outcome="failure",
                 object_type=note.object_type, object_id=note.object_id, details=note.details)


class Problem(StrEnum):
    """What `verify_chain` can find; each names the first sequence number it concerns."""

    DELETED = "deleted"  # events missing from the middle: later events are still there
    INSERTED = "inserted"  # an event never appended in turn: beyond the head, out of sequence, or slipped in between
    EDITED = "edited"  # an event, or one of its hashes, changed after it was written
    TRUNCATED = "truncated"  # the chain ends before its head, or before a signed checkpoint, says it reached
    HEAD_EDITED = "head_edited"  # the head row disagrees with a chain that is consistent in itself
    CHECKPOINT_FORGED = "checkpoint_forged"  # a checkpoint row whose signature is not the platform's over its values
    CHECKPOINT_MISSING = "checkpoint_missing"  # the chain records a checkpoint whose signed row is gone
    CHECKPOINT_MISMATCH = "checkpoint_mismatch"  # a signed checkpoint disagrees with the chain: rewritten up to there
    CHECKPOINT_UNRECORDED = "checkpoint_unrecorded"  # a signed checkpoint the chain no longer records: rewritten after


_EXPLANATIONS = {
    Problem.DELETED: "event seq {seq} (and any up to the next one present) was deleted",
    Problem.INSERTED: "event seq {seq} was inserted: it was never appended to the chain in turn",
    Problem.EDITED: "event seq {seq} was edited after it was written",
    Problem.TRUNCATED: "the chain was cut short: events from seq {seq} on are gone",
    Problem.HEAD_EDITED: "the chain head row (seq {seq}) disagrees with the events",
    Problem.CHECKPOINT_FORGED: "checkpoint #{checkpoint_id} (seq {checkpoint_seq}) does not carry a valid platform "
                               "signature over its seq and chain hash",
    Problem.CHECKPOINT_MISSING: "event seq {seq} records a checkpoint of seq {checkpoint_seq} whose signed row is "
                                "missing",
    Problem.CHECKPOINT_MISMATCH: "checkpoint #{checkpoint_id} signed another chain hash for seq {checkpoint_seq}: the "
                                 "chain was rewritten at or before it",
    Problem.CHECKPOINT_UNRECORDED: "checkpoint #{checkpoint_id} (seq {checkpoint_seq}) is no longer recorded by the "
                                   "chain: the chain was rewritten after it",
}


@dataclass(frozen=True)
class ChainReport:
    ok: bool
    checked: int  # events verified (before the problem, if any)
    head_seq: int
    first_bad_seq: int | None = None
    problem: Problem | None = None
    checkpoint_id: int | None = None  # the checkpoint row concerned, when there is one
    checkpoint_seq: int | None = None  # the seq that checkpoint signs
    checkpoints: int = 0  # genuine signed checkpoints found
    newest_checkpoint_seq: int | None = None

    def explanation(self) -> str:
        if self.problem is None:
            return "intact"
        return _EXPLANATIONS[self.problem].format(seq=self.first_bad_seq, checkpoint_id=self.checkpoint_id,
                                                  checkpoint_seq="?" if self.checkpoint_seq is None
                                                  else self.checkpoint_seq)


def _events(session: Session, batch: int = 1000) -> Iterator[Any]:
    """Plain rows (not ORM objects), page by page, so a long chain never fills the session."""
    last: int | None = None
    columns = AuditEvent.__table__.c
    while True:
        query = select(*columns).order_by(columns.seq).limit(batch)
        rows = session.execute(query if last is None else query.where(columns.seq > last)).all()
        if not rows:
            return
        yield from rows
        last = rows[-1].seq


class _ChainWalk:
    """One pass along the chain in seq order, one event of look-ahead, naming the first problem met."""

    def __init__(self, session: Session, keys: KeyStore) -> None:
        head = session.get(AuditHead, HEAD_ID)
        self.head_seq = head.seq if head else 0
        self.head_hash = head.chain_hash if head else GENESIS
        self.session, self.keys = session, keys
        self.checked = 0
        self.previous = self.before_previous = GENESIS

    def report(self, seq: int, problem: Problem, checkpoint: Checkpoint | None = None, *,
               checked: int | None = None, checkpoint_seq: int | None = None) -> ChainReport:
        return ChainReport(False, self.checked if checked is None else checked, self.head_seq, seq, problem,
                           checkpoint.id if checkpoint else None,
                           checkpoint.seq if checkpoint else checkpoint_seq)

    def run(self) -> ChainReport:
        # The checkpoints first: the chain can be held only against signatures that are genuine.
        checkpoints, forged = read_checkpoints(self.session, self.keys)
        if forged is not None:
            return self.report(forged.seq, Problem.CHECKPOINT_FORGED, forged)
        ledger = Ledger(checkpoints)
        events = _events(self.session)
        event = next(events, None)
        while event is not None:
            following = next(events, None)
            found = self._check(event, following) or self._check_checkpoints(event, ledger)
            if found is not None:
                return found
            self.before_previous, self.previous = self.previous, event.chain_hash
            self.checked += 1
            event = following
        return self._check_end(ledger) or ChainReport(
            True, self.checked, self.head_seq, checkpoints=len(checkpoints),
            newest_checkpoint_seq=checkpoints[-1].seq if checkpoints else None)

    def _check(self, event: Any, following: Any) -> ChainReport | None:
        """The event in itself and its link to the one before it."""
        expected = self.checked + 1
        if event.seq < expected or expected > self.head_seq:
            # In seq order only a seq below 1 comes before the next expected one; and no event was ever appended
            # beyond the head (writers move it in the same transaction).
            return self.report(event.seq, Problem.INSERTED)
        links_to_previous = chain_hash(self.previous, event.leaf_hash) == event.chain_hash
        if event.seq > expected:  # a gap before this event
            if event.seq > self.head_seq:
                return self.report(expected, Problem.TRUNCATED)
            if links_to_previous:  # a genuine event links to the one right before it, not to one before a gap
                return self.report(event.seq, Problem.INSERTED)
            return self.report(expected, Problem.DELETED)
        document = event_document(event)
        if leaf_hash(document) != event.leaf_hash:
            # Renumbered events still carry the hash of their old number: one up means an event was slipped in
            # before them (it links to the event two back), one down means the event before them was deleted.
            original = leaf_hash({**document, "seq": event.seq - 1})
            if original == event.leaf_hash and chain_hash(self.before_previous, original) == event.chain_hash:
                return self.report(event.seq - 1, Problem.INSERTED, checked=self.checked - 1)
            if leaf_hash({**document, "seq": event.seq + 1}) == event.leaf_hash:
                return self.report(event.seq, Problem.DELETED)
            return self.report(event.seq, Problem.EDITED)
        if not links_to_previous:
            # Either this event's chain hash was edited, or it is genuine and the one before it was replaced (with
            # hashes recomputed): what comes next (the next event, or the head) follows the one that is genuine.
            successor = (following.leaf_hash, following.chain_hash) if following is not None \
                and following.seq == event.seq + 1 else None
            stored_is_followed = (chain_hash(event.chain_hash, successor[0]) == successor[1] if successor
                                  else event.seq == self.head_seq and event.chain_hash == self.head_hash)
            if stored_is_followed and event.seq > 1:
                return self.report(event.seq - 1, Problem.EDITED, checked=self.checked - 1)
            return self.report(event.seq, Problem.EDITED)
        return None

    def _check_checkpoints(self, event: Any, ledger: Ledger) -> ChainReport | None:
        """Signed checkpoints of this seq agree with it; a checkpoint event has its signed row."""
        for checkpoint in ledger.by_seq.get(event.seq, ()):
            if checkpoint.chain_hash != event.chain_hash:
                return self.report(event.seq, Problem.CHECKPOINT_MISMATCH, checkpoint)
        if event.action == CHECKPOINT_ACTION:
            target = recorded_target(event)
            if target is None or target[0] >= event.seq or not ledger.record(target):
                return self.report(event.seq, Problem.CHECKPOINT_MISSING,
                                   checkpoint_seq=target[0] if target else None)
        return None

    def _check_end(self, ledger: Ledger) -> ChainReport | None:
        last = self.checked
        if last < self.head_seq:
            return self.report(last + 1, Problem.TRUNCATED)
        for checkpoint in ledger.unrecorded():
            if checkpoint.seq >= last:  # its own record (the event after it) is gone too
                return self.report(last + 1, Problem.TRUNCATED, checkpoint)
        if self.previous != self.head_hash:
            return self.report(self.head_seq, Problem.HEAD_EDITED)
        for checkpoint in ledger.unrecorded():
            return self.report(checkpoint.seq + 1, Problem.CHECKPOINT_UNRECORDED, checkpoint)
        return None


def verify_chain(session: Session, keys: KeyStore) -> ChainReport:
    """Recompute the chain in one streaming pass and hold it against the signed checkpoints; name the first problem.

    Every checkpoint row must carry a genuine platform signature, and every checkpoint the chain records must still
    have its row: so the checkpoints catch what a recomputed chain cannot — a chain cut short (its last events deleted
    and the head rewound) or rewritten wholesale — and cannot be quietly switched off by deleting or defacing them.
    """
    return _ChainWalk(session, keys).run()


_LOCK_HEAD = update(_HEAD).where(_HEAD.c.id == HEAD_ID).values(seq=_HEAD.c.seq).returning(_HEAD.c.seq,
                                                                                          _HEAD.c.chain_hash)


def checkpoint(session: Session, keys: KeyStore, *, actor: Actor, now: datetime) -> AuditCheckpoint:
    """Sign the current head with the platform key, so a later rewrite of the whole chain is evident.

    The head is read under its write lock (a no-op UPDATE, as writers take it on both databases), so no event can
    come between the head signed and the `audit.checkpoint` event recording it, which follows at seq + 1.
    """
    session.flush()
    head = session.connection().execute(_LOCK_HEAD).first()
    if head is None:
        raise RuntimeError("audit_head row missing: run the migrations")
    seq, signed_hash = head
    key = keys.active_key(PURPOSE_PLATFORM)
    signature = keys.sign_jwt(key, checkpoint_claims(seq, signed_hash, int(now.timestamp())),
                              headers={"typ": CHECKPOINT_TYP})
    cp = AuditCheckpoint(seq=seq, chain_hash=signed_hash, signature=signature, kid=key.kid, created_at=now)
    session.add(cp)
    record_event(session, actor=actor, action=CHECKPOINT_ACTION, now=now, object_type="audit_head",
                 object_id=str(seq), details={"chain_hash": signed_hash})
    session.flush()
    return cp
