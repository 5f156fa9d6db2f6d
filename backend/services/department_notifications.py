"""A department's inbox: notifications addressed to it (expiry digests, …), newest first, marked read."""

from __future__ import annotations

import base64
import binascii
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import and_, or_, select
from sqlalchemy.orm import Session

from backend.errors import NotFound, ValidationFailed
from backend.models import Department, Notification


class NotificationNotFound(NotFound):
    code = "notification_not_found"
    message = "通知不存在"


@dataclass(frozen=True)
class NotificationPage:
    items: list[Notification]
    next_cursor: str | None


def _encode_cursor(notification: Notification) -> str:
    raw = f"{notification.created_at.isoformat()}|{notification.id}".encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def _decode_cursor(cursor: str) -> tuple[datetime, int]:
    """The (created_at, id) position after which the next page starts; anything else is a 422 on `cursor`."""
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)).decode()
        moment, _, ident = raw.partition("|")
        created_at = datetime.fromisoformat(moment)
        if created_at.tzinfo is None or not ident.isdigit():
            raise ValueError(raw)
        return created_at, int(ident)
    except (binascii.Error, UnicodeDecodeError, ValueError) as exc:
        raise ValidationFailed.for_field("cursor", "invalid_cursor", "分页游标无效") from exc


def list_department_notifications(session: Session, department: Department, *, limit: int, cursor: str | None = None,
                                  unread_only: bool = False) -> NotificationPage:
    """The department's notifications, newest first, `limit` per page with an opaque cursor to the next page."""
    stmt = select(Notification).where(Notification.department_id == department.id)
    if unread_only:
        stmt = stmt.where(Notification.read_at.is_(None))
    if cursor:
        created_at, ident = _decode_cursor(cursor)
        stmt = stmt.where(or_(Notification.created_at < created_at,
                              and_(Notification.created_at == created_at, Notification.id < ident)))
    rows = list(session.scalars(stmt.order_by(Notification.created_at.desc(), Notification.id.desc()).limit(limit + 1)))
    more = len(rows) > limit
    items = rows[:limit]
    return NotificationPage(items, _encode_cursor(items[-1]) if more else None)


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
