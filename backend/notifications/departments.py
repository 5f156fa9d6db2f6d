"""A department's inbox: notifications addressed to it (expiry digests, …), newest first, marked read."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import select
from sqlalchemy.orm import Session

from backend.core.db.paging import keyset_page
from backend.errors import NotificationNotFound
from backend.models import Department, Notification


@dataclass(frozen=True)
class NotificationPage:
    items: list[Notification]
    next_cursor: str | None


def list_department_notifications(session: Session, department: Department, *, limit: int, cursor: str | None = None,
                                  unread_only: bool = False) -> NotificationPage:
    """The department's notifications, newest first, `limit` per page with an opaque cursor to the next page."""
    stmt = select(Notification).where(Notification.department_id == department.id)
    if unread_only:
        stmt = stmt.where(Notification.read_at.is_(None))
    items, next_cursor = keyset_page(session, stmt, Notification.created_at, Notification.public_id, limit=limit,
                                     cursor=cursor)
    return NotificationPage(items, next_cursor)


def mark_department_notification_read(session: Session, department: Department, public_id: str, *,
                                      now: datetime) -> Notification:
    """Mark one of the department's notifications read; reading it again keeps the first time. Others' are 404."""
    notification = session.scalar(select(Notification).where(Notification.public_id == public_id,
                                                              Notification.department_id == department.id))
    if notification is None:
        raise NotificationNotFound()
    if notification.read_at is None:
        notification.read_at = now
        session.flush()
    return notification
