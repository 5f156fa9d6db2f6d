"""Expiry (第八条 到期提醒): the sweep that marks lapsed certificates expired, and reminders before expiry."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import date, datetime, timedelta
from typing import Any

from sqlalchemy import func, select, update
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.orm import Session

from backend.audit.chain import record_event
from backend.issuance.issuer import certificate_event, holder_notification
from backend.kernel.actors import Actor
from backend.kernel.china_time import china_today
from backend.kernel.ids import new_public_id
from backend.keys.status_lists import bump_revision
from backend.models import Certificate, ExpiryReminder, Notification, StatusList
from backend.models.issuance import EXPIRED, SUSPENDED, VALID

DEFAULT_HORIZONS = (90, 30, 7)
DEFAULT_BATCH_SIZE = 500
EXPIRED_REASON = "有效期届满"
DIGEST_KIND = "department_expiry_digest"
# PostgreSQL advisory lock: one reminder run at a time across nodes, so that a department gets one whole digest.
REMINDER_RUN_LOCK = 0x45_52  # "ER"


def _locked_batch(session: Session, criteria: Iterable[Any], after_id: int, batch_size: int) -> list[Certificate]:
    """The next candidates by id, locked FOR UPDATE SKIP LOCKED: rows another node holds are left to it."""
    stmt = (select(Certificate).where(*criteria, Certificate.id > after_id).order_by(Certificate.id)
            .limit(batch_size).with_for_update(skip_locked=True).execution_options(populate_existing=True))
    return list(session.scalars(stmt))


# -- expiry sweep ----------------------------------------------------------------------------------------

def expire_certificates(session: Session, *, actor: Actor, now: datetime, batch_size: int = DEFAULT_BATCH_SIZE) -> int:
    """Mark valid or suspended certificates whose last valid day has passed (China time) as expired (过期).

    Per certificate: a status event and a holder notification; per run: one status-list revision bump per
    touched list and one audit event with the count (each certificate's own trail is its CertificateEvent).
    Returns how many certificates this call expired; a second run finds nothing to do.
    """
    today = china_today(now)
    lapsed = (Certificate.status.in_((VALID, SUSPENDED)), Certificate.valid_until.is_not(None),
              Certificate.valid_until < today)
    expired = 0
    touched_lists: set[int] = set()
    after_id = 0
    while batch := _locked_batch(session, lapsed, after_id, batch_size):
        after_id = batch[-1].id
        for previous in (VALID, SUSPENDED):
            ids = [c.id for c in batch if c.status == previous]
            if not ids:
                continue
            # Conditional on the status read: on SQLite the batch may predate another sweep's commit.
            changed = set(session.execute(
                update(Certificate).where(Certificate.id.in_(ids), Certificate.status == previous)
                .values(status=EXPIRED, status_reason=EXPIRED_REASON, status_changed_at=now, updated_at=now)
                .returning(Certificate.id),
                execution_options={"synchronize_session": "fetch"}).scalars())
            for certificate in batch:
                if certificate.id not in changed:
                    continue
                session.add(certificate_event(certificate, "expired", from_status=previous, actor=actor, now=now,
                                              reason=EXPIRED_REASON))
                notification = holder_notification(certificate, "certificate_expired", now=now,
                                                   type_name=certificate.certificate_type.name,
                                                   issuer_name=certificate.issuer.name)
                notification.data = {**notification.data, "valid_until": _iso(certificate.valid_until)}
                session.add(notification)
                touched_lists.add(certificate.status_list_id)
                expired += 1
        session.flush()
    if expired:
        _bump_in_order(session, touched_lists)
        record_event(session, actor=actor, action="certificate.expired", now=now, object_type="certificate",
                     details={"count": expired, "as_of": today.isoformat()})
    session.flush()
    return expired


def _bump_in_order(session: Session, status_list_ids: set[int]) -> None:
    """Lock the touched status lists in id order before bumping them, so two sweeps cannot deadlock."""
    ordered = sorted(status_list_ids)
    session.execute(select(StatusList.id).where(StatusList.id.in_(ordered)).order_by(StatusList.id)
                    .with_for_update())
    bump_revision(session, set(ordered))


def _iso(day: date | None) -> str | None:
    return day.isoformat() if day else None


# -- reminders -------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class Reminder:
    certificate: Certificate
    horizon_days: int
    days_left: int


def nearest_horizon(days_left: int, horizons: Iterable[int]) -> int | None:
    """The smallest horizon the certificate is already within: only that one is due (never three at once)."""
    within = [h for h in horizons if days_left <= h]
    return min(within) if within else None


def insert_reminders(session: Session, due: list[Reminder], now: datetime) -> set[tuple[int, int]]:
    """INSERT … ON CONFLICT DO NOTHING; returns the (certificate id, horizon) pairs this call inserted."""
    dialect = session.get_bind().dialect.name
    if dialect == "postgresql":
        insert: Any = postgresql.insert
    elif dialect == "sqlite":
        insert = sqlite.insert
    else:  # pragma: no cover - only the two supported databases
        raise NotImplementedError(f"expiry reminders need INSERT … ON CONFLICT, not available on {dialect}")
    stmt = (insert(ExpiryReminder)
            .values([{"certificate_id": r.certificate.id, "horizon_days": r.horizon_days, "created_at": now}
                     for r in due])
            .on_conflict_do_nothing(index_elements=["certificate_id", "horizon_days"])
            .returning(ExpiryReminder.certificate_id, ExpiryReminder.horizon_days))
    return {(certificate_id, horizon) for certificate_id, horizon in session.execute(stmt)}


def send_expiry_reminders(session: Session, *, actor: Actor, now: datetime,
                          horizons: Iterable[int] = DEFAULT_HORIZONS, batch_size: int = DEFAULT_BATCH_SIZE) -> int:
    """Remind holders of valid certificates that expire within a horizon (default 90, 30, 7 days).

    One ExpiryReminder and one holder notification per certificate and horizon, never twice; a certificate
    first seen inside several horizons gets only the nearest. Each issuing department gets one digest
    notification per run listing its certificates reminded in that run. Returns the reminders created.
    """
    today = china_today(now)
    horizon_days = sorted({int(h) for h in horizons if int(h) > 0})
    if not horizon_days:
        return 0
    if session.get_bind().dialect.name == "postgresql":
        # Two nodes running at once would each send a partial digest (rows are skip-locked between them); the
        # second waits until the first commits and then finds nothing left to remind. SQLite has one writer.
        session.execute(select(func.pg_advisory_xact_lock(REMINDER_RUN_LOCK)))
    upcoming = (Certificate.status == VALID, Certificate.valid_until.is_not(None), Certificate.valid_until >= today,
                Certificate.valid_until <= today + timedelta(days=horizon_days[-1]))
    by_department: dict[int, list[Reminder]] = defaultdict(list)
    after_id = 0
    while batch := _locked_batch(session, upcoming, after_id, batch_size):
        after_id = batch[-1].id
        nearest_sent: dict[int, int] = {certificate_id: horizon for certificate_id, horizon in session.execute(
            select(ExpiryReminder.certificate_id, func.min(ExpiryReminder.horizon_days))
            .where(ExpiryReminder.certificate_id.in_([c.id for c in batch]))
            .group_by(ExpiryReminder.certificate_id))}
        due = []
        for certificate in batch:
            assert certificate.valid_until is not None
            days_left = (certificate.valid_until - today).days
            horizon = nearest_horizon(days_left, horizon_days)
            # A nearer reminder already went out: a wider horizon is no news.
            if horizon is None or nearest_sent.get(certificate.id, horizon + 1) <= horizon:
                continue
            due.append(Reminder(certificate, horizon, days_left))
        if not due:
            continue
        inserted = insert_reminders(session, due, now)
        for reminder in due:
            if (reminder.certificate.id, reminder.horizon_days) not in inserted:
                continue  # another node reminded it first
            session.add(_holder_reminder(reminder, now))
            by_department[reminder.certificate.issuer_department_id].append(reminder)
        session.flush()
    created = sum(len(items) for items in by_department.values())
    for department_id in sorted(by_department):
        session.add(_department_digest(department_id, by_department[department_id], now))
    if created:
        record_event(session, actor=actor, action="certificate.expiry_reminded", now=now, object_type="certificate",
                     details={"count": created, "departments": len(by_department), "as_of": today.isoformat()})
    session.flush()
    return created


def _holder_reminder(reminder: Reminder, now: datetime) -> Notification:
    certificate = reminder.certificate
    valid_until = _iso(certificate.valid_until)
    notification = holder_notification(certificate, "expiry_reminder", now=now,
                                       type_name=certificate.certificate_type.name,
                                       issuer_name=certificate.issuer.name,
                                       valid_until=valid_until, days=reminder.days_left)
    notification.data = {**notification.data, "valid_until": valid_until, "days": reminder.days_left,
                         "horizon_days": reminder.horizon_days}
    return notification


def _department_digest(department_id: int, reminders: list[Reminder], now: datetime) -> Notification:
    """Tell the issuing department which of its certificates expire soon (no personal data, identifiers only)."""
    ordered = sorted(reminders, key=lambda r: (r.days_left, r.certificate.identifier))
    widest = max(r.horizon_days for r in reminders)
    return Notification(
        public_id=new_public_id(), department_id=department_id, kind=DIGEST_KIND,
        title=f"{len(ordered)} 本证照即将到期",
        body=f"本部门签发的 {len(ordered)} 本证照将在 {widest} 天内到期，请提醒持证主体及时办理延续或换发。",
        data={"count": len(ordered), "certificates": [
            {"identifier": r.certificate.identifier, "type_code": r.certificate.certificate_type.type_code,
             "valid_until": _iso(r.certificate.valid_until), "days_left": r.days_left,
             "horizon_days": r.horizon_days} for r in ordered]},
        created_at=now,
    )
