"""Token Status Lists (IETF draft-ietf-oauth-status-list): random slot allocation and signed list tokens."""

from __future__ import annotations

import random
import zlib
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import ColumnElement, Integer, any_, bindparam, func, select, union_all, update
from sqlalchemy.dialects.postgresql import ARRAY
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import InstrumentedAttribute, Session

from backend.crypto.sdjwt import b64url
from backend.errors import NotFound
from backend.keys.deps import Deps
from backend.keys.keystore import PURPOSE_CERTIFICATE, KeyStore
from backend.models import Certificate, Department, ImportStaging, StatusList
from backend.models.issuance import STATUS_LIST_VALUE

LIST_SIZE = 1 << 16  # 65,536 two-bit entries = 16 KiB before compression
FILL_LIMIT = LIST_SIZE * 3 // 4  # keep a quarter free so random picks stay cheap and unpredictable
BITS = 2
TOKEN_TTL = timedelta(minutes=10)
_rng = random.SystemRandom()


def _limit(status_list: StatusList) -> int:
    """How many slots of a list may be used: 3/4 of it (FILL_LIMIT for lists of LIST_SIZE)."""
    return status_list.size * 3 // 4


def list_uri(public_url: str, department_code: str, list_number: int) -> str:
    return f"{public_url}/status-lists/{department_code}/{list_number}"


def bump_revision(session: Session, status_list_ids: set[int]) -> None:
    if status_list_ids:
        session.execute(update(StatusList).where(StatusList.id.in_(status_list_ids))
                        .values(revision=StatusList.revision + 1))


# The namespace of PostgreSQL advisory locks that serialise one department's slot allocators (with its id).
ALLOCATION_LOCK = 0x53_4C  # "SL"


def used_slots(session: Session, status_list_id: int, candidates: list[int] | None = None) -> set[int]:
    """The slots of a list that are taken (of `candidates`, or all): by certificates, and by the staged rows of
    imports not yet published (their signed certificates name those slots)."""
    queries = []
    for table in (Certificate, ImportStaging):
        query = select(table.status_index).where(table.status_list_id == status_list_id)
        queries.append(query if candidates is None else query.where(_among(session, table.status_index, candidates)))
    return set(session.scalars(union_all(*queries)))


def _among(session: Session, column: InstrumentedAttribute[int], values: list[int]) -> ColumnElement[bool]:
    """`column IN (values)`; on PostgreSQL `= ANY(array)`, one parameter instead of one per value: a batch checks 500
    slots per chunk, and the client took longer to rewrite a statement of 1,000 parameters than the server to run it."""
    if session.get_bind().dialect.name == "postgresql":
        return column == any_(bindparam(None, values, type_=ARRAY(Integer)))
    return column.in_(values)


class SlotAllocator:
    """Hands out random free slots in the department's open list; opens a new list when it fills up.

    Concurrent issuers of one department must not pick the same slot, so allocators of a department take turns
    until their transactions end. On SQLite the first allocation bumps the list's revision, which takes the
    database's one write lock. On PostgreSQL they take a per-department advisory lock instead.

    A batch (a bulk allocator) takes its slots between its own short transactions (see backend/imports/batches.py):
    it loads a list's used slots once and draws from them, so an interactive issuer may take one of its slots before
    the batch stages the certificate signed with it. The batch checks its rows with `taken` in the transaction that
    stages them (its turn held: `begin_transaction`) and signs those again with fresh slots; a staged row's slot is
    taken for everyone else (`used_slots`). Slots of a batch that fails are never used: harmless gaps.
    """

    def __init__(self, session: Session, department: Department, now: datetime, *, expected: int = 1) -> None:
        self.session = session
        self.department = department
        self.now = now
        # Few slots: probe random candidates with a query each. Many (a batch): load the list's used slots once and
        # draw random slots until a free one comes up.
        self.bulk = expected > 32
        self._postgres = session.get_bind().dialect.name == "postgresql"
        self._locked = False
        self._list: StatusList | None = None
        self._used: set[int] = set()  # bulk: every used slot of the current list; else: the slots taken here
        self._taken = 0  # slots taken from the current list and not yet recorded
        self._in_list = 0  # slots of the current list in use, ours included
        self.lists: set[int] = set()  # the lists slots were taken from

    def _take_turn(self) -> None:
        """Wait for the department's other allocators (PostgreSQL: until this transaction ends)."""
        if self._postgres and not self._locked:
            self.session.execute(select(func.pg_advisory_xact_lock(ALLOCATION_LOCK, self.department.id)))
            self._locked = True

    def begin_transaction(self) -> None:
        """A batch's transaction begins: wait for the department's other allocators (see `_take_turn`)."""
        self._locked = False  # the last transaction's lock went with it
        self._take_turn()

    def _open_list(self) -> StatusList:
        self._take_turn()
        current = self.session.scalar(select(StatusList).where(StatusList.department_id == self.department.id)
                                      .order_by(StatusList.list_number.desc()).limit(1)
                                      .execution_options(populate_existing=True))
        if current is not None:
            if not self._postgres:
                self.session.execute(update(StatusList).where(StatusList.id == current.id)
                                     .values(revision=StatusList.revision + 1))
                self.session.refresh(current)
            elif not self.bulk:
                bump_revision(self.session, {current.id})
            if current.allocated < FILL_LIMIT:
                self._in_list = current.allocated
                return current
        number = 1 if current is None else current.list_number + 1
        try:
            with self.session.begin_nested():
                created = StatusList(department_id=self.department.id, list_number=number, size=LIST_SIZE,
                                     allocated=0, revision=1, created_at=self.now)
                self.session.add(created)
        except IntegrityError:
            # Another transaction opened it first; use theirs.
            return self._open_list()
        self._in_list = 0
        return created

    def take(self) -> tuple[StatusList, int]:
        current = self._list
        if current is None or self._in_list >= FILL_LIMIT or len(self._used) >= _limit(current):
            self.flush()
            current = self._list = self._open_list()
            self.lists.add(current.id)
            self._used = used_slots(self.session, current.id) if self.bulk else set()
        self._taken += 1
        self._in_list += 1
        return current, self._draw(current) if self.bulk else self._probe(current)

    def _draw(self, status_list: StatusList) -> int:
        """A uniformly random free slot (rejection sampling): what popping a shuffled free list gave, without
        shuffling 65,536 entries per list. The list is at most 3/4 full, so this takes 4 draws at worst on average."""
        while True:
            candidate = _rng.randrange(status_list.size)
            if candidate not in self._used:
                self._used.add(candidate)
                return candidate

    def _probe(self, status_list: StatusList) -> int:
        # At most 3/4 of the list is used, so 16 random candidates all taken has probability < 1e-2.
        while True:
            candidates = [_rng.randrange(status_list.size) for _ in range(16)]
            used = used_slots(self.session, status_list.id, candidates)
            for candidate in candidates:
                if candidate not in used and candidate not in self._used:
                    self._used.add(candidate)
                    return candidate

    def taken(self, slots: list[tuple[int, int]]) -> set[tuple[int, int]]:
        """Which of these (list id, slot) pairs someone else took meanwhile (a batch's check before it stages)."""
        by_list: dict[int, list[int]] = {}
        for list_id, index in slots:
            by_list.setdefault(list_id, []).append(index)
        found = {(list_id, index) for list_id, indexes in by_list.items()
                 for index in used_slots(self.session, list_id, indexes)}
        if self._list is not None:
            self._used.update(index for list_id, index in found if list_id == self._list.id)
        return found

    def flush(self) -> None:
        """Record how many slots this allocator took from its current list."""
        if self._list is not None and self._taken:
            self.session.execute(update(StatusList).where(StatusList.id == self._list.id)
                                 .values(allocated=StatusList.allocated + self._taken))
            self._taken = 0

    def finish(self) -> None:
        """At the end of a batch: record the slots taken and mark the lists' signed tokens stale."""
        self.flush()
        bump_revision(self.session, self.lists)


def encode_bits(entries: list[tuple[int, int]], size: int) -> bytes:
    """Pack (index, value) pairs, two bits each, least significant bits first (draft §4.1)."""
    packed = bytearray(size * BITS // 8)
    for index, value in entries:
        byte, shift = divmod(index * BITS, 8)
        packed[byte] |= (value & 0b11) << shift
    return bytes(packed)


def decode_value(packed: bytes, index: int) -> int:
    byte, shift = divmod(index * BITS, 8)
    return (packed[byte] >> shift) & 0b11


def get_status_list(session: Session, department_code: str, list_number: int) -> StatusList:
    status_list = session.scalar(select(StatusList).join(Department)
                                 .where(Department.code == department_code, StatusList.list_number == list_number))
    if status_list is None:
        raise NotFound("状态列表不存在", code="status_list_not_found")
    return status_list


def status_list_token(session: Session, keys: KeyStore, status_list: StatusList, *, public_url: str,
                      now: datetime) -> str:
    """The signed statuslist+jwt, rebuilt when a certificate changed or the cached one is half-way to expiry."""
    fresh = (status_list.token is not None and status_list.token_revision == status_list.revision
             and status_list.token_issued_at is not None and now - status_list.token_issued_at < TOKEN_TTL / 2)
    if fresh:
        return str(status_list.token)
    rows = session.execute(select(Certificate.status_index, Certificate.status)
                           .where(Certificate.status_list_id == status_list.id)).all()
    packed = encode_bits([(index, STATUS_LIST_VALUE[status]) for index, status in rows], status_list.size)
    department = status_list.department
    payload: dict[str, Any] = {
        "sub": list_uri(public_url, department.code, status_list.list_number),
        "iss": f"{public_url}/issuers/{department.code}",
        "iat": int(now.timestamp()),
        "exp": int((now + TOKEN_TTL).timestamp()),
        "ttl": int(TOKEN_TTL.total_seconds()),
        "status_list": {"bits": BITS, "lst": b64url(zlib.compress(packed, 9))},
    }
    key = keys.active_key(PURPOSE_CERTIFICATE, department)
    token = keys.sign_jwt(key, payload, headers={"typ": "statuslist+jwt"})
    status_list.token = token
    status_list.token_revision = status_list.revision
    status_list.token_issued_at = now
    return token


def published_token(deps: Deps, status_list: StatusList, *, now: datetime) -> str:
    """The current token (`status_list_token`); a freshly signed one is cached on the row only if no issuer holds
    that row.

    Issuing locks the list row until its transaction ends, which for a batch import can take minutes; the
    public endpoint must not wait for it, so it then serves the new token without caching it.
    """
    session = deps.session
    cached = (status_list.token, status_list.token_revision, status_list.token_issued_at)
    token = status_list_token(session, deps.keys, status_list, public_url=deps.public_url, now=now)
    if (status_list.token, status_list.token_revision, status_list.token_issued_at) != cached:
        with session.no_autoflush:  # flushing the new token now would wait for the lock we are probing
            free = session.scalar(select(StatusList.id).where(StatusList.id == status_list.id)
                                  .with_for_update(skip_locked=True))
        if free is None:
            session.expire(status_list, ["token", "token_revision", "token_issued_at"])  # drop the unsaved cache
    return token
