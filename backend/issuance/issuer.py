"""Issuing certificates (签发): validate, identify (GB/T 36904), sign as SD-JWT VC, encrypt, store, notify, audit."""

from __future__ import annotations

import json
import re
import secrets
from dataclasses import dataclass, field
from datetime import date, datetime, time, timedelta
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from backend.audit.chain import record_event
from backend.catalog.face import LATEST_DATE, DateOutOfRange, FieldProblems, parse_date, validate_face
from backend.crypto.canonical import canonical_json
from backend.crypto.sdjwt import b64url
from backend.crypto.sdjwt import issue as issue_sd_jwt
from backend.errors import Forbidden, ValidationFailed
from backend.kernel.actors import Actor
from backend.kernel.china_time import CHINA, china_today
from backend.kernel.identifiers import (
    HolderCodeType,
    build_identifier,
    validate_holder_code,
)
from backend.kernel.ids import holder_index, new_public_id
from backend.keys.deps import Deps
from backend.keys.keystore import PURPOSE_CERTIFICATE, PURPOSE_WALLET
from backend.keys.status_lists import SlotAllocator, list_uri
from backend.models import ApiClient, Certificate, CertificateEvent, CertificateType, Department, Notification
from backend.models.issuance import VALID

SERIAL_ALPHABET = "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZ"
NATURAL_PERSON_CODES = {HolderCodeType.RESIDENT_ID, HolderCodeType.PASSPORT, HolderCodeType.HK_MACAO_PERMIT,
                        HolderCodeType.TAIWAN_PERMIT, HolderCodeType.OTHER}
LEGAL_PERSON_CODES = {HolderCodeType.USCC, HolderCodeType.OTHER}
UNSET: Any = object()
_CONTROL_CHARACTER = re.compile(r"[\x00-\x1f]")
# Made once: json.dumps builds a new encoder on every call with non-default options.
_COMPACT_JSON = json.JSONEncoder(separators=(",", ":"))  # JWS payloads, as PyJWT encodes them
_FACE_JSON = json.JSONEncoder(ensure_ascii=False)  # the stored face, as json.dumps(fields, ensure_ascii=False)


@dataclass(frozen=True)
class CertificateInput:
    """What a department submits for one certificate (API body, batch row or synced SD-JWT)."""

    type_code: Any
    certificate_number: Any
    holder_name: Any
    holder_code_type: Any
    holder_code: Any
    issued_on: Any
    valid_from: Any
    fields: Any
    valid_until: Any = UNSET  # UNSET: the type's default validity; None: 长期


@dataclass
class PreparedCertificate:
    """A validated, normalised certificate, ready to be identified, signed and stored."""

    certificate_type: CertificateType
    number: str
    holder_name: str
    holder_code_type: str
    holder_code: str
    issued_on: date
    valid_from: date
    valid_until: date | None
    fields: dict[str, Any]
    content_hash: str = ""
    number_index: str = ""  # see Issuer.number_index

    def content(self) -> dict[str, Any]:
        return {"type": self.certificate_type.type_code, "number": self.number, "holder_name": self.holder_name,
                "holder_code_type": self.holder_code_type, "holder_code": self.holder_code,
                "issued_on": self.issued_on.isoformat(), "valid_from": self.valid_from.isoformat(),
                "valid_until": self.valid_until.isoformat() if self.valid_until else None, "fields": self.fields}


SERIAL_LENGTH = 12
_SERIAL_SPACE = len(SERIAL_ALPHABET) ** SERIAL_LENGTH  # 36^12 ≈ 2^62


def new_serial() -> str:
    """12 random base-36 characters, uniform over all 36^12 serials: one draw from `secrets`, not twelve.

    Random, not sequential: a serial reveals neither issuance order nor volume.
    """
    number = secrets.randbelow(_SERIAL_SPACE)
    characters = []
    for _ in range(SERIAL_LENGTH):
        number, digit = divmod(number, 36)
        characters.append(SERIAL_ALPHABET[digit])
    return "".join(characters)


def _date(label: str, value: Any, problems: FieldProblems) -> date | None:
    """One of the certificate's dates, or None with its problem (malformed, or outside the accepted range)."""
    try:
        return parse_date(value)
    except ValueError as exc:
        problems.add(label, getattr(exc, "reason", "invalid_date"), str(exc))
        return None


def day_start(day: date) -> int:
    return int(datetime.combine(day, time.min, CHINA).timestamp())


def issuer_uri(public_url: str, department_code: str) -> str:
    return f"{public_url}/issuers/{department_code}"


@dataclass
class Issuer:
    """Issues for `department` as `actor` at `now`; `expected` is how many certificates it will sign (a batch's
    many make the slot allocator load a list's used slots once)."""

    deps: Deps
    department: Department
    actor: Actor
    now: datetime
    expected: int = 1
    _types: dict[str, CertificateType] = field(default_factory=dict)

    @classmethod
    def for_client(cls, deps: Deps, client: ApiClient, *, actor: Actor, now: datetime, expected: int = 1) -> Issuer:
        """The issuer of a department API client's certificates: its department's."""
        return cls(deps, client.department, actor=actor, now=now, expected=expected)

    def __post_init__(self) -> None:
        self.session, self.keys, self.cipher = self.deps.session, self.deps.keys, self.deps.cipher
        self.public_url = self.deps.public_url
        self.signing_key = self.keys.active_key(PURPOSE_CERTIFICATE, self.department)
        self.wallet_jwk = dict(self.keys.active_key(PURPOSE_WALLET).public_jwk)
        self.slots = SlotAllocator(self.session, self.department, self.now, expected=self.expected)
        self.today = china_today(self.now)
        self.iss = issuer_uri(self.public_url, self.department.code)
        self._headers: dict[Any, str] = {}  # JWS header (base64url) by typ

    # -- validation -------------------------------------------------------------------------------------
    def certificate_type(self, type_code: Any, problems: FieldProblems | None = None) -> CertificateType | None:
        if not isinstance(type_code, str):
            if problems is not None:
                problems.add("type_code", "missing", "缺少证照类型代码")
                return None
            raise ValidationFailed.for_field("type_code", "missing", "缺少证照类型代码")
        ctype = self._types.get(type_code)
        if ctype is None:
            ctype = self.session.scalar(select(CertificateType).where(CertificateType.type_code == type_code))
            if ctype is None:
                if problems is not None:
                    problems.add("type_code", "unknown_type", "证照目录中没有该类型")
                    return None
                raise ValidationFailed.for_field("type_code", "unknown_type", f"证照目录中没有类型 {type_code}")
            if self.department not in ctype.issuers:
                raise Forbidden(f"本部门不是「{ctype.name}」的签发部门", code="type_not_issuable",
                                details={"type_code": type_code})
            self._types[type_code] = ctype
        return ctype

    def prepare(self, data: CertificateInput, problems: FieldProblems) -> PreparedCertificate | None:
        """Validate one certificate; problems are collected, not raised (the caller decides)."""
        ctype = self.certificate_type(data.type_code, problems)
        number = data.certificate_number.strip() if isinstance(data.certificate_number, str) else ""
        if not number or len(number) > 64 or _CONTROL_CHARACTER.search(number):
            problems.add("certificate_number", "invalid", "证照编号应为 1–64 个字符")
        name = data.holder_name.strip() if isinstance(data.holder_name, str) else ""
        if not name or len(name) > 100:
            problems.add("holder.name", "invalid", "持证主体名称应为 1–100 个字符")
        code_type, code = str(data.holder_code_type or ""), ""
        try:
            code = validate_holder_code(code_type, data.holder_code if isinstance(data.holder_code, str) else "",
                                        field="holder.code")
        except ValidationFailed as exc:
            for item in exc.details.get("fields", []):
                problems.add(item["field"], item["reason"], exc.message)
        dates: dict[str, date | None] = {}
        for label, value in (("issued_on", data.issued_on), ("valid_from", data.valid_from)):
            dates[label] = _date(label, value, problems)
        valid_until: date | None = None
        if data.valid_until is not UNSET and data.valid_until is not None:
            valid_until = _date("valid_until", data.valid_until, problems)
        fields = validate_face(ctype.definition, data.fields, problems) if ctype else {}
        if ctype is None:
            return None
        validity = ctype.definition["validity"]
        category_codes = NATURAL_PERSON_CODES if ctype.holder_category == "natural_person" else LEGAL_PERSON_CODES
        if code_type and code and code_type not in {c.value for c in category_codes}:
            problems.add("holder.code_type", "wrong_holder_category",
                         "持证主体代码类型与证照的持证主体类别（自然人/法人）不符")
        valid_from, issued_on = dates.get("valid_from"), dates.get("issued_on")
        if data.valid_until is UNSET and valid_from is not None:
            years = validity.get("default_years")
            if years:
                try:
                    valid_until = valid_from.replace(year=valid_from.year + years) - timedelta(days=1)
                except ValueError:  # 29 February
                    valid_until = valid_from.replace(year=valid_from.year + years, day=28)
                if valid_until > LATEST_DATE:
                    problems.add("valid_until", DateOutOfRange.reason,
                                 f"按默认有效期（{years} 年）计算的截止日超出范围：{DateOutOfRange()}")
        # Long-term (长期): valid_until null, or omitted for a type without a default validity.
        long_term = data.valid_until is None or (data.valid_until is UNSET and valid_from is not None
                                                 and not validity.get("default_years"))
        if long_term and not validity.get("long_term_allowed"):
            problems.add("valid_until", "long_term_not_allowed", "该证照类型不允许长期有效")
        if valid_from and valid_until and valid_until < valid_from:
            problems.add("valid_until", "before_valid_from", "有效期截止日早于起始日")
        if issued_on and issued_on > self.today + timedelta(days=1):
            problems.add("issued_on", "in_future", "发证日期不能晚于今天")
        if problems.items or valid_from is None or issued_on is None:
            return None
        prepared = PreparedCertificate(ctype, number, name, code_type, code, issued_on, valid_from, valid_until, fields)
        prepared.content_hash = self.cipher.keyed_digest(canonical_json(prepared.content()), "certificate-content")
        return prepared

    def number_index(self, prepared: PreparedCertificate) -> str:
        """The blind index of (type, 证照编号), once per certificate: an import looks it up, then stores it."""
        if not prepared.number_index:
            prepared.number_index = self.cipher.blind_index(f"{prepared.certificate_type.type_code}|{prepared.number}",
                                                            "certificate-number")
        return prepared.number_index

    # -- building ---------------------------------------------------------------------------------------
    def sign_jws(self, payload: dict[str, Any], headers: dict[str, Any]) -> str:
        """A compact JWS (RFC 7515) of `payload` by the department's active key, as `KeyStore.sign_jwt` makes it.

        The header is the same for every certificate of an issuer, so it is encoded once; the signature comes from
        the key store (`sign_bytes`), which holds the private key. PyJWT's encode re-encodes the header, re-checks
        the key and copies the payload on every call, which cost more than half as much as the signature itself.
        """
        header = self._headers.get(headers.get("typ"))
        if header is None:
            header = b64url(_COMPACT_JSON.encode({"alg": self.signing_key.alg, **headers,
                                                  "kid": self.signing_key.kid}).encode())
            self._headers[headers.get("typ")] = header
        signing_input = f"{header}.{b64url(_COMPACT_JSON.encode(payload).encode())}"
        return f"{signing_input}.{b64url(self.keys.sign_bytes(self.signing_key, signing_input.encode()))}"

    def build(self, prepared: PreparedCertificate, *, origin: str, serial: str | None = None, version: int = 1,
              previous: Certificate | None = None, sd_jwt: str | None = None,
              import_batch_id: int | None = None) -> Certificate:
        """Identify, sign (unless `sd_jwt` came signed from the department), encrypt; returns an unsaved row."""
        return Certificate(**self.build_row(prepared, origin=origin, serial=serial, version=version,
                                            previous_id=previous.id if previous else None, sd_jwt=sd_jwt,
                                            import_batch_id=import_batch_id))

    def build_row(self, prepared: PreparedCertificate, *, origin: str, serial: str | None = None, version: int = 1,
                  previous_id: int | None = None, sd_jwt: str | None = None,
                  import_batch_id: int | None = None) -> dict[str, Any]:
        """`build` as the column values of the certificate row (every column but `id`): a batch inserts these with
        Core, without making an ORM object per certificate."""
        ctype = prepared.certificate_type
        serial = serial or new_serial()
        identifier = build_identifier(ctype.type_code, self.department.code, serial, version)
        status_list, index = self.slots.take()
        public_id = new_public_id()
        if sd_jwt is None:
            visible: dict[str, Any] = {
                "iss": self.iss,
                "vct": f"urn:ecert:{ctype.type_code}",
                "identifier": identifier,
                "type_code": ctype.type_code,
                "version": version,
                "issued_on": prepared.issued_on.isoformat(),
                "iat": int(self.now.timestamp()),
                "nbf": day_start(prepared.valid_from),
                "status": {"status_list": {"idx": index, "uri": list_uri(self.public_url, self.department.code,
                                                                        status_list.list_number)}},
                "cnf": {"jwk": self.wallet_jwk},
            }
            if prepared.valid_until is not None:
                visible["exp"] = day_start(prepared.valid_until + timedelta(days=1))
            issued = issue_sd_jwt(
                self.sign_jws,
                visible=visible,
                disclosable={
                    "holder": {"name": prepared.holder_name, "code_type": prepared.holder_code_type,
                               "code": prepared.holder_code},
                    "document": {"number": prepared.number},
                    "face": prepared.fields,
                },
            )
            sd_jwt = issued.token
        context = f"certificate:{public_id}"
        encrypt = self.cipher.encrypt
        return {
            "public_id": public_id,
            "identifier": identifier,
            "certificate_type_id": ctype.id,
            "catalog_version": ctype.catalog_version,
            "issuer_department_id": self.department.id,
            "serial": serial,
            "version": version,
            "number_index": self.number_index(prepared),
            "number_enc": encrypt(prepared.number, f"{context}:number"),
            "holder_code_type": prepared.holder_code_type,
            "holder_index": holder_index(self.cipher, prepared.holder_code_type, prepared.holder_code),
            "holder_name_enc": encrypt(prepared.holder_name, f"{context}:holder_name"),
            "holder_code_enc": encrypt(prepared.holder_code, f"{context}:holder_code"),
            "face_enc": encrypt(_FACE_JSON.encode(prepared.fields), f"{context}:face"),
            "sd_jwt_enc": encrypt(sd_jwt, f"{context}:sd_jwt"),
            "content_hash": prepared.content_hash,
            "issued_on": prepared.issued_on,
            "valid_from": prepared.valid_from,
            "valid_until": prepared.valid_until,
            "status": VALID,
            "status_reason": None,
            "status_changed_at": self.now,
            "status_list_id": status_list.id,
            "status_index": index,
            "signing_kid": self.signing_key.kid,
            "origin": origin,
            "previous_id": previous_id,
            "import_batch_id": import_batch_id,
            "created_at": self.now,
            "updated_at": self.now,
        }


def certificate_event(certificate: Certificate, event: str, *, from_status: str | None, actor: Actor, now: datetime,
                      reason: str | None = None) -> CertificateEvent:
    return CertificateEvent(certificate_id=certificate.id, event=event, from_status=from_status,
                            to_status=certificate.status, reason=reason, actor=f"{actor.kind}:{actor.id}"[:80],
                            occurred_at=now)


HOLDER_MESSAGES = {
    "certificate_issued": ("您的{name}已签发", "{issuer}已为您签发{name}，可在电子证照卡包中查看。"),
    "certificate_reissued": ("您的{name}已更新", "{issuer}更新了您的{name}（第 {version} 版），旧版本已失效。"),
    "certificate_revoked": ("您的{name}已注销", "{issuer}注销了您的{name}。原因：{reason}"),
    "certificate_suspended": ("您的{name}已中止", "{issuer}中止了您的{name}的效力。原因：{reason}"),
    "certificate_resumed": ("您的{name}已恢复", "{issuer}恢复了您的{name}的效力。"),
    "certificate_expired": ("您的{name}已过期", "您的{name}已超过有效期。"),
    "expiry_reminder": ("您的{name}即将到期", "您的{name}将于 {valid_until} 到期（{days} 天后），请及时办理。"),
}


def holder_notification(certificate: Certificate, kind: str, *, now: datetime, type_name: str, issuer_name: str,
                        **values: Any) -> Notification:
    """Queue an inbox message for the holder, found later by the holder's blind index (outbox row)."""
    title, body = HOLDER_MESSAGES[kind]
    params = {"name": type_name, "issuer": issuer_name, "version": certificate.version, **values}
    return Notification(public_id=new_public_id(), holder_index=certificate.holder_index,
                        certificate_id=certificate.id, kind=kind, title=title.format(**params),
                        body=body.format(**params), data={"identifier": certificate.identifier}, created_at=now)


def record_issued(session: Session, certificate: Certificate, issuer: Issuer, *, event: str = "issued",
                  reason: str | None = None) -> None:
    """Event, holder notification and audit for one stored certificate."""
    ctype = session.get(CertificateType, certificate.certificate_type_id)  # in the identity map: no query
    assert ctype is not None
    session.add(certificate_event(certificate, event, from_status=None, actor=issuer.actor, now=issuer.now,
                                  reason=reason))
    kind = "certificate_issued" if event != "reissued" else "certificate_reissued"
    session.add(holder_notification(certificate, kind, now=issuer.now, type_name=ctype.name,
                                    issuer_name=issuer.department.name))
    record_event(session, actor=issuer.actor, action=f"certificate.{event}", now=issuer.now,
                 object_type="certificate", object_id=certificate.identifier,
                 details={"type_code": ctype.type_code, "version": certificate.version, "origin": certificate.origin})
