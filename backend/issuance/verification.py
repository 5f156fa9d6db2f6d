"""Verification for departments (核验): presented SD-JWT VCs (RFC 9901) and bare certificate identifiers."""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from backend.audit.chain import record_event
from backend.crypto.sdjwt import SdJwtFormatError, parse, reconstruct
from backend.errors import AuditNote
from backend.issuance.certificates import CertificateNotFound
from backend.issuance.issuer_jwt import MALFORMED, Authentic, Rejected, StoredRecord, authenticate, stored_certificate
from backend.issuance.key_binding import Presentee, holder_binding
from backend.kernel.actors import Actor
from backend.kernel.china_time import CHINA
from backend.kernel.identifiers import parse_identifier
from backend.keys.deps import Deps
from backend.models import ApiClient, Certificate
from backend.models.issuance import EXPIRED, REVOKED, SUPERSEDED, SUSPENDED, VALID

# Stable reason codes (the API's `reasons`) of the disclosures, validity and status; the issuer JWT's are in
# backend.issuance.issuer_jwt, the key binding's in backend.issuance.key_binding.
MALFORMED_DISCLOSURE = "malformed_disclosure"
DUPLICATE_DISCLOSURE = "duplicate_disclosure"
UNREFERENCED_DISCLOSURE = "unreferenced_disclosure"
NOT_YET_VALID = "not_yet_valid"
CERTIFICATE_NOT_FOUND = "certificate_not_found"
# A certificate that is not `valid` fails with its status as the reason: revoked, suspended, superseded, expired.
STATUS_REASONS = {REVOKED: REVOKED, SUSPENDED: SUSPENDED, SUPERSEDED: SUPERSEDED, EXPIRED: EXPIRED}

UNKNOWN = "unknown"  # `status` when the token cannot be trusted or names no certificate of ours
DISCLOSABLE_OBJECTS = ("holder", "document", "face")
# The compact serialization is base64url segments joined by "." and "~"; anything else is not an SD-JWT.
_COMPACT = re.compile(r"[A-Za-z0-9_\-.~]+")
_DISCLOSURE_REASONS = {
    "duplicate_disclosure": DUPLICATE_DISCLOSURE,
    "duplicate_digest": DUPLICATE_DISCLOSURE,
    "unreferenced_disclosure": UNREFERENCED_DISCLOSURE,
}


@dataclass(frozen=True)
class VerifiedCertificate:
    """What a verdict says of the certificate: type, issuer, version, validity, status, and (in a valid verdict on
    a presentation only) the disclosed holder / document / face claims."""

    identifier: str
    type_code: str
    type_name: str
    issuer_code: str
    issuer_name: str
    version: int
    valid_from: date | None
    valid_until: date | None  # None: 长期, or not known
    status: str
    disclosed: dict[str, dict[str, Any]]


@dataclass(frozen=True)
class VerificationResult:
    """`valid` only when `reasons` is empty; `status` is the certificate's lifecycle status (or `unknown`);
    `certificate` None when the token cannot be trusted."""

    valid: bool
    status: str
    reasons: list[str]
    certificate: VerifiedCertificate | None


@dataclass
class _Outcome:
    result: VerificationResult
    identifier: str | None = None
    disclosed_names: list[str] = field(default_factory=list)
    key_binding: bool = False


def _number(payload: dict[str, Any], claim: str) -> float | None:
    value = payload.get(claim)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ValueError(claim)
    return float(value)


def _day(timestamp: float | None, *, end: bool) -> date | None:
    """Validity dates back from nbf/exp (day starts in China; exp is the start of the day after)."""
    if timestamp is None:
        return None
    try:
        moment = datetime.fromtimestamp(timestamp, CHINA)
        return ((moment - timedelta(days=1)) if end else moment).date()
    except (OverflowError, ValueError, OSError):  # a signed but absurd time (the day before 0001-01-01, too)
        return None


def _summary(auth: Authentic, certificate: StoredRecord | None, status: str, disclosed: dict[str, Any],
             nbf: float | None, exp: float | None) -> VerifiedCertificate:
    valid_from: date | None
    if certificate is not None:
        valid_from, valid_until = certificate.valid_from, certificate.valid_until
    else:
        valid_from, valid_until = _day(nbf, end=False), _day(exp, end=True)
    return VerifiedCertificate(
        identifier=auth.identifier_value, type_code=auth.certificate_type.type_code,
        type_name=auth.certificate_type.name, issuer_code=auth.department.code, issuer_name=auth.department.name,
        version=auth.identifier.version, valid_from=valid_from, valid_until=valid_until, status=status,
        disclosed=disclosed)


def _rejected(reason: str) -> _Outcome:
    return _Outcome(VerificationResult(False, UNKNOWN, [reason], None))


def _check(deps: Deps, token: str, *, now: datetime, presentee: Presentee | None) -> _Outcome:
    """Judge a token. `presentee` None: a stored certificate checked by identifier (no holder binding, nothing
    disclosed); otherwise a presentation to that client, whose disclosures are shown only in a valid verdict."""
    if not isinstance(token, str) or not _COMPACT.fullmatch(token):
        return _rejected(MALFORMED)
    try:
        parsed = parse(token)
    except SdJwtFormatError:
        return _rejected(MALFORMED)
    try:
        auth = authenticate(deps.session, deps.keys, parsed.issuer_jwt, deps.public_url)
    except Rejected as rejected:
        return _rejected(rejected.reason)

    reasons: list[str] = []
    disclosed: dict[str, Any] = {}
    try:
        claims = reconstruct(auth.payload, parsed.disclosures)
    except SdJwtFormatError as exc:
        reasons.append(_DISCLOSURE_REASONS.get(exc.reason, MALFORMED_DISCLOSURE))
    else:
        disclosed = {name: claims[name] for name in DISCLOSABLE_OBJECTS
                     if isinstance(claims.get(name), dict) and claims[name]}

    try:
        nbf, exp = _number(auth.payload, "nbf"), _number(auth.payload, "exp")
    except ValueError:
        return _rejected(MALFORMED)
    moment = now.timestamp()
    if nbf is not None and moment < nbf:
        reasons.append(NOT_YET_VALID)
    past_exp = exp is not None and moment >= exp

    certificate = stored_certificate(deps.session, auth, deps.public_url, reasons)
    status = UNKNOWN
    if certificate is None:
        reasons.append(CERTIFICATE_NOT_FOUND)  # signed by a department key but never issued or synced here
    else:
        status = EXPIRED if certificate.status == VALID and past_exp else certificate.status
        if status in STATUS_REASONS:
            reasons.append(STATUS_REASONS[status])
    if past_exp:
        reasons.append(EXPIRED)

    if presentee is not None:
        reasons += holder_binding(deps.session, parsed, auth.payload, token, presentee, now)

    reasons = list(dict.fromkeys(reasons))
    # A failed verdict discloses nothing: neither a replayed nor a tampered presentation may serve as one.
    shown = disclosed if presentee is not None and not reasons else {}
    summary = _summary(auth, certificate, status, shown, nbf, exp)
    names = sorted(f"{obj}.{claim}" for obj, values in shown.items() for claim in values)
    return _Outcome(VerificationResult(not reasons, status, reasons, summary), auth.identifier_value, names,
                    parsed.kb_jwt is not None)


def _record(session: Session, outcome: _Outcome, *, mode: str, actor: Actor, now: datetime) -> None:
    """Audit (责任倒查): who verified what, with which result and which claims were shown; never their values."""
    result = outcome.result
    record_event(session, actor=actor, action="certificate.verified", now=now, object_type="certificate",
                 object_id=outcome.identifier, outcome="success" if result.valid else "failure",
                 details={"mode": mode, "status": result.status, "reasons": result.reasons,
                          "key_binding": outcome.key_binding, "disclosed": outcome.disclosed_names})


def verify_presentation(deps: Deps, token: str, *, client: ApiClient, actor: Actor, now: datetime,
                        nonce: str | None = None) -> VerificationResult:
    """Verify an SD-JWT VC presented to `client`: format, signature (retired keys too), issuer and type,
    disclosures, validity period, status list and the holder binding — a KB-JWT for this client, required when
    the certificate has a holder key (`cnf`) or the caller gave a `nonce` (which it must then carry).

    Anything well-formed enough to judge gives a result (never an error); `reasons` names every failed check.
    Only a valid verdict carries data: `certificate.disclosed` holds the holder/document/face objects with the
    claims that were disclosed; a failed one names the certificate and its status, nothing of the holder.
    """
    outcome = _check(deps, token, now=now, presentee=Presentee(client, nonce))
    _record(deps.session, outcome, mode="presentation", actor=actor, now=now)
    return outcome.result


def verify_identifier(deps: Deps, identifier: str, *, actor: Actor, now: datetime) -> VerificationResult:
    """Verify a certificate by its identifier (证照标识): validity and status only, no personal data.

    The caller learns whether the certificate is valid, its status, type, issuer, version and validity
    period; `certificate.disclosed` is always empty (disclosing data needs the holder's presentation). The
    stored SD-JWT is re-verified, so a tampered record or a withdrawn type fails like a tampered token.
    A malformed identifier raises 422 naming `identifier`; a well-formed one we never issued raises 404.
    """
    ident = parse_identifier(identifier, field="identifier")
    certificate = deps.session.scalar(select(Certificate).where(Certificate.identifier == ident.value))
    if certificate is None:
        error = CertificateNotFound()
        # The edge rolls the request back, then keeps this note in the audit chain.
        error.audit = AuditNote(actor=actor, action="certificate.verified", object_type="certificate",
                                object_id=ident.value,
                                details={"mode": "identifier", "reasons": [CERTIFICATE_NOT_FOUND]})
        raise error
    stored = deps.cipher.decrypt(certificate.sd_jwt_enc, f"certificate:{certificate.public_id}:sd_jwt")
    outcome = _check(deps, stored, now=now, presentee=None)
    _record(deps.session, outcome, mode="identifier", actor=actor, now=now)
    return outcome.result
