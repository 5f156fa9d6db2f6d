"""The citizen's inbox (消息): issuance, changes, expiry reminders and uses of their certificates."""

from __future__ import annotations

from flask import Response, g, jsonify
from flask_openapi3 import APIBlueprint, Tag
from pydantic import BaseModel, Field

from backend.auth.citizens import CITIZEN_SECURITY, require_citizen
from backend.core.context import now, representation_max_age
from backend.extensions import db
from backend.notifications import inbox as service
from backend.schemas import AUTH_ERRORS, COMMON_ERRORS, CURSOR_FIELD, LIMIT_FIELD, StrictModel, error_responses
from miniapp_api.wallet import OwnerOut, owner_out

bp = APIBlueprint("citizen_notifications", __name__, url_prefix="/api/v1/notifications",
                  abp_tags=[Tag(name="notifications", description="消息通知")], abp_security=CITIZEN_SECURITY)


class NotificationQuery(StrictModel):
    unread: bool = Field(default=False, description="only notifications not yet marked read")
    limit: int = LIMIT_FIELD
    cursor: str | None = CURSOR_FIELD


class NotificationPath(BaseModel):
    notification_id: str = Field(max_length=64, description="the notification's id")


class NotificationOut(BaseModel):
    id: str
    kind: str = Field(description="certificate_issued | certificate_reissued | certificate_suspended | "
                                  "certificate_resumed | certificate_revoked | certificate_expired | expiry_reminder | "
                                  "grant_created | certificate_used | counter_consent | objection_received | "
                                  "objection_accepted | objection_rejected | objection_resolved | "
                                  "objection_reported (a department reported a problem with the certificate)")
    title: str
    body: str
    certificate_id: str | None = Field(description="the certificate's wallet id, if the message is about one")
    owner: OwnerOut = Field(description="whose certificate: the holder's own or a represented company's")
    created_at: str
    read_at: str | None


class NotificationList(BaseModel):
    items: list[NotificationOut]
    next_cursor: str | None = Field(description="pass as `cursor` for the next page; null on the last page")
    unread_count: int = Field(description="unread notifications in the whole inbox (for the badge)")


def notification_out(item: service.InboxItem) -> NotificationOut:
    notification = item.notification
    return NotificationOut(
        id=notification.public_id, kind=notification.kind, title=notification.title, body=notification.body,
        certificate_id=item.certificate_public_id, owner=owner_out(item.owner),
        created_at=notification.created_at.isoformat(),
        read_at=notification.read_at.isoformat() if notification.read_at else None)


@bp.get("", responses={200: NotificationList, **error_responses(*COMMON_ERRORS, *AUTH_ERRORS, 422)})
@require_citizen
def list_notifications(query: NotificationQuery) -> Response:
    """The holder's notifications (own and represented companies'), newest first, paginated by cursor."""
    page = service.list_holder_notifications(db.session(), g.holder, now=now(), max_age=representation_max_age(),
                                             unread_only=query.unread, limit=query.limit, cursor=query.cursor)
    return jsonify(NotificationList(items=[notification_out(item) for item in page.items],
                                    next_cursor=page.next_cursor, unread_count=page.unread).model_dump())


@bp.post("/<notification_id>/read",
         responses={200: NotificationOut, **error_responses(*COMMON_ERRORS, *AUTH_ERRORS, 404, 422)})
@require_citizen
def mark_read(path: NotificationPath) -> Response:
    """Mark one notification read (idempotent: the first reading time is kept); anyone else's is not found."""
    item = service.mark_holder_notification_read(db.session(), g.holder, path.notification_id, now=now(),
                                                 max_age=representation_max_age())
    return jsonify(notification_out(item).model_dump())
