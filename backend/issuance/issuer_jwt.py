"""Trusting the issuer-signed JWT of an SD-JWT VC: key (retired too), signature, issuer, type, identifier, and the
stored certificate its status-list entry (or identifier) names."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date
from typing import Any

from sqlalchemy import and_, bindparam, select
from sqlalchemy.orm import Session

from backend.core.db import rows
from backend.crypto import jws
from backend.crypto.jwk import SUPPORTED_ALGS, JWKError
from backend.crypto.jws import CompactJWS, JWSError
from backend.crypto.sdjwt import ISSUED_TYP
from backend.errors import DomainError
from backend.issuance.issuer import issuer_uri
from backend.kernel.identifiers import CertificateIdentifier, parse_identifier
from backend.keys.keystore import PURPOSE_CERTIFICATE, KeyStore, VerificationKey
from backend.models import (
    Certificate,
    CertificateType,
    Department,
    StatusList,
    certificate_type_issuer,
)

# Stable reason codes (the API's `reasons`) of the issuer JWT's checks.
MALFORMED = "malformed"
WRONG_TYP = "wrong_typ"
UNSUPPORTED_ALG = "unsupported_alg"
UNKNOWN_KEY = "unknown_key"
BAD_SIGNATURE = "bad_signature"
WRONG_ISSUER = "wrong_issuer"
UNKNOWN_TYPE = "unknown_type"
TYPE_MISMATCH = "type_mismatch"
IDENTIFIER_MISMATCH = "identifier_mismatch"
UNKNOWN_STATUS_LIST = "unknown_status_list"


class Rejected(Exception):
    """The issuer-signed JWT cannot be trusted; nothing in it is used."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


@dataclass(frozen=True)
class SigningDepartment:
    id: int
    code: str
    name: str


@dataclass(frozen=True)
class SignedType:
    type_code: str
    name: str


@dataclass(frozen=True)
class StoredRecord:
    """What a verdict reads of our stored certificate."""

    identifier: str
    status: str
    valid_from: date
    valid_until: date | None


@dataclass
class Authentic:
    """An issuer JWT whose signature, issuer, type and identifier checked out."""

    payload: dict[str, Any]
    key: VerificationKey
    department: SigningDepartment
    certificate_type: SignedType
    identifier: CertificateIdentifier
    identifier_value: str  # identifier.value, computed once (its check character is not free)


def _parse_jws(token: str) -> CompactJWS:
    try:
        return jws.parse(token)
    except JWSError as exc:
        raise Rejected(MALFORMED) from exc


# The key's department, the token's type and whether that department issues it: one row, one query.
_ISSUER_AND_TYPE = (
    select(Department.id, Department.code, Department.name, CertificateType.type_code,
           CertificateType.name.label("type_name"), certificate_type_issuer.c.department_id.label("issues"))
    .select_from(Department)
    .outerjoin(CertificateType, CertificateType.type_code == bindparam("type_code"))
    .outerjoin(certificate_type_issuer, and_(certificate_type_issuer.c.certificate_type_id == CertificateType.id,
                                             certificate_type_issuer.c.department_id == Department.id))
    .where(Department.id == bindparam("department_id"))
)


def authenticate(session: Session, keys: KeyStore, issuer_jwt: str, public_url: str) -> Authentic:
    """Header, key (retired keys too: rotation must not break old certificates), signature, issuer, type."""
    token = _parse_jws(issuer_jwt)
    header = token.header
    if header.get("typ") != ISSUED_TYP:
        raise Rejected(WRONG_TYP)
    if header.get("alg") not in SUPPORTED_ALGS:
        raise Rejected(UNSUPPORTED_ALG)
    kid = header.get("kid")
    if not isinstance(kid, str) or not kid:
        raise Rejected(UNKNOWN_KEY)
    try:
        key = keys.verification_key(kid)
    except (DomainError, JWKError) as exc:
        raise Rejected(UNKNOWN_KEY) from exc
    if key.purpose != PURPOSE_CERTIFICATE or key.department_id is None:
        raise Rejected(UNKNOWN_KEY)  # a platform or wallet key never signs certificates
    try:
        token.verify(key.public, key.alg)
    except JWSError as exc:
        raise Rejected(BAD_SIGNATURE) from exc
    payload = token.payload

    vct = payload.get("vct")
    type_code = vct.removeprefix("urn:ecert:") if isinstance(vct, str) and vct.startswith("urn:ecert:") else None
    found = rows.execute(session, _ISSUER_AND_TYPE,
                         {"type_code": type_code, "department_id": key.department_id}).first()
    if found is None:
        raise Rejected(UNKNOWN_KEY)
    department = SigningDepartment(found.id, found.code, found.name)
    if payload.get("iss") != issuer_uri(public_url, department.code):
        raise Rejected(WRONG_ISSUER)
    if found.type_code is None:
        raise Rejected(UNKNOWN_TYPE)
    if found.issues is None:
        raise Rejected(WRONG_ISSUER)
    ctype = SignedType(found.type_code, found.type_name)
    if payload.get("type_code", ctype.type_code) != ctype.type_code:
        raise Rejected(TYPE_MISMATCH)
    claimed = payload.get("identifier")
    try:
        identifier = parse_identifier(claimed if isinstance(claimed, str) else "", field="identifier")
    except DomainError as exc:
        raise Rejected(MALFORMED) from exc
    if identifier.type_code != ctype.type_code or identifier.issuer_code != department.code \
            or payload.get("version") != identifier.version:
        raise Rejected(IDENTIFIER_MISMATCH)
    return Authentic(payload, key, department, ctype, identifier, identifier.value)


_MAX_LIST_SIZE = 2**31  # beyond any status list, and within what every database stores as an integer


# What a verdict needs of the certificate: its identity, status and validity (not its encrypted data).
_RECORD_COLUMNS = (Certificate.identifier, Certificate.status, Certificate.valid_from, Certificate.valid_until)
_SLOT = (select(StatusList.size, *_RECORD_COLUMNS).select_from(StatusList)
         .outerjoin(Certificate, and_(Certificate.status_list_id == StatusList.id,
                                      Certificate.status_index == bindparam("idx")))
         .where(StatusList.department_id == bindparam("department_id"),
                StatusList.list_number == bindparam("list_number")))
_BY_IDENTIFIER = select(*_RECORD_COLUMNS).where(Certificate.identifier == bindparam("identifier"))


def _slot_holder(session: Session, department: SigningDepartment, reference: dict[str, Any],
                 public_url: str) -> tuple[bool, StoredRecord | None]:
    """(resolved, the certificate holding the slot or None if it is free) for a reference to our list."""
    prefix = f"{public_url}/status-lists/{department.code}/"
    uri, idx = reference.get("uri"), reference.get("idx")
    number = uri[len(prefix):] if isinstance(uri, str) and uri.startswith(prefix) else ""
    if not number.isdigit() or len(number) > 9 or not isinstance(idx, int) or isinstance(idx, bool) \
            or not 0 <= idx < _MAX_LIST_SIZE:
        return False, None
    # The list and the certificate in its slot (if any) in one query.
    found = rows.execute(session, _SLOT,
                         {"idx": idx, "department_id": department.id, "list_number": int(number)}).first()
    if found is None or idx >= found.size:
        return False, None
    return True, None if found.identifier is None else StoredRecord(found.identifier, found.status,
                                                                      found.valid_from, found.valid_until)


def stored_certificate(session: Session, auth: Authentic, public_url: str, reasons: list[str]) -> StoredRecord | None:
    """Resolve the token's status-list entry to our certificate; synced tokens without our entry by identifier.

    A list's bits are derived from the certificates holding its slots, so the certificate at (list, idx)
    gives exactly the published value.
    """
    status = auth.payload.get("status")
    reference = status.get("status_list") if isinstance(status, dict) else None
    if isinstance(reference, dict) and str(reference.get("uri", "")).startswith(f"{public_url}/status-lists/"):
        resolved, holder = _slot_holder(session, auth.department, reference, public_url)
        if not resolved:
            reasons.append(UNKNOWN_STATUS_LIST)
        elif holder is not None and holder.identifier == auth.identifier_value:
            return holder
    # A certificate synced from a department's own system carries that system's status reference (or none).
    found = rows.execute(session, _BY_IDENTIFIER, {"identifier": auth.identifier_value}).first()
    return None if found is None else StoredRecord(found.identifier, found.status, found.valid_from,
                                                   found.valid_until)
