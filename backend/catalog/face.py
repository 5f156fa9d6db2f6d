"""Validation of certificate face fields (照面) against their catalog type's schema."""

from __future__ import annotations

import re
from datetime import date, datetime
from decimal import Decimal, InvalidOperation
from typing import Any

from backend.errors import ValidationFailed

_INTEGER = re.compile(r"^-?\d{1,18}$")
_CONTROL = re.compile(r"[\x00-\x08\x0b-\x1f]")  # control characters but tab (09) and line feed (0a)


class FieldProblems:
    """Collects field errors so a client learns about every bad field at once."""

    def __init__(self) -> None:
        self.items: list[dict[str, str]] = []

    def add(self, field: str, reason: str, detail: str) -> None:
        self.items.append({"field": field, "reason": reason, "detail": detail})

    def raise_if_any(self) -> None:
        if self.items:
            names = "、".join(item["field"] for item in self.items[:5])
            raise ValidationFailed(f"字段校验失败：{names}", details={"fields": self.items})


# Every date a client gives (issue and validity dates, face fields of type date, batch rows, the times of a synced
# certificate) lies in this range: wide enough for any real certificate, narrow enough that date arithmetic on it
# (the day after valid_until, default validities of decades, timestamps) never overflows. Documented in the OpenAPI
# document (backend/schemas.py: InputDate) and the README.
EARLIEST_DATE = date(1900, 1, 1)
LATEST_DATE = date(2199, 12, 31)


class DateOutOfRange(ValueError):
    """A well-formed date outside EARLIEST_DATE … LATEST_DATE."""

    reason = "date_out_of_range"

    def __init__(self) -> None:
        super().__init__(f"日期应在 {EARLIEST_DATE.isoformat()} 至 {LATEST_DATE.isoformat()} 之间")


def check_date_range(day: date) -> date:
    if not EARLIEST_DATE <= day <= LATEST_DATE:
        raise DateOutOfRange()
    return day


def parse_date(value: Any) -> date:
    """A date (YYYY-MM-DD text or a date) within the accepted range; ValueError (DateOutOfRange) otherwise."""
    if isinstance(value, date) and not isinstance(value, datetime):
        return check_date_range(value)
    if not isinstance(value, str) or not re.fullmatch(r"\d{4}-\d{2}-\d{2}", value):
        raise ValueError("日期格式应为 YYYY-MM-DD")
    return check_date_range(date.fromisoformat(value))


def _normalise(spec: dict[str, Any], value: Any) -> Any:
    kind = spec["type"]
    if kind == "string":
        if not isinstance(value, str) or not value.strip():
            raise ValueError("应为非空字符串")
        value = value.strip()
        if spec.get("max_length") and len(value) > spec["max_length"]:
            raise ValueError(f"长度不得超过 {spec['max_length']}")
        if _CONTROL.search(value):
            raise ValueError("不得包含控制字符")
        return value
    if kind == "date":
        return parse_date(value).isoformat()
    if kind == "integer":
        if isinstance(value, bool) or not (
            isinstance(value, int) or (isinstance(value, str) and _INTEGER.match(value))
        ):
            raise ValueError("应为整数")
        if not _INTEGER.match(str(value)):  # as many digits as a text integer may have: no 5000-digit numbers
            raise ValueError("数值超出范围")
        return int(value)
    if kind == "decimal":
        if isinstance(value, bool) or not isinstance(value, int | float | str):
            raise ValueError("应为数字")
        try:
            number = Decimal(str(value))
        except InvalidOperation as exc:
            raise ValueError("应为数字") from exc
        if not number.is_finite() or abs(number) >= Decimal(10) ** 15:
            raise ValueError("数值超出范围")
        return format(number.normalize(), "f")
    if kind == "boolean":
        if not isinstance(value, bool):
            raise ValueError("应为 true 或 false")
        return value
    if kind == "enum":
        if value not in spec["choices"]:
            raise ValueError(f"应为以下之一：{'、'.join(spec['choices'])}")
        return value
    raise ValueError(f"未知字段类型 {kind}")


def validate_face(
    definition: dict[str, Any], fields: Any, problems: FieldProblems, prefix: str = "fields"
) -> dict[str, Any]:
    """Normalise `fields` by the type's schema; unknown, missing and malformed fields go to `problems`."""
    if not isinstance(fields, dict):
        problems.add(prefix, "not_an_object", "照面字段应为对象")
        return {}
    specs = {spec["name"]: spec for spec in definition["fields"]}
    clean: dict[str, Any] = {}
    for name in fields:
        if name not in specs:
            problems.add(f"{prefix}.{name}", "unknown_field", "该证照类型没有此字段")
    for name, spec in specs.items():
        value = fields.get(name)
        if value is None or value == "":
            if spec.get("required", True):
                problems.add(f"{prefix}.{name}", "missing", f"缺少必填字段 {spec['label']}")
            continue
        try:
            clean[name] = _normalise(spec, value)
        except ValueError as exc:
            problems.add(f"{prefix}.{name}", getattr(exc, "reason", "invalid"), f"{spec['label']}：{exc}")
    return clean
