"""What a holder may see: their own certificates and their represented companies', scoped by blind index
(backend/wallet/README.md); the hot paths read `*Row` tuples of plain columns."""

from __future__ import annotations

import functools
import json
from dataclasses import dataclass
from datetime import date, datetime, timedelta
from typing import Any, Literal, NamedTuple, Protocol

from sqlalchemy import BindParameter, Select, and_, bindparam, not_, or_, select
from sqlalchemy.orm import Session

from backend.audit.chain import record_event
from backend.catalog.definitions import definition_as_issued
from backend.core.db import rows
from backend.core.db.paging import decode_cursor, encode_cursor
from backend.crypto.encryption import FieldCipher
from backend.crypto.masking import mask_certificate_number, mask_holder_code
from backend.errors import Forbidden, NotFound, ValidationFailed
from backend.identity.citizens import current_representations
from backend.issuance.certificates import STATUS_LABELS, version_history
from backend.kernel.actors import Actor
from backend.models import Certificate, CertificateType, Department, Holder
from backend.models.issuance import EXPIRED, REVOKED, SUPERSEDED, SUSPENDED, VALID

OwnerKind = Literal["self", "company"]
LONG_TERM = "长期"


def holder_indexes(holder: Holder, *, now: datetime, max_age: timedelta) -> dict[str, str | None]:
    """Blind index → company code (None for the holder's own certificates); companies asserted within `max_age`."""
    indexes: dict[str, str | None] = {holder.id_index: None}
    for representation in current_representations(holder, now=now, max_age=max_age):
        indexes[representation.company_index] = representation.company_code
    return indexes


def find_holder_certificate(session: Session, holder: Holder, public_id: str, *, now: datetime,
                            max_age: timedelta) -> Certificate:
    """A certificate the holder holds or currently represents; anyone else's is a 404, never a 403 (no existence
    oracle). `now` is the request's clock; `max_age` is ECERT_REPRESENTATION_MAX_AGE."""
    certificate = session.scalar(select(Certificate).where(Certificate.public_id == public_id))
    if certificate is None or certificate.holder_index not in holder_indexes(holder, now=now, max_age=max_age):
        raise NotFound("证照不存在", code="certificate_not_found")
    return certificate


class HeldCertificateRow(NamedTuple):
    """A certificate's identity, status and validity as plain columns: what minting a show code needs of it."""

    id: int
    public_id: str
    identifier: str
    holder_index: str
    status: str
    valid_from: date
    valid_until: date | None


_HELD = rows.selecting(HeldCertificateRow, select(
    Certificate.id, Certificate.public_id, Certificate.identifier, Certificate.holder_index, Certificate.status,
    Certificate.valid_from, Certificate.valid_until).where(Certificate.public_id == bindparam("public_id")))


def find_held_certificate(session: Session, holder: Holder, public_id: str, *, now: datetime,
                          max_age: timedelta) -> HeldCertificateRow:
    """`find_holder_certificate` reading only identity, status and validity (no entity, no encrypted columns)."""
    row = rows.execute(session, _HELD, {"public_id": public_id}).first()
    if row is None or row.holder_index not in holder_indexes(holder, now=now, max_age=max_age):
        raise NotFound("证照不存在", code="certificate_not_found")
    return HeldCertificateRow._make(row)


class CheckedCertificateRow(NamedTuple):
    """What a show-code check reads of the certificate a code names, with its type and issuer: one joined row."""

    id: int
    public_id: str
    identifier: str
    version: int
    holder_index: str
    holder_code_type: str
    status: str
    valid_from: date
    valid_until: date | None
    holder_name_enc: bytes
    face_enc: bytes
    type_id: int
    type_code: str
    type_name: str
    type_hash: str  # content hash of the type's current catalog definition
    issuer_code: str
    issuer_name: str


_CHECKED = rows.selecting(CheckedCertificateRow, select(
    Certificate.id, Certificate.public_id, Certificate.identifier, Certificate.version, Certificate.holder_index,
    Certificate.holder_code_type, Certificate.status, Certificate.valid_from, Certificate.valid_until,
    Certificate.holder_name_enc, Certificate.face_enc, CertificateType.id.label("type_id"), CertificateType.type_code,
    CertificateType.name.label("type_name"), CertificateType.content_hash.label("type_hash"),
    Department.code.label("issuer_code"), Department.name.label("issuer_name"))
    .join(CertificateType, CertificateType.id == Certificate.certificate_type_id)
    .join(Department, Department.id == Certificate.issuer_department_id)
    .where(Certificate.public_id == bindparam("public_id")))


def checked_certificate(session: Session, public_id: str) -> CheckedCertificateRow | None:
    """The certificate a show code names, with its type and issuer (every check's answer names them): one query of
    plain columns, not three of entities; None when it is gone."""
    row = rows.execute(session, _CHECKED, {"public_id": public_id}).first()
    return None if row is None else CheckedCertificateRow._make(row)


# -- owners and statuses ----------------------------------------------------------------------------------

@dataclass(frozen=True)
class Owner:
    """Whose certificate it is from the holder's point of view: their own, or a represented company's."""

    kind: OwnerKind
    code: str | None = None  # the company's 统一社会信用代码; None for the holder's own
    name: str | None = None


def owners(holder: Holder, *, now: datetime, max_age: timedelta) -> dict[str, Owner]:
    """Blind index → owner, for the holder and every company they currently represent."""
    result = {holder.id_index: Owner("self")}
    for representation in current_representations(holder, now=now, max_age=max_age):
        result[representation.company_index] = Owner("company", representation.company_code,
                                                     representation.company_name)
    return result


def _lapsed(today: date | BindParameter[date]) -> Any:
    return and_(Certificate.valid_until.is_not(None), Certificate.valid_until < today)


class Dated(Protocol):
    """A certificate's status and last day: a Certificate, or a row of plain columns."""

    @property
    def status(self) -> str: ...

    @property
    def valid_until(self) -> date | None: ...


def effective_status(certificate: Dated, today: date) -> str:
    """The stored status, except that a valid or suspended certificate past its last day is expired already,
    even before the nightly expiry sweep has marked it so (the same rule as verification)."""
    if certificate.status in (VALID, SUSPENDED) and certificate.valid_until is not None \
            and certificate.valid_until < today:
        return EXPIRED
    return certificate.status


def _status_filter(status: str | None, today: date | BindParameter[date]) -> Any:
    """SQL for the effective status; no status = every current version (superseded ones hidden)."""
    if status is None:
        return Certificate.status != SUPERSEDED
    if status in (VALID, SUSPENDED):
        return and_(Certificate.status == status, not_(_lapsed(today)))
    if status == EXPIRED:
        return or_(Certificate.status == EXPIRED, and_(Certificate.status.in_((VALID, SUSPENDED)), _lapsed(today)))
    return Certificate.status == status


def status_label(status: str) -> str:
    return STATUS_LABELS.get(status, status)


# -- the wallet list --------------------------------------------------------------------------------------

class ListedCertificateRow(NamedTuple):
    """What a wallet list shows of a certificate, with its type and issuer: plain columns of one joined row."""

    public_id: str
    holder_index: str
    status: str
    valid_from: date
    valid_until: date | None
    version: int
    created_at: datetime
    type_code: str
    type_name: str
    issuer_code: str
    issuer_name: str
    number_enc: bytes  # decrypted only to be shown masked (WalletItem.number_masked)


@dataclass(frozen=True)
class WalletItem:
    certificate: ListedCertificateRow
    owner: Owner
    status: str  # effective status
    number_masked: str


@dataclass(frozen=True)
class WalletPage:
    items: list[WalletItem]
    next_cursor: str | None


def _selected_indexes(by_index: dict[str, Owner], owner: OwnerKind | None, company: str | None) -> list[str]:
    if company is not None:
        if owner == "self":
            raise ValidationFailed.for_field("company", "conflicts_with_owner", "owner=self 时不能指定 company")
        selected = [index for index, o in by_index.items() if o.code == company]
        if not selected:
            raise Forbidden("您未代表该企业，不能查看其证照", code="not_company_representative",
                            details={"company": company})
        return selected
    return [index for index, o in by_index.items() if owner is None or o.kind == owner]


def certificate_number(cipher: FieldCipher, certificate: Certificate) -> str:
    return cipher.decrypt(certificate.number_enc, f"certificate:{certificate.public_id}:number")


# What a list shows: these columns only, with the type's and issuer's names, in one query of plain rows (loading
# entities with their type and issuer cost more than the rest of the request; SD-JWTs and faces are most of a
# certificate's bytes).
_LISTED = rows.selecting(ListedCertificateRow, (
    select(Certificate.public_id, Certificate.holder_index, Certificate.status, Certificate.valid_from,
           Certificate.valid_until, Certificate.version, Certificate.created_at, CertificateType.type_code,
           CertificateType.name.label("type_name"), Department.code.label("issuer_code"),
           Department.name.label("issuer_name"), Certificate.number_enc)
    .join(CertificateType, CertificateType.id == Certificate.certificate_type_id)
    .join(Department, Department.id == Certificate.issuer_department_id)
))


_Rows = Select[*tuple[Any, ...]]  # a query of plain columns


# Built once per combination (building it cost as much as running it). A pure function of its arguments over the
# models, the same for every app (no config, no keys, values are bound parameters): a process-wide memo is right.
@functools.lru_cache(maxsize=64)
def _list_statement(status: str | None, by_type: bool, after_cursor: bool) -> _Rows:
    """The list's query for one combination of filters; parameters: indexes, today, limit, type_code, at and after
    (the cursor's position)."""
    stmt: _Rows = _LISTED.where(Certificate.holder_index.in_(bindparam("indexes", expanding=True)),
                                _status_filter(status, bindparam("today")))
    if by_type:
        stmt = stmt.where(CertificateType.type_code == bindparam("type_code"))
    if after_cursor:  # keyset pagination as backend/core/db/paging.py: newest first, ties by public id
        stmt = stmt.where(or_(Certificate.created_at < bindparam("at"),
                              and_(Certificate.created_at == bindparam("at"),
                                   Certificate.public_id < bindparam("after"))))
    return stmt.order_by(Certificate.created_at.desc(), Certificate.public_id.desc()).limit(bindparam("limit"))


def list_wallet_certificates(session: Session, cipher: FieldCipher, holder: Holder, *, now: datetime,
                             max_age: timedelta, today: date,
                             owner: OwnerKind | None = None, company: str | None = None,
                             type_code: str | None = None, status: str | None = None, limit: int = 20,
                             cursor: str | None = None) -> WalletPage:
    """The holder's certificates and their represented companies', newest first; current versions unless
    `status` asks for superseded ones. Only the certificate number is decrypted (and shown masked).

    Keyset-paginated like every list (backend/core/db/paging.py), on plain rows rather than entities."""
    by_index = owners(holder, now=now, max_age=max_age)
    selected = _selected_indexes(by_index, owner, company)
    params: dict[str, Any] = {"indexes": selected, "today": today, "limit": limit + 1, "type_code": type_code}
    if cursor:
        params["at"], params["after"] = decode_cursor(cursor)
    stmt = _list_statement(status, type_code is not None, bool(cursor))
    found = rows.execute(session, stmt, params).all()
    items = []
    for row in found[:limit]:
        listed = ListedCertificateRow._make(row)
        number = cipher.decrypt(listed.number_enc, f"certificate:{listed.public_id}:number")
        items.append(WalletItem(listed, by_index[listed.holder_index], effective_status(listed, today),
                                mask_certificate_number(number)))
    last = items[-1].certificate if len(found) > limit else None
    return WalletPage(items, encode_cursor(last.created_at, last.public_id) if last else None)


# -- one certificate --------------------------------------------------------------------------------------

@dataclass(frozen=True)
class FaceEntry:
    name: str
    label: str
    value: Any
    sensitivity: int


@dataclass(frozen=True)
class CertificateView:
    """A certificate as its holder sees it: decrypted face in catalog order, versions, where the current one is."""

    certificate: Certificate
    owner: Owner
    status: str  # effective status
    holder_name: str
    holder_code_masked: str
    number: str
    fields: list[FaceEntry]
    versions: list[Certificate]
    current_version: Certificate | None  # the newest version of the serial when this is not it
    notice: str | None


def face_entries(definition: dict[str, Any], values: dict[str, Any]) -> list[FaceEntry]:
    """The face fields present on the certificate, in catalog order, each with its Chinese label."""
    entries = [FaceEntry(spec["name"], spec["label"], values[spec["name"]], int(spec["sensitivity"]))
               for spec in definition["fields"] if values.get(spec["name"]) is not None]
    known = {spec["name"] for spec in definition["fields"]}
    # A field the catalog no longer describes is still the holder's data: shown last, under its name.
    entries += [FaceEntry(name, name, value, 4) for name, value in values.items()
                if name not in known and value is not None]
    return entries


def _notice(certificate: Certificate, status: str, newest: Certificate) -> str | None:
    if status == SUPERSEDED:
        return f"该证照已更新为第 {newest.version} 版，本版本已失效，请使用最新版本。"
    if status == REVOKED:
        reason = f"原因：{certificate.status_reason}" if certificate.status_reason else ""
        return f"该证照已注销，不再有效。{reason}"
    if status == SUSPENDED:
        reason = f"原因：{certificate.status_reason}" if certificate.status_reason else ""
        return f"该证照已中止效力，恢复前不能使用。{reason}"
    if status == EXPIRED:
        return f"该证照已超过有效期（{certificate.valid_until}），不再有效。"
    return None


def view_certificate(session: Session, cipher: FieldCipher, holder: Holder, public_id: str, *, actor: Actor,
                     now: datetime, max_age: timedelta, today: date) -> CertificateView:
    """Decrypt one of the holder's certificates for display and audit the reading (wallet.certificate_viewed)."""
    certificate = find_holder_certificate(session, holder, public_id, now=now, max_age=max_age)
    owner = owners(holder, now=now, max_age=max_age)[certificate.holder_index]
    context = f"certificate:{certificate.public_id}"
    holder_name = cipher.decrypt(certificate.holder_name_enc, f"{context}:holder_name")
    holder_code = cipher.decrypt(certificate.holder_code_enc, f"{context}:holder_code")
    number = cipher.decrypt(certificate.number_enc, f"{context}:number")
    values = json.loads(cipher.decrypt(certificate.face_enc, f"{context}:face"))
    versions = [v for v in version_history(session, certificate) if v.holder_index == certificate.holder_index]
    newest = versions[-1] if versions else certificate
    status = effective_status(certificate, today)
    record_event(session, actor=actor, action="wallet.certificate_viewed", now=now, object_type="certificate",
                 object_id=certificate.identifier,
                 details={"owner": owner.kind, **({"company": owner.code} if owner.code else {})})
    return CertificateView(
        certificate=certificate, owner=owner, status=status, holder_name=holder_name,
        holder_code_masked=mask_holder_code(certificate.holder_code_type, holder_code), number=number,
        fields=face_entries(definition_as_issued(session, certificate), values), versions=versions,
        current_version=newest if newest.id != certificate.id else None,
        notice=_notice(certificate, status, newest),
    )
