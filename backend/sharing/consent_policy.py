"""Minimisation and grading rules (信息采集最小化, 分类分级) shared by access requests and offered grants."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from backend.errors import ValidationFailed
from backend.models import CertificateType

# Claims outside the face (照面) that a department may ask for by these names; labels are shown to the holder.
HOLDER_NAME, HOLDER_CODE, CERTIFICATE_NUMBER = "holder.name", "holder.code", "document.number"
COMMON_FIELD_LABELS = {HOLDER_NAME: "持证主体名称", HOLDER_CODE: "持证主体代码", CERTIFICATE_NUMBER: "证照编号"}
STEP_UP_LEVEL = 3  # classification level from which consent needs a recent login
CODE_MAX_SECONDS = 600  # a grant code (授权码) lives at most 10 minutes (DESIGN §5)


class FieldsNotShareable(ValidationFailed):
    """422: fields outside the type's sharing policy (or unknown) were asked for; `details` names them."""

    code = "fields_not_shareable"
    message = "所请求的字段超出该证照类型的共享范围"


@dataclass(frozen=True)
class ConsentField:
    name: str
    label: str


def _sharing(ctype: CertificateType) -> dict[str, Any]:
    sharing: dict[str, Any] = ctype.definition.get("sharing", {})
    return sharing


def grantable_fields(ctype: CertificateType) -> list[str]:
    """Every field name a grant for this type may carry, in catalog order (common claims first)."""
    return [*COMMON_FIELD_LABELS, *_sharing(ctype).get("disclosable_fields", [])]


def check_fields(ctype: CertificateType, fields: Sequence[str], *, field: str = "fields") -> list[str]:
    """The requested fields, de-duplicated in their order; refuses an empty list or any field the policy forbids."""
    wanted = list(dict.fromkeys(fields))
    if not wanted:
        raise ValidationFailed.for_field(field, "empty", f"字段 {field} 不能为空：至少选择一个字段")
    allowed = set(grantable_fields(ctype))
    refused = [name for name in wanted if name not in allowed]
    if refused:
        raise FieldsNotShareable(
            f"{ctype.name}不允许共享以下字段：{'、'.join(refused)}",
            details={"type_code": ctype.type_code, "fields": [{"field": field, "name": name, "reason": "not_shareable"}
                                                              for name in refused],
                     "allowed": sorted(allowed)},
        )
    return wanted


def field_labels(ctype: CertificateType, names: Iterable[str]) -> list[ConsentField]:
    """The Chinese label of each field name, for the holder's consent screen and their grant list."""
    labels = dict(COMMON_FIELD_LABELS)
    labels.update({spec["name"]: spec["label"] for spec in ctype.definition.get("fields", [])})
    return [ConsentField(name, labels.get(name, name)) for name in names]


def max_grant_seconds(ctypes: Iterable[CertificateType]) -> int:
    """The longest lifetime a grant over these types may have: the strictest policy wins."""
    return min(int(_sharing(ctype).get("max_grant_seconds", 86400)) for ctype in ctypes)


def cap_lifetime(ctypes: Iterable[CertificateType], requested_seconds: int | None) -> int:
    """The grant lifetime: what was asked for, never more than every type allows."""
    cap = max_grant_seconds(ctypes)
    return cap if requested_seconds is None else min(requested_seconds, cap)


def needs_step_up(ctypes: Iterable[CertificateType]) -> bool:
    """True when consent to any of these types needs a login within the last 5 minutes (401 reauth_required)."""
    return any(ctype.classification_level >= STEP_UP_LEVEL or _sharing(ctype).get("step_up_required", False)
               for ctype in ctypes)
