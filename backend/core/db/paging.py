"""Keyset pagination (分页) for every list: newest first, after an opaque cursor over (time, public_id)."""

from __future__ import annotations

import base64
import binascii
import re
from datetime import UTC, datetime
from typing import TypeVar

from sqlalchemy import Select, and_, or_
from sqlalchemy.orm import InstrumentedAttribute, Session

from backend.errors import ValidationFailed

T = TypeVar("T")
_PUBLIC_ID = re.compile(r"[0-9a-f]{32}")


def encode_cursor(moment: datetime, public_id: str) -> str:
    raw = f"{moment.astimezone(UTC).isoformat()}|{public_id}".encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def decode_cursor(cursor: str) -> tuple[datetime, str]:
    """The (UTC time, public_id) position after which the next page starts; anything else is a 422 on `cursor`."""
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)).decode()
        moment, _, public_id = raw.partition("|")
        at = datetime.fromisoformat(moment)
        if at.tzinfo is None or not _PUBLIC_ID.fullmatch(public_id):
            raise ValueError(raw)
        # Out of range once in UTC (e.g. 0001-01-01T00:00:00+01:00): OverflowError, not a 500 from the database.
        return at.astimezone(UTC), public_id
    except (binascii.Error, UnicodeDecodeError, ValueError, OverflowError) as exc:
        raise ValidationFailed.for_field("cursor", "invalid_cursor", "分页游标无效") from exc


def keyset_page(session: Session, stmt: Select[T], moment: InstrumentedAttribute[datetime],
                public_id: InstrumentedAttribute[str], *, limit: int, cursor: str | None) -> tuple[list[T], str | None]:
    """Newest first (ties broken by public id), `limit` rows after the cursor's position; with the cursor of the
    next page, or None on the last page."""
    if cursor:
        at, after = decode_cursor(cursor)
        stmt = stmt.where(or_(moment < at, and_(moment == at, public_id < after)))
    rows = list(session.scalars(stmt.order_by(moment.desc(), public_id.desc()).limit(limit + 1)))
    items = rows[:limit]
    if len(rows) <= limit:
        return items, None
    last = items[-1]
    return items, encode_cursor(getattr(last, moment.key), getattr(last, public_id.key))
