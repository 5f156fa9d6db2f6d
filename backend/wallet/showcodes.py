"""Show codes (亮证) checked when scanned: the certificate's live state and, when valid, the profile's fields masked;
recorded once per verifier and outcome (backend/wallet/README.md)."""

from __future__ import annotations

import json
import logging
import threading
from collections import Counter
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Final

from sqlalchemy import bindparam, insert, select
from sqlalchemy.orm import Session

from backend.audit.chain import record_event
from backend.catalog.definitions import current_definition
from backend.core.caches import Memo
from backend.core.db import rows
from backend.core.db.once import insert_once
from backend.crypto.encryption import FieldCipher
from backend.crypto.masking import mask_name, mask_value
from backend.kernel.actors import Actor
from backend.kernel.china_time import china_today
from backend.kernel.identifiers import HolderCodeType
from backend.kernel.ids import new_public_id
from backend.keys import showcode
from backend.keys.keystore import KeyStore
from backend.models import ApiClient, Base, Certificate, ShowCodeUse, UsageRecord
from backend.models.issuance import EXPIRED, REVOKED, SUPERSEDED, SUSPENDED, VALID
from backend.wallet.queries import CheckedCertificateRow, checked_certificate

# States of a checked code: the certificate's live state, or why the code itself is refused.
STATE_VALID: Final = "valid"
STATE_EXPIRED: Final = "expired"  # the code (not the certificate) has expired
STATE_INVALID: Final = "invalid"  # not a code we signed, tampered with, or naming no certificate
STATE_REVOKED: Final = REVOKED
STATE_SUSPENDED: Final = SUSPENDED
STATE_SUPERSEDED: Final = SUPERSEDED
STATE_CERTIFICATE_EXPIRED: Final = "certificate_expired"  # the certificate's validity has ended
STATE_NOT_YET_VALID: Final = "not_yet_valid"  # the certificate's validity has not begun

STATE_LABELS: Final = {
    STATE_VALID: "有效", STATE_EXPIRED: "已过期", STATE_INVALID: "无效", STATE_REVOKED: "已注销",
    STATE_SUSPENDED: "已中止", STATE_SUPERSEDED: "已更新", STATE_CERTIFICATE_EXPIRED: "已过期",
    STATE_NOT_YET_VALID: "未生效",
}
STATE_EXPLANATIONS: Final = {
    STATE_VALID: "证照当前有效，以下为持证人出示的信息。",
    STATE_EXPIRED: "亮证码已过期：每个亮证码只在生成后很短时间内有效。请持证人刷新后重新出示。",
    STATE_INVALID: "无法识别的亮证码：不是本平台签发的，或已被篡改。",
    STATE_REVOKED: "该证照已被注销或吊销，不能作为有效证照使用。",
    STATE_SUSPENDED: "该证照已被签发部门中止使用。",
    STATE_SUPERSEDED: "该证照已换发新版本，本版本不再有效。请持证人出示最新版本。",
    STATE_CERTIFICATE_EXPIRED: "该证照已超过有效期。",
    STATE_NOT_YET_VALID: "该证照尚未到有效期起始日。",
}
log = logging.getLogger("ecert.showcodes")
# The usage history's kind for a check: the fields it lists were shown masked (a code shows, it does not authorise).
USAGE_KIND: Final = "show_code_checked"

LONG_TERM: Final = "长期"


@dataclass(frozen=True)
class Verifier:
    """Who scanned: the public page (anyone with a phone) or a department client."""

    kind: str  # public | client
    id: str | None = None
    department_id: int | None = None

    @property
    def key(self) -> str:
        """Who, for telling repeated checks apart: every public scan is the same verifier."""
        return f"client:{self.id}" if self.kind == "client" else self.kind


PUBLIC_VERIFIER: Final = Verifier("public")

_IDENTIFIER: Final = select(Certificate.identifier).where(Certificate.public_id == bindparam("public_id"))
_USED: Final = select(ShowCodeUse.id).where(
    ShowCodeUse.certificate_public_id == bindparam("certificate_public_id"), ShowCodeUse.nonce == bindparam("nonce"),
    ShowCodeUse.verifier == bindparam("verifier"), ShowCodeUse.outcome == bindparam("outcome"))
_INSERT_USAGE: Final = insert(Base.metadata.tables[UsageRecord.__tablename__])


@dataclass
class ShowCodeCheck:
    """The outcome of one scan. `certificate` is None for expired and invalid codes."""

    state: str
    reason: str | None  # why a code was refused (showcode reason codes) or None
    claims: showcode.ShowCodeClaims | None
    certificate: dict[str, Any] | None = None
    shown: list[str] = field(default_factory=list)  # names of the holder/face values shown
    record: CheckedCertificateRow | None = None

    @property
    def label(self) -> str:
        return STATE_LABELS[self.state]

    @property
    def explanation(self) -> str:
        return STATE_EXPLANATIONS[self.state]


# -- display ----------------------------------------------------------------------------------------------------

def _display(spec: dict[str, Any], value: Any) -> str:
    if isinstance(value, bool):
        return "是" if value else "否"
    return str(value)


def _holder_display(certificate: CheckedCertificateRow, name: str) -> str:
    # A company's name is public (企业信息公示); a person's is masked.
    return name if certificate.holder_code_type == HolderCodeType.USCC.value else mask_name(name)


# -- checking ---------------------------------------------------------------------------------------------------

def _live_state(certificate: CheckedCertificateRow, now: datetime) -> str:
    if certificate.status == EXPIRED:
        return STATE_CERTIFICATE_EXPIRED
    if certificate.status != VALID:
        return certificate.status
    today = china_today(now)
    if certificate.valid_until is not None and today > certificate.valid_until:
        return STATE_CERTIFICATE_EXPIRED  # the nightly expiry sweep has not caught up yet
    if today < certificate.valid_from:
        return STATE_NOT_YET_VALID
    return STATE_VALID


def _outline(certificate: CheckedCertificateRow, state: str, profile: str) -> dict[str, Any]:
    """What a non-valid certificate shows: its kind and issuer, nothing about the holder."""
    return {"name": certificate.type_name, "type_code": certificate.type_code,
            "issuer": {"code": certificate.issuer_code, "name": certificate.issuer_name},
            "status": state, "profile": profile, "holder_name": None, "valid_from": None, "valid_until": None,
            "fields": []}


def _profile_view(cipher: FieldCipher, certificate: CheckedCertificateRow, definition: dict[str, Any],
                  profile: str) -> tuple[dict[str, Any], list[str]]:
    """The certificate as the profile shows it, with every value masked by the current catalog policy."""
    specs = {spec["name"]: spec for spec in definition["fields"]}
    sharing = definition.get("sharing", {})
    names = sharing.get("public_fields" if profile == "basic" else "showable_fields", [])
    # Only what is shown is decrypted (not the number, the holder code or the SD-JWT).
    context = f"certificate:{certificate.public_id}"
    holder_name = cipher.decrypt(certificate.holder_name_enc, f"{context}:holder_name")
    values = json.loads(cipher.decrypt(certificate.face_enc, f"{context}:face"))
    fields = []
    for name in names:
        spec, value = specs.get(name), values.get(name)
        # holder_name repeats the holder, which is always shown (masked) as 持证人.
        if spec is None or value is None or value == "" or name == "holder_name":
            continue
        fields.append({"name": name, "label": spec["label"],
                       "value": mask_value(spec.get("mask", "none"), _display(spec, value))})
    view = _outline(certificate, STATE_VALID, profile)
    view.update({"holder_name": _holder_display(certificate, holder_name),
                 "valid_from": certificate.valid_from.isoformat(),
                 "valid_until": certificate.valid_until.isoformat() if certificate.valid_until else LONG_TERM,
                 "fields": fields})
    return view, ["holder.name", *(f"face.{item['name']}" for item in fields)]


# Refusals of codes that are not ours, per reason, since the process started: logged, never written anywhere.
_unsigned_refusals: Counter[str] = Counter()
_unsigned_refusals_lock = threading.Lock()


def _count_unsigned_refusal(reason: str) -> None:
    with _unsigned_refusals_lock:
        _unsigned_refusals[reason] += 1
        total = _unsigned_refusals[reason]
    log.info("show code refused", extra={"fields": {"reason": reason, "refused_total": total}})


def _first_check(session: Session, claims: showcode.ShowCodeClaims, verifier: Verifier, outcome: str,
                 now: datetime) -> bool:
    """True for the first check of this code by this verifier with this outcome (which is then on record)."""
    key = {"certificate_public_id": claims.certificate_id, "nonce": claims.nonce.hex(), "verifier": verifier.key,
           "outcome": outcome}
    if rows.execute(session, _USED, key).first() is not None:
        return False  # a refresh: read-only, no write lock taken
    # The same code checked at the same moment on another worker: one of the two records it.
    return insert_once(session, ShowCodeUse, {**key, "recorded_at": now}, unique=list(key))


def _record_refusal(session: Session, check: ShowCodeCheck, *, verifier: Verifier, actor: Actor,
                    now: datetime) -> None:
    """Audit a refused code we signed (expired, not yet valid, certificate gone) once; never the token."""
    claims = check.claims
    if claims is None or not _first_check(session, claims, verifier, f"{check.state}:{check.reason}", now):
        return
    identifier = rows.execute(session, _IDENTIFIER, {"public_id": claims.certificate_id}).scalar()
    record_event(session, actor=actor, action="showcode.checked", now=now, outcome="failure",
                 object_type="certificate", object_id=identifier,
                 details={"state": check.state, "reason": check.reason, "nonce": claims.nonce.hex(),
                          "verifier": verifier.kind})


def check_show_code(session: Session, keys: KeyStore, cipher: FieldCipher, token: str, *,
                    definitions: Memo[str, dict[str, Any]], verifier: Verifier, actor: Actor, now: datetime,
                    record: bool = True) -> ShowCodeCheck:
    """Check a scanned code: signature and expiry, then the certificate's live state, shown by the type's current
    definition (`definitions`: the app's memo of them, backend.core.context.current_definitions).

    With `record` (not for HEAD requests), the first check of a genuine code by this verifier with this outcome
    is written to the usage history (unexpired codes) and the audit chain.
    """
    try:
        claims = showcode.decode(session, token, now=now, keys=keys)
    except showcode.ShowCodeRefused as refused:
        state = STATE_EXPIRED if refused.reason == showcode.EXPIRED else STATE_INVALID
        check = ShowCodeCheck(state, refused.reason, refused.claims)
        if refused.claims is None:
            _count_unsigned_refusal(refused.reason)
        elif record:
            _record_refusal(session, check, verifier=verifier, actor=actor, now=now)
        return check
    certificate = checked_certificate(session, claims.certificate_id)
    if certificate is None:  # signed by us, but the certificate is gone: nothing to vouch for
        check = ShowCodeCheck(STATE_INVALID, "certificate_not_found", claims)
        if record:
            _record_refusal(session, check, verifier=verifier, actor=actor, now=now)
        return check
    state = _live_state(certificate, now)
    if state == STATE_VALID:
        view, shown = _profile_view(cipher, certificate, current_definition(
            session, certificate.type_id, certificate.type_hash, definitions), claims.profile)
    else:
        view, shown = _outline(certificate, state, claims.profile), []
    if record and _first_check(session, claims, verifier, state, now):
        rows.execute(session, _INSERT_USAGE, {
            "public_id": new_public_id(), "holder_index": certificate.holder_index, "certificate_id": certificate.id,
            "kind": USAGE_KIND, "verifier_kind": verifier.kind, "verifier_id": verifier.id,
            "verifier_department_id": verifier.department_id, "purpose": None, "fields": shown, "occurred_at": now})
        record_event(session, actor=actor, action="showcode.checked", now=now, object_type="certificate",
                     object_id=certificate.identifier,
                     details={"state": state, "profile": claims.profile, "nonce": claims.nonce.hex(),
                              "verifier": verifier.kind, "shown": shown})
    return ShowCodeCheck(state, None, claims, view, shown, certificate)


# -- the department API's check ------------------------------------------------------------------------------------

def check_for_department(session: Session, keys: KeyStore, cipher: FieldCipher, text: str, *,
                         definitions: Memo[str, dict[str, Any]], client: ApiClient, actor: Actor,
                         now: datetime) -> ShowCodeCheck:
    """A department scanner's check of a show code (the token or its URL), recorded with the client as verifier."""
    return check_show_code(session, keys, cipher, showcode.token_from_text(text), definitions=definitions,
                           verifier=Verifier("client", client.client_id, client.department_id), actor=actor, now=now)


# -- retention ------------------------------------------------------------------------------------------------------

def purge_show_code_uses(session: Session, *, before: datetime, limit: int = 1000) -> int:
    """Forget one batch (at most `limit` rows) of show-code checks recorded before `before`; answer how many.

    A show_code_use row only tells a repeated check of one code from its first: the holder's usage history is its
    own table (usage_record) and the audit chain is never purged, so neither loses anything here. Past a code's
    lifetime (≤ 300 s) a check of it can only answer "expired", which writes no usage record; a re-scan of an old
    code after its row is gone adds one more failure event to the audit chain, which is a true record of that scan.

    The batch is the head of the table in id order (ids grow with recording time): reading it never walks the
    recent rows, whatever the table's size. A head row not yet old enough ends the batch early; rows recorded out of
    id order by a request's duration go in a later run. On PostgreSQL the head is locked FOR UPDATE SKIP LOCKED, so
    two nodes purge different rows; either way deleting a row twice deletes nothing. Never commits: the caller
    commits each batch, so no lock is held for long.
    """
    head = session.execute(select(ShowCodeUse.id, ShowCodeUse.recorded_at).order_by(ShowCodeUse.id).limit(limit)
                           .with_for_update(skip_locked=True)).all()
    stale: list[int] = []
    for row_id, recorded_at in head:
        if recorded_at >= before:
            break
        stale.append(row_id)
    if not stale:
        return 0
    table = Base.metadata.tables[ShowCodeUse.__tablename__]
    deleted = session.execute(table.delete().where(table.c.id.in_(stale)))
    return int(deleted.rowcount or 0)  # type: ignore[attr-defined]
