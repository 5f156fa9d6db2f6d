"""Finding objections: the issuing department's queue, the holder's list, one objection for either."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import select
from sqlalchemy.orm import Session, selectinload

from backend.core.db.paging import keyset_page
from backend.models import Certificate, Department, Holder
from backend.models.objections import Objection, ObjectionEscalation
from backend.objections.errors import ObjectionNotFound


@dataclass(frozen=True)
class ObjectionPage:
    items: list[Objection]
    next_cursor: str | None


_WITH_CERTIFICATE = (selectinload(Objection.certificate).selectinload(Certificate.certificate_type),
                     selectinload(Objection.department))


def department_queue(session: Session, *, department: Department | None, status: str | None = None,
                     limit: int = 20, cursor: str | None = None, now: datetime | None = None) -> ObjectionPage:
    """The objections in a department's queue (None: every department's, for city administrators), newest first.
    `now` is accepted for symmetry with the views; overdue flags come from `overdue(objection, now)`."""
    stmt = select(Objection).options(*_WITH_CERTIFICATE)
    if department is not None:
        stmt = stmt.where(Objection.department_id == department.id)
    if status is not None:
        stmt = stmt.where(Objection.status == status)
    items, next_cursor = keyset_page(session, stmt, Objection.created_at, Objection.public_id, limit=limit,
                                     cursor=cursor)
    return ObjectionPage(items, next_cursor)


def get_for_department(session: Session, public_id: str, *, department: Department | None) -> Objection:
    """One objection of the department's queue (None: any, for city administrators); others are 404."""
    objection = session.scalar(select(Objection).where(Objection.public_id == public_id).options(*_WITH_CERTIFICATE))
    if objection is None or (department is not None and objection.department_id != department.id):
        raise ObjectionNotFound()
    return objection


def holder_objections(session: Session, *, holder: Holder, status: str | None = None, limit: int = 20,
                      cursor: str | None = None) -> ObjectionPage:
    """The objections the holder filed, newest first."""
    stmt = select(Objection).where(Objection.filer_holder_id == holder.id).options(*_WITH_CERTIFICATE)
    if status is not None:
        stmt = stmt.where(Objection.status == status)
    items, next_cursor = keyset_page(session, stmt, Objection.created_at, Objection.public_id, limit=limit,
                                     cursor=cursor)
    return ObjectionPage(items, next_cursor)


def get_for_holder(session: Session, public_id: str, *, holder: Holder) -> Objection:
    """One of the objections the holder filed; anyone else's is a 404."""
    objection = session.scalar(select(Objection).where(Objection.public_id == public_id).options(*_WITH_CERTIFICATE))
    if objection is None or objection.filer_holder_id != holder.id:
        raise ObjectionNotFound()
    return objection


def escalated_ids(session: Session, objections: Sequence[Objection]) -> set[int]:
    """Ids of the objections among these that were escalated for a missed deadline (for a queue's badges)."""
    ids = [o.id for o in objections]
    if not ids:
        return set()
    return set(session.scalars(select(ObjectionEscalation.objection_id)
                               .where(ObjectionEscalation.objection_id.in_(ids))))
