"""Verification for departments (核验): presented SD-JWT VCs (RFC 9901) and bare certificate identifiers."""

from __future__ import annotations

import functools
import hashlib
import re
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta
from typing import Any

from sqlalchemy import and_, bindparam, select
from sqlalchemy.orm import Session

from backend.audit.chain import record_event
from backend.core import rows
from backend.core.once import insert_once
from backend.crypto import jws
from backend.crypto.encryption import FieldCipher
from backend.crypto.jwk import SUPPORTED_ALGS, JWKError, PublicKey, alg_for_jwk, load_public_jwk
from backend.crypto.jws import CompactJWS, JWSError
from backend.crypto.sdjwt import ISSUED_TYP, KB_TYP, ParsedSdJwt, SdJwtFormatError, parse, reconstruct, sd_hash
from backend.errors import AuditNote, DomainError
from backend.issuance.certificates import CertificateNotFound
from backend.issuance.issuer import issuer_uri
from backend.kernel.actors import Actor
from backend.kernel.china_time import CHINA
from backend.kernel.identifiers import CertificateIdentifier, parse_identifier
from backend.keys.keystore import PURPOSE_CERTIFICATE, KeyStore, VerificationKey
from backend.models import (
    ApiClient,
    Certificate,
    CertificateType,
    ClientAssertionUse,
    Department,
    StatusList,
    certificate_type_issuer,
)
from backend.models.certificates import EXPIRED, REVOKED, SUPERSEDED, SUSPENDED, VALID

# Stable reason codes (the API's `reasons`).
MALFORMED = "malformed"
WRONG_TYP = "wrong_typ"
UNSUPPORTED_ALG = "unsupported_alg"
UNKNOWN_KEY = "unknown_key"
BAD_SIGNATURE = "bad_signature"
WRONG_ISSUER = "wrong_issuer"
UNKNOWN_TYPE = "unknown_type"
TYPE_MISMATCH = "type_mismatch"
IDENTIFIER_MISMATCH = "identifier_mismatch"
MALFORMED_DISCLOSURE = "malformed_disclosure"
DUPLICATE_DISCLOSURE = "duplicate_disclosure"
UNREFERENCED_DISCLOSURE = "unreferenced_disclosure"
NOT_YET_VALID = "not_yet_valid"
UNKNOWN_STATUS_LIST = "unknown_status_list"
CERTIFICATE_NOT_FOUND = "certificate_not_found"
KB_MISSING = "kb_missing"
KB_MALFORMED = "kb_malformed"
KB_WRONG_TYP = "kb_wrong_typ"
KB_UNSUPPORTED_ALG = "kb_unsupported_alg"
KB_NO_HOLDER_KEY = "kb_no_holder_key"
KB_BAD_SIGNATURE = "kb_bad_signature"
KB_WRONG_AUDIENCE = "kb_wrong_audience"
KB_WRONG_NONCE = "kb_wrong_nonce"
KB_SD_HASH_MISMATCH = "kb_sd_hash_mismatch"
KB_IAT_OUT_OF_RANGE = "kb_iat_out_of_range"
KB_REPLAYED = "kb_replayed"
# A certificate that is not `valid` fails with its status as the reason: revoked, suspended, superseded, expired.
STATUS_REASONS = {REVOKED: REVOKED, SUSPENDED: SUSPENDED, SUPERSEDED: SUPERSEDED, EXPIRED: EXPIRED}

UNKNOWN = "unknown"  # `status` when the token cannot be trusted or names no certificate of ours
KB_IAT_WINDOW = timedelta(minutes=5)
# A KB-JWT is only accepted within KB_IAT_WINDOW of its iat, so one first accepted now is refused as stale after
# at most twice that: its record can go then (`flask jobs purge`).
KB_REPLAY_WINDOW = 2 * KB_IAT_WINDOW
DISCLOSABLE_OBJECTS = ("holder", "document", "face")
# The compact serialization is base64url segments joined by "." and "~"; anything else is not an SD-JWT.
_COMPACT = re.compile(r"[A-Za-z0-9_\-.~]+")
_DISCLOSURE_REASONS = {
    "duplicate_disclosure": DUPLICATE_DISCLOSURE,
    "duplicate_digest": DUPLICATE_DISCLOSURE,
    "unreferenced_disclosure": UNREFERENCED_DISCLOSURE,
}


@dataclass(frozen=True)
class VerificationResult:
    """`valid` only when `reasons` is empty; `status` is the certificate's lifecycle status (or `unknown`)."""

    valid: bool
    status: str
    reasons: list[str]
    certificate: dict[str, Any] | None

    def to_dict(self) -> dict[str, Any]:
        # Not dataclasses.asdict: its deep copy of `certificate` was a visible share of a verification's CPU.
        return {"valid": self.valid, "status": self.status, "reasons": list(self.reasons),
                "certificate": self.certificate}


class _Rejected(Exception):
    """The issuer-signed JWT cannot be trusted; nothing in it is used."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


@dataclass(frozen=True)
class _Issuer:
    id: int
    code: str
    name: str


@dataclass(frozen=True)
class _Type:
    type_code: str
    name: str


@dataclass(frozen=True)
class _Record:
    """What a verdict reads of our stored certificate."""

    identifier: str
    status: str
    valid_from: date
    valid_until: date | None


@dataclass
class _Authentic:
    """An issuer JWT whose signature, issuer, type and identifier checked out."""

    payload: dict[str, Any]
    key: VerificationKey
    department: _Issuer
    certificate_type: _Type
    identifier: CertificateIdentifier
    identifier_value: str  # identifier.value, computed once (its check character is not free)


@dataclass(frozen=True)
class _Presentee:
    """Who a presentation is checked for: the calling client, and the nonce it expects (if it gave one)."""

    client: ApiClient
    nonce: str | None


@dataclass
class _Outcome:
    result: VerificationResult
    identifier: str | None = None
    disclosed_names: list[str] = field(default_factory=list)
    key_binding: bool = False


def _parse_jws(token: str) -> CompactJWS:
    try:
        return jws.parse(token)
    except JWSError as exc:
        raise _Rejected(MALFORMED) from exc


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


def _authenticate(session: Session, keys: KeyStore, issuer_jwt: str, public_url: str) -> _Authentic:
    """Header, key (retired keys too: rotation must not break old certificates), signature, issuer, type."""
    token = _parse_jws(issuer_jwt)
    header = token.header
    if header.get("typ") != ISSUED_TYP:
        raise _Rejected(WRONG_TYP)
    if header.get("alg") not in SUPPORTED_ALGS:
        raise _Rejected(UNSUPPORTED_ALG)
    kid = header.get("kid")
    if not isinstance(kid, str) or not kid:
        raise _Rejected(UNKNOWN_KEY)
    try:
        key = keys.verification_key(kid)
    except (DomainError, JWKError) as exc:
        raise _Rejected(UNKNOWN_KEY) from exc
    if key.purpose != PURPOSE_CERTIFICATE or key.department_id is None:
        raise _Rejected(UNKNOWN_KEY)  # a platform or wallet key never signs certificates
    try:
        token.verify(key.public, key.alg)
    except JWSError as exc:
        raise _Rejected(BAD_SIGNATURE) from exc
    payload = token.payload

    vct = payload.get("vct")
    type_code = vct.removeprefix("urn:ecert:") if isinstance(vct, str) and vct.startswith("urn:ecert:") else None
    found = rows.execute(session, _ISSUER_AND_TYPE,
                         {"type_code": type_code, "department_id": key.department_id}).first()
    if found is None:
        raise _Rejected(UNKNOWN_KEY)
    department = _Issuer(found.id, found.code, found.name)
    if payload.get("iss") != issuer_uri(public_url, department.code):
        raise _Rejected(WRONG_ISSUER)
    if found.type_code is None:
        raise _Rejected(UNKNOWN_TYPE)
    if found.issues is None:
        raise _Rejected(WRONG_ISSUER)
    ctype = _Type(found.type_code, found.type_name)
    if payload.get("type_code", ctype.type_code) != ctype.type_code:
        raise _Rejected(TYPE_MISMATCH)
    claimed = payload.get("identifier")
    try:
        identifier = parse_identifier(claimed if isinstance(claimed, str) else "", field="identifier")
    except DomainError as exc:
        raise _Rejected(MALFORMED) from exc
    if identifier.type_code != ctype.type_code or identifier.issuer_code != department.code \
            or payload.get("version") != identifier.version:
        raise _Rejected(IDENTIFIER_MISMATCH)
    return _Authentic(payload, key, department, ctype, identifier, identifier.value)


_MAX_LIST_SIZE = 2**31  # beyond any status list, and within what every database stores as an integer


# What a verdict needs of the certificate: its identity, status and validity (not its encrypted data).
_RECORD_COLUMNS = (Certificate.identifier, Certificate.status, Certificate.valid_from, Certificate.valid_until)
_SLOT = (select(StatusList.size, *_RECORD_COLUMNS).select_from(StatusList)
         .outerjoin(Certificate, and_(Certificate.status_list_id == StatusList.id,
                                      Certificate.status_index == bindparam("idx")))
         .where(StatusList.department_id == bindparam("department_id"),
                StatusList.list_number == bindparam("list_number")))
_BY_IDENTIFIER = select(*_RECORD_COLUMNS).where(Certificate.identifier == bindparam("identifier"))


def _slot_holder(session: Session, department: _Issuer, reference: dict[str, Any],
                 public_url: str) -> tuple[bool, _Record | None]:
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
    return True, None if found.identifier is None else _Record(found.identifier, found.status, found.valid_from,
                                                                 found.valid_until)


def _certificate(session: Session, auth: _Authentic, public_url: str, reasons: list[str]) -> _Record | None:
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
    return None if found is None else _Record(found.identifier, found.status, found.valid_from, found.valid_until)


def _number(payload: dict[str, Any], claim: str) -> float | None:
    value = payload.get(claim)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ValueError(claim)
    return float(value)


@functools.lru_cache(maxsize=1024)
def _parsed_jwk(members: tuple[tuple[str, str], ...]) -> tuple[PublicKey, str]:
    """A public JWK's key, by its members: the same members are the same key, whatever else changes."""
    jwk = dict(members)
    return load_public_jwk(jwk), alg_for_jwk(jwk)


def _holder_key(jwk: dict[str, Any]) -> tuple[PublicKey, str]:
    """The `cnf` key and its algorithm; parsing one (an EC point check) was a visible share of a verification."""
    if all(isinstance(k, str) and isinstance(v, str) for k, v in jwk.items()):
        return _parsed_jwk(tuple(sorted(jwk.items())))
    return load_public_jwk(jwk), alg_for_jwk(jwk)  # not a plain JWK: refused there, never cached


def _key_binding(kb_jwt: str, payload: dict[str, Any], presented: str, *, now: datetime,
                 expected_audience: str, expected_nonce: str | None) -> list[str]:
    """KB-JWT checks (RFC 9901 §7.3): typ, signature by the `cnf.jwk` key, aud, nonce, sd_hash, iat."""
    try:
        token = jws.parse(kb_jwt)
    except JWSError:
        return [KB_MALFORMED]
    header = token.header
    if header.get("typ") != KB_TYP:
        return [KB_WRONG_TYP]
    if header.get("alg") not in SUPPORTED_ALGS:
        return [KB_UNSUPPORTED_ALG]
    cnf = payload.get("cnf")
    holder_jwk = cnf.get("jwk") if isinstance(cnf, dict) else None
    if not isinstance(holder_jwk, dict):
        return [KB_NO_HOLDER_KEY]
    try:
        holder_key, holder_alg = _holder_key(holder_jwk)
    except JWKError:
        return [KB_NO_HOLDER_KEY]
    try:
        token.verify(holder_key, holder_alg)
    except JWSError:
        return [KB_BAD_SIGNATURE]
    claims = token.payload
    reasons = []
    if any(name not in claims for name in ("iat", "aud", "nonce", "sd_hash")):
        reasons.append(KB_MALFORMED)
    if claims.get("aud") != expected_audience:
        reasons.append(KB_WRONG_AUDIENCE)
    if expected_nonce is not None and claims.get("nonce") != expected_nonce:
        reasons.append(KB_WRONG_NONCE)
    if claims.get("sd_hash") != sd_hash(presented):
        reasons.append(KB_SD_HASH_MISMATCH)
    iat = claims.get("iat")
    if isinstance(iat, bool) or not isinstance(iat, int | float) \
            or abs(iat - now.timestamp()) > KB_IAT_WINDOW.total_seconds():
        reasons.append(KB_IAT_OUT_OF_RANGE)
    return reasons


def _spend_key_binding(session: Session, client: ApiClient, kb_jwt: str, now: datetime) -> list[str]:
    """Accept a KB-JWT once per client: a presentation a department received cannot be verified again.

    Recorded with the client's assertion ids (same replay table, same purge), as "kb:" + SHA-256 of the KB-JWT's
    signed part. The signed part fixes aud, nonce, iat and sd_hash, and a re-encoded or malleated signature (ECDSA
    (r, n − s)) does not make it a new KB-JWT. The nonce alone would not do: one grant's presentations of several
    certificates share it.
    """
    index = "kb:" + hashlib.sha256(kb_jwt.rsplit(".", 1)[0].encode("ascii")).hexdigest()
    # Atomic: of two workers given the same KB-JWT at the same moment, one accepts it.
    spent = insert_once(session, ClientAssertionUse,
                        {"api_client_id": client.id, "jti": index, "expires_at": now + KB_REPLAY_WINDOW},
                        unique=["api_client_id", "jti"])
    return [] if spent else [KB_REPLAYED]


def _holder_binding(session: Session, parsed: ParsedSdJwt, auth: _Authentic, token: str, presentee: _Presentee,
                    now: datetime) -> list[str]:
    """RFC 9901 §7.3 for the calling client; required whenever the certificate names a holder key."""
    if parsed.kb_jwt is None:
        return [KB_MISSING] if presentee.nonce is not None or "cnf" in auth.payload else []
    presented = token[: token.rindex("~") + 1]
    # TODO(issue 5): nonces become grant ids, checked against the grant redeemed by this client; until then a
    # nonce the caller gave must match, and any nonce is accepted once.
    reasons = _key_binding(parsed.kb_jwt, auth.payload, presented, now=now,
                           expected_audience=presentee.client.client_id, expected_nonce=presentee.nonce)
    return reasons or _spend_key_binding(session, presentee.client, parsed.kb_jwt, now)


def _day(timestamp: float | None, *, end: bool) -> str | None:
    """Validity dates back from nbf/exp (day starts in China; exp is the start of the day after)."""
    if timestamp is None:
        return None
    try:
        moment = datetime.fromtimestamp(timestamp, CHINA)
        return ((moment - timedelta(days=1)) if end else moment).date().isoformat()
    except (OverflowError, ValueError, OSError):  # a signed but absurd time (the day before 0001-01-01, too)
        return None


def _iso(day: date | None) -> str | None:
    return day.isoformat() if day else None


def _summary(auth: _Authentic, certificate: _Record | None, status: str, disclosed: dict[str, Any],
             nbf: float | None, exp: float | None) -> dict[str, Any]:
    if certificate is not None:
        valid_from, valid_until = _iso(certificate.valid_from), _iso(certificate.valid_until)
    else:
        valid_from, valid_until = _day(nbf, end=False), _day(exp, end=True)
    return {
        "identifier": auth.identifier_value,
        "type_code": auth.certificate_type.type_code,
        "type_name": auth.certificate_type.name,
        "issuer": {"code": auth.department.code, "name": auth.department.name},
        "version": auth.identifier.version,
        "valid_from": valid_from,
        "valid_until": valid_until,
        "status": status,
        "disclosed": disclosed,
    }


def _rejected(reason: str) -> _Outcome:
    return _Outcome(VerificationResult(False, UNKNOWN, [reason], None))


def _check(session: Session, keys: KeyStore, token: str, *, now: datetime, public_url: str,
           presentee: _Presentee | None) -> _Outcome:
    """Judge a token. `presentee` None: a stored certificate checked by identifier (no holder binding, nothing
    disclosed); otherwise a presentation to that client, whose disclosures are shown only in a valid verdict."""
    if not isinstance(token, str) or not _COMPACT.fullmatch(token):
        return _rejected(MALFORMED)
    try:
        parsed = parse(token)
    except SdJwtFormatError:
        return _rejected(MALFORMED)
    try:
        auth = _authenticate(session, keys, parsed.issuer_jwt, public_url)
    except _Rejected as rejected:
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

    certificate = _certificate(session, auth, public_url, reasons)
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
        reasons += _holder_binding(session, parsed, auth, token, presentee, now)

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


def verify_presentation(session: Session, keys: KeyStore, token: str, *, client: ApiClient, actor: Actor,
                        now: datetime, public_url: str, nonce: str | None = None) -> VerificationResult:
    """Verify an SD-JWT VC presented to `client`: format, signature (retired keys too), issuer and type,
    disclosures, validity period, status list and the holder binding — a KB-JWT for this client, required when
    the certificate has a holder key (`cnf`) or the caller gave a `nonce` (which it must then carry).

    Anything well-formed enough to judge gives a result (never an error); `reasons` names every failed check.
    Only a valid verdict carries data: `certificate.disclosed` holds the holder/document/face objects with the
    claims that were disclosed; a failed one names the certificate and its status, nothing of the holder.
    """
    outcome = _check(session, keys, token, now=now, public_url=public_url, presentee=_Presentee(client, nonce))
    _record(session, outcome, mode="presentation", actor=actor, now=now)
    return outcome.result


def verify_identifier(session: Session, keys: KeyStore, cipher: FieldCipher, identifier: str, *, actor: Actor,
                      now: datetime, public_url: str) -> VerificationResult:
    """Verify a certificate by its identifier (证照标识): validity and status only, no personal data.

    The caller learns whether the certificate is valid, its status, type, issuer, version and validity
    period; `certificate.disclosed` is always empty (disclosing data needs the holder's presentation). The
    stored SD-JWT is re-verified, so a tampered record or a withdrawn type fails like a tampered token.
    A malformed identifier raises 422 naming `identifier`; a well-formed one we never issued raises 404.
    """
    ident = parse_identifier(identifier, field="identifier")
    certificate = session.scalar(select(Certificate).where(Certificate.identifier == ident.value))
    if certificate is None:
        error = CertificateNotFound()
        # The edge rolls the request back, then keeps this note in the audit chain.
        error.audit = AuditNote(actor=actor, action="certificate.verified", object_type="certificate",
                                object_id=ident.value,
                                details={"mode": "identifier", "reasons": [CERTIFICATE_NOT_FOUND]})
        raise error
    stored = cipher.decrypt(certificate.sd_jwt_enc, f"certificate:{certificate.public_id}:sd_jwt")
    outcome = _check(session, keys, stored, now=now, public_url=public_url, presentee=None)
    _record(session, outcome, mode="identifier", actor=actor, now=now)
    return outcome.result
