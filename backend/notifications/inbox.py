"""A holder's inbox (消息): notifications about their certificates and their companies', found by blind index."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from backend.core.db.paging import keyset_page
from backend.errors import NotificationNotFound
from backend.models import Certificate, Holder, Notification
from backend.wallet.queries import Owner, owners


@dataclass(frozen=True)
class InboxItem:
    notification: Notification
    owner: Owner
    certificate_public_id: str | None


@dataclass(frozen=True)
class InboxPage:
    items: list[InboxItem]
    next_cursor: str | None
    unread: int


def _items(session: Session, by_index: dict[str, Owner], notifications: list[Notification]) -> list[InboxItem]:
    ids = {n.certificate_id for n in notifications if n.certificate_id is not None}
    public_ids: dict[int, str] = {}
    if ids:
        rows = session.execute(select(Certificate.id, Certificate.public_id).where(Certificate.id.in_(ids)))
        public_ids = {certificate_id: public_id for certificate_id, public_id in rows}
    return [InboxItem(n, by_index[n.holder_index or ""],
                      public_ids.get(n.certificate_id) if n.certificate_id is not None else None)
            for n in notifications]


def list_holder_notifications(session: Session, holder: Holder, *, now: datetime, max_age: timedelta,
                              unread_only: bool = False, limit: int = 20, cursor: str | None = None) -> InboxPage:
    """The holder's notifications (their own and their currently represented companies'), newest first, with the
    unread count."""
    by_index = owners(holder, now=now, max_age=max_age)
    mine = Notification.holder_index.in_(list(by_index))
    stmt = select(Notification).where(mine)
    if unread_only:
        stmt = stmt.where(Notification.read_at.is_(None))
    notifications, next_cursor = keyset_page(session, stmt, Notification.created_at, Notification.public_id,
                                             limit=limit, cursor=cursor)
    unread = session.scalar(select(func.count()).select_from(Notification)
                            .where(mine, Notification.read_at.is_(None))) or 0
    return InboxPage(_items(session, by_index, notifications), next_cursor, unread)


def mark_holder_notification_read(session: Session, holder: Holder, public_id: str, *, now: datetime,
                                  max_age: timedelta) -> InboxItem:
    """Mark one of the holder's notifications read; reading it again keeps the first time. Anyone else's is 404."""
    by_index = owners(holder, now=now, max_age=max_age)
    notification = session.scalar(select(Notification).where(Notification.public_id == public_id,
                                                              Notification.holder_index.in_(list(by_index))))
    if notification is None:
        raise NotificationNotFound()
    if notification.read_at is None:
        notification.read_at = now
        session.flush()
    return _items(session, by_index, [notification])[0]
