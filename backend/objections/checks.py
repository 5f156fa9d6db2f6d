"""Input checks shared by filing and answers: disputed fields, statements and answers, the deadline policy,
and the certificate's field labels and values they are checked against."""

from __future__ import annotations

import re
from collections.abc import Collection, Sequence
from dataclasses import dataclass
from typing import Any

from sqlalchemy.orm import Session

from backend.catalog.definitions import definition_as_issued
from backend.crypto.encryption import FieldCipher
from backend.errors import Conflict, ValidationFailed
from backend.issuance.certificates import decrypt
from backend.models import Certificate, CertificateType
from backend.models.issuance import REVOKED, SUPERSEDED

DEFAULT_ACKNOWLEDGE_DAYS = 1
DEFAULT_RESOLVE_DAYS = 5
MAX_DISPUTED = 20
MAX_CLAIMED_LENGTH = 500
MAX_DESCRIPTION = 1000
MAX_ANSWER = 500
HOLDER_NAME_FIELD = "holder.name"
NOT_SHOWN = "not_shown"  # a department disputes a field it was not shown


@dataclass(frozen=True)
class DisputedField:
    """A field the filer says is wrong, and the value they say it should have."""

    field: str
    claimed_value: str


@dataclass(frozen=True)
class DeadlinePolicy:
    acknowledge_days: int = DEFAULT_ACKNOWLEDGE_DAYS
    resolve_days: int = DEFAULT_RESOLVE_DAYS


def deadline_policy(certificate_type: CertificateType) -> DeadlinePolicy:
    """The type's time limits (catalog `objections.acknowledge_working_days` / `resolve_working_days`), else 1 / 5."""
    policy = certificate_type.definition.get("objections") or {}
    return DeadlinePolicy(int(policy.get("acknowledge_working_days") or DEFAULT_ACKNOWLEDGE_DAYS),
                          int(policy.get("resolve_working_days") or DEFAULT_RESOLVE_DAYS))


def field_labels(session: Session, certificate: Certificate) -> dict[str, str]:
    labels = {spec["name"]: spec["label"] for spec in definition_as_issued(session, certificate)["fields"]}
    return {HOLDER_NAME_FIELD: "持证主体名称", **labels}


def certificate_values(cipher: FieldCipher, certificate: Certificate) -> dict[str, Any]:
    content = decrypt(cipher, certificate)
    return {HOLDER_NAME_FIELD: content.holder_name, **content.fields}


def _refused_disputed(problems: list[dict[str, str]]) -> ValidationFailed:
    message = "异议字段无效：" + "、".join(p["field"] for p in problems[:5])
    if any(p["reason"] == NOT_SHOWN for p in problems):
        message += "（只能对本系统核验、扫码或用证时看到的字段提出异议）"
    return ValidationFailed(message, code="objection_disputed_invalid", details={"fields": problems})


def check_disputed(session: Session, certificate: Certificate, disputed: Sequence[DisputedField], *,
                   shown: Collection[str] | None = None) -> list[dict[str, str]]:
    """The disputed fields as stored, checked by their names and the claims' form only, never against the
    certificate's values (see `check_changed`). With `shown`, a field outside it is refused as `not_shown`."""
    if not disputed:
        raise ValidationFailed.for_field("disputed", "empty", "请至少指出一个有误的字段")
    if len(disputed) > MAX_DISPUTED:
        raise ValidationFailed.for_field("disputed", "too_many", f"有误的字段最多 {MAX_DISPUTED} 个")
    labels = field_labels(session, certificate)
    named: set[str] = set()
    problems = []
    for n, item in enumerate(disputed):
        where = f"disputed[{n}]"
        claimed = item.claimed_value.strip()
        if item.field not in labels:
            problems.append({"field": f"{where}.field", "reason": "unknown_field"})
        elif item.field in named:
            problems.append({"field": f"{where}.field", "reason": "duplicate"})
        elif shown is not None and item.field not in shown:
            problems.append({"field": f"{where}.field", "reason": NOT_SHOWN})
        elif not claimed or len(claimed) > MAX_CLAIMED_LENGTH or any(ord(c) < 32 for c in claimed):
            problems.append({"field": f"{where}.claimed_value", "reason": "invalid"})
        named.add(item.field)
    if problems:
        raise _refused_disputed(problems)
    return [{"field": item.field, "claimed_value": item.claimed_value.strip()} for item in disputed]


def check_changed(cipher: FieldCipher, certificate: Certificate, checked: list[dict[str, str]], *,
                  known: Collection[str] | None = None) -> None:
    """A claim equal to the value on the certificate is refused (`unchanged`), but only for the fields the filer
    knows in full (`known`; None: all, the holder's own): for any other field the answer would tell a right guess
    from a wrong one. Runs after every other check, so that no earlier refusal depends on a value either."""
    fields = [item["field"] for item in checked]
    if known is not None:
        fields = [name for name in fields if name in known]
    if not fields:
        return
    current = certificate_values(cipher, certificate)
    problems = [{"field": f"disputed[{n}].claimed_value", "reason": "unchanged"} for n, item in enumerate(checked)
                if item["field"] in fields and str(current.get(item["field"], "")) == item["claimed_value"]]
    if problems:
        raise _refused_disputed(problems)


_CONTROL_BUT_LINES = re.compile(r"[\x00-\x08\x0b-\x1f\x7f]")


def plain_text(value: str) -> str:
    """A person's text as stored: line breaks and tabs kept, other control characters (NUL above all, which
    PostgreSQL refuses) and lone surrogates dropped, surrounding blanks trimmed."""
    text = value.replace("\r\n", "\n").replace("\r", "\n").encode("utf-8", "replace").decode("utf-8")
    return _CONTROL_BUT_LINES.sub("", text).strip()


def check_description(description: str) -> str:
    text = plain_text(description)
    if not text or len(text) > MAX_DESCRIPTION:
        raise ValidationFailed.for_field("description", "invalid", f"异议说明应为 1–{MAX_DESCRIPTION} 个字符")
    return text


def check_correctable(certificate: Certificate) -> None:
    if certificate.status == SUPERSEDED:
        raise Conflict("该证照已有更新版本，请对最新版本提出异议", code="objection_certificate_superseded")
    if certificate.status == REVOKED:
        raise Conflict("该证照已注销，不能再更正", code="objection_certificate_revoked")
