"""The holder's usage history (用证记录): who checked or used their (and their companies') certificates, when, why,
and which fields."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session, selectinload

from backend.catalog.definitions import definition_as_issued
from backend.core.db.paging import keyset_page
from backend.models import Certificate, Department, Holder, UsageRecord
from backend.wallet.queries import Owner, owners

PUBLIC_VERIFIER = "公众扫码"
# Names of the non-face claims a usage record may list (the face's come from the catalog).
CLAIM_LABELS = {"holder.name": "持证主体名称", "holder.code_type": "持证主体代码类型", "holder.code": "持证主体代码",
                "document.number": "证照编号"}


@dataclass(frozen=True)
class UsageEntry:
    record: UsageRecord
    certificate: Certificate
    owner: Owner
    verifier_name: str
    fields: list[tuple[str, str]]  # (name, Chinese label)


@dataclass(frozen=True)
class UsagePage:
    items: list[UsageEntry]
    next_cursor: str | None


def field_labels(definition: dict[str, Any], names: Sequence[str]) -> list[tuple[str, str]]:
    """Chinese labels of the shown or disclosed fields: face fields by catalog, the rest by claim name."""
    face = {spec["name"]: spec["label"] for spec in definition["fields"]}
    return [(name, CLAIM_LABELS.get(name) or face.get(name.removeprefix("face."), name)) for name in names]


def list_usage(session: Session, holder: Holder, *, now: datetime, max_age: timedelta, limit: int = 20,
               cursor: str | None = None) -> UsagePage:
    """Who used the holder's (and their current companies') certificates, when, for what, which fields, newest first."""
    by_index = owners(holder, now=now, max_age=max_age)
    stmt = select(UsageRecord).where(UsageRecord.holder_index.in_(list(by_index)))
    records, next_cursor = keyset_page(session, stmt, UsageRecord.occurred_at, UsageRecord.public_id, limit=limit,
                                       cursor=cursor)
    certificates = {c.id: c for c in session.scalars(
        select(Certificate).where(Certificate.id.in_({r.certificate_id for r in records}))
        .options(selectinload(Certificate.certificate_type)))}
    department_ids = {r.verifier_department_id for r in records if r.verifier_department_id is not None}
    departments = {d.id: d.name for d in session.scalars(select(Department).where(Department.id.in_(department_ids)))}
    items = []
    for record in records:
        certificate = certificates[record.certificate_id]
        if record.verifier_department_id is not None:
            verifier = departments[record.verifier_department_id]
        else:
            verifier = PUBLIC_VERIFIER if record.verifier_kind == "public" else "部门业务系统"
        items.append(UsageEntry(record, certificate, by_index[record.holder_index], verifier,
                                field_labels(definition_as_issued(session, certificate), record.fields or [])))
    return UsagePage(items, next_cursor)
