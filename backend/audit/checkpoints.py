"""Signed audit checkpoints: the chain head at a seq, signed with the platform key, and how a checkpoint is trusted."""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from backend.crypto import jws
from backend.errors import DomainError
from backend.keys.keystore import KeyStore
from backend.models import AuditCheckpoint

CHECKPOINT_TYP = "audit-checkpoint+jwt"
CHECKPOINT_ACTION = "audit.checkpoint"  # the chain's own record that a checkpoint was signed
_SEQ = re.compile(r"[0-9]{1,18}")


@dataclass(frozen=True)
class Checkpoint:
    """One `audit_checkpoint` row, as plain values."""

    id: int
    seq: int
    chain_hash: str


def claims(seq: int, chain_hash: str, iat: int) -> dict[str, Any]:
    return {"seq": seq, "chain_hash": chain_hash, "iat": iat}


def is_genuine(keys: KeyStore, signature: str, kid: str, seq: int, chain_hash: str) -> bool:
    """True when `signature` is a checkpoint JWS over exactly this seq and chain hash by the platform key `kid`."""
    try:
        parsed = jws.parse(signature)
        if parsed.header.get("typ") != CHECKPOINT_TYP or parsed.header.get("kid") != kid:
            return False
        key = keys.held_platform_key(kid)
        parsed.verify(key.public, key.alg)
    except (jws.JWSError, DomainError):
        return False
    payload = parsed.payload
    return type(payload.get("seq")) is int and payload["seq"] == seq and payload.get("chain_hash") == chain_hash


def read_checkpoints(session: Session, keys: KeyStore) -> tuple[list[Checkpoint], Checkpoint | None]:
    """Every checkpoint row by seq, and the first whose signature is not genuine (None when all are).

    One row per scheduled run: few enough to hold, unlike the chain itself.
    """
    rows = session.execute(select(AuditCheckpoint.id, AuditCheckpoint.seq, AuditCheckpoint.chain_hash,
                                  AuditCheckpoint.signature, AuditCheckpoint.kid)
                           .order_by(AuditCheckpoint.seq, AuditCheckpoint.id)).all()
    for row in rows:
        if not is_genuine(keys, row.signature, row.kid, row.seq, row.chain_hash):
            return [], Checkpoint(row.id, row.seq, row.chain_hash)
    return [Checkpoint(row.id, row.seq, row.chain_hash) for row in rows], None


def recorded_target(event: Any) -> tuple[int, str] | None:
    """The (seq, chain hash) an `audit.checkpoint` event says was signed; None when it names none."""
    details = event.details if isinstance(event.details, dict) else {}
    target, signed_hash = event.object_id, details.get("chain_hash")
    if not isinstance(target, str) or not _SEQ.fullmatch(target) or not isinstance(signed_hash, str):
        return None
    return int(target), signed_hash


class Ledger:
    """The checkpoint rows still waiting for the chain's record of them, matched one event to one row."""

    def __init__(self, checkpoints: Iterable[Checkpoint]) -> None:
        self.by_seq: dict[int, list[Checkpoint]] = {}
        self._unrecorded: dict[tuple[int, str], list[Checkpoint]] = {}
        for checkpoint in checkpoints:
            self.by_seq.setdefault(checkpoint.seq, []).append(checkpoint)
            self._unrecorded.setdefault((checkpoint.seq, checkpoint.chain_hash), []).append(checkpoint)

    def record(self, target: tuple[int, str] | None) -> bool:
        """Match a checkpoint event to a row not matched yet; False when there is none."""
        waiting = self._unrecorded.get(target) if target is not None else None
        if not waiting:
            return False
        waiting.pop(0)
        return True

    def unrecorded(self) -> list[Checkpoint]:
        return sorted((cp for rows in self._unrecorded.values() for cp in rows), key=lambda cp: (cp.seq, cp.id))
