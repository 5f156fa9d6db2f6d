"""The calling department's notifications (通知): expiry digests and other messages addressed to it."""

from __future__ import annotations

from typing import Any

from flask import Response, g, jsonify
from flask_openapi3 import APIBlueprint, Tag
from pydantic import BaseModel, Field

from backend.auth.clients import BEARER_SECURITY, require_scope
from backend.core.context import now
from backend.extensions import db
from backend.models import Notification
from backend.notifications import departments as service
from backend.schemas import AUTH_ERRORS, COMMON_ERRORS, CURSOR_FIELD, LIMIT_FIELD, StrictModel, error_responses

bp = APIBlueprint("gov_notifications", __name__, url_prefix="/gov/v1/notifications",
                  abp_tags=[Tag(name="gov-notifications", description="部门通知")], abp_security=BEARER_SECURITY)


class DepartmentNotificationQuery(StrictModel):
    limit: int = LIMIT_FIELD
    cursor: str | None = CURSOR_FIELD
    unread: bool = Field(default=False, description="only notifications not yet marked read")


class DepartmentNotificationPath(BaseModel):
    notification_id: str = Field(max_length=64, description="the notification's id")


class DepartmentNotificationOut(BaseModel):
    id: str
    kind: str = Field(description="e.g. department_expiry_digest")
    title: str
    body: str
    data: dict[str, Any]
    created_at: str
    read_at: str | None


class DepartmentNotificationList(BaseModel):
    items: list[DepartmentNotificationOut]
    next_cursor: str | None = Field(description="pass as `cursor` for the next page; null on the last page")


def notification_out(notification: Notification) -> dict[str, Any]:
    return DepartmentNotificationOut(
        id=notification.public_id, kind=notification.kind, title=notification.title, body=notification.body,
        data=notification.data, created_at=notification.created_at.isoformat(),
        read_at=notification.read_at.isoformat() if notification.read_at else None,
    ).model_dump()


@bp.get("", responses={200: DepartmentNotificationList, **error_responses(*COMMON_ERRORS, *AUTH_ERRORS, 422)})
@require_scope("issue")
def list_notifications(query: DepartmentNotificationQuery) -> Response:
    """The calling department's notifications, newest first, paginated by an opaque cursor."""
    page = service.list_department_notifications(db.session(), g.client.department, limit=query.limit,
                                                 cursor=query.cursor, unread_only=query.unread)
    items = [DepartmentNotificationOut(**notification_out(n)) for n in page.items]
    return jsonify(DepartmentNotificationList(items=items, next_cursor=page.next_cursor).model_dump())


@bp.post("/<notification_id>/read",
         responses={200: DepartmentNotificationOut, **error_responses(*COMMON_ERRORS, *AUTH_ERRORS, 404, 422)})
@require_scope("issue")
def mark_read(path: DepartmentNotificationPath) -> Response:
    """Mark one of the department's notifications read (idempotent); another department's is not found."""
    notification = service.mark_department_notification_read(db.session(), g.client.department,
                                                              path.notification_id, now=now())
    return jsonify(notification_out(notification))
