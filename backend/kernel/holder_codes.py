"""Holder codes (持证主体代码) and their types (持证主体代码类型): 001, 111, 414, 516, 511, 999 (DESIGN §4)."""

from __future__ import annotations

import datetime
import re
from enum import StrEnum
from typing import Final

from stdnum.cn import ric
from stdnum.exceptions import InvalidChecksum, InvalidComponent, ValidationError

from backend.kernel.org_codes import _fail, _fold_width, _require_str, validate_uscc

__all__ = [
    "HOLDER_CODE_TYPE_LABELS",
    "OTHER_CODE_MAX_LENGTH",
    "HolderCodeType",
    "parse_holder_code_type",
    "validate_holder_code",
]

OTHER_CODE_MAX_LENGTH: Final = 64
_RIC_CHARS_RE: Final = re.compile(r"[0-9]{17}[0-9X]")
_OLD_RIC_RE: Final = re.compile(r"[0-9]{15}")
_PASSPORT_RE: Final = re.compile(r"[EG][0-9]{8}|E[A-HJ-NP-Z][0-9]{7}")
_HK_MACAO_PERMIT_RE: Final = re.compile(r"[HM][0-9]{8}(?:[0-9]{2})?")
_TAIWAN_PERMIT_RE: Final = re.compile(r"[0-9]{8}")


class HolderCodeType(StrEnum):
    """持证主体代码类型."""

    USCC = "001"
    RESIDENT_ID = "111"
    PASSPORT = "414"
    HK_MACAO_PERMIT = "516"
    TAIWAN_PERMIT = "511"
    OTHER = "999"


HOLDER_CODE_TYPE_LABELS: dict[HolderCodeType, str] = {
    HolderCodeType.USCC: "统一社会信用代码",
    HolderCodeType.RESIDENT_ID: "公民身份号码",
    HolderCodeType.PASSPORT: "普通护照",
    HolderCodeType.HK_MACAO_PERMIT: "港澳居民来往内地通行证",
    HolderCodeType.TAIWAN_PERMIT: "台湾居民来往大陆通行证",
    HolderCodeType.OTHER: "其他",
}

# The noun used in error messages for a code of each type.
_HOLDER_CODE_NOUNS: Final[dict[HolderCodeType, str]] = {
    HolderCodeType.USCC: "统一社会信用代码",
    HolderCodeType.RESIDENT_ID: "公民身份号码",
    HolderCodeType.PASSPORT: "普通护照号码",
    HolderCodeType.HK_MACAO_PERMIT: "港澳居民来往内地通行证号码",
    HolderCodeType.TAIWAN_PERMIT: "台湾居民来往大陆通行证号码",
    HolderCodeType.OTHER: "持证主体代码",
}


def _code_type_field(field: str) -> str:
    """``holder.code`` → ``holder.code_type``; any other ``x`` → ``x_type``."""
    if field.endswith(".code"):
        return field[: -len(".code")] + ".code_type"
    return field + "_type"


def parse_holder_code_type(value: str, *, field: str = "holder.code_type") -> HolderCodeType:
    """Return the :class:`HolderCodeType` for ``value`` (surrounding whitespace ignored)."""
    subject = f"持证主体代码类型 {field} "
    text = _require_str(value, field, subject).strip()
    try:
        return HolderCodeType(text)
    except ValueError:
        allowed = "、".join(f"{t.value}（{label}）" for t, label in HOLDER_CODE_TYPE_LABELS.items())
        _fail(field, "unknown_code_type", f"{subject}不受支持，应为以下之一：{allowed}")


def _validate_ric(code: str, *, field: str, subject: str) -> str:
    number = _fold_width(code).upper()
    if _OLD_RIC_RE.fullmatch(number):
        _fail(field, "bad_length", f"{subject}应为 18 位，不再接受 15 位旧版号码")
    if len(number) != 18:
        _fail(field, "bad_length", f"{subject}长度应为 18 位，实际为 {len(number)} 位")
    if not _RIC_CHARS_RE.fullmatch(number):
        _fail(field, "bad_characters", f"{subject}应为 17 位数字加 1 位数字或 X")
    try:
        ric.validate(number)
    except InvalidChecksum:
        _fail(field, "bad_check_character", f"{subject}校验位错误")
    except InvalidComponent:
        try:
            ric.get_birth_date(number)
        except ValidationError:
            _fail(field, "bad_birth_date", f"{subject}中的出生日期无效")
        _fail(field, "bad_region_code", f"{subject}中的行政区划代码无效")
    except (ValueError, LookupError):  # any other stdnum complaint
        _fail(field, "bad_format", f"{subject}格式错误")
    # China's date (UTC+8), whatever the server's local zone: a birth "tomorrow" in UTC may be today here.
    if ric.get_birth_date(number) > datetime.datetime.now(datetime.timezone(datetime.timedelta(hours=8))).date():
        _fail(field, "bad_birth_date", f"{subject}中的出生日期无效")
    return number


def _validate_pattern(
    code: str,
    *,
    field: str,
    subject: str,
    lengths: tuple[int, ...],
    pattern: re.Pattern[str],
    expected: str,
) -> str:
    number = _fold_width(code).upper()
    if len(number) not in lengths:
        wanted = " 或 ".join(str(n) for n in lengths)
        _fail(field, "bad_length", f"{subject}长度应为 {wanted} 位，实际为 {len(number)} 位")
    if not pattern.fullmatch(number):
        _fail(field, "bad_format", f"{subject}格式错误，应为{expected}")
    return number


def validate_holder_code(code_type: str, code: str, *, field: str = "holder.code") -> str:
    """Validate a 持证主体代码 against its 持证主体代码类型 and return the normalised code.

    An unknown type is reported on the type's field (``holder.code`` → ``holder.code_type``)
    with reason ``unknown_code_type``. Normalisation: surrounding whitespace stripped; for
    001/111/414/516/511 full-width characters are folded to ASCII (NFKC) and letters
    upper-cased; 001 additionally loses spaces and dashes. 999 is only stripped.
    """
    kind = parse_holder_code_type(code_type, field=_code_type_field(field))
    subject = f"{_HOLDER_CODE_NOUNS[kind]} {field} "
    text = _require_str(code, field, subject).strip()
    if not text:
        _fail(field, "empty", f"{subject}不能为空")
    if kind is HolderCodeType.USCC:
        return validate_uscc(text, field=field)
    if kind is HolderCodeType.RESIDENT_ID:
        return _validate_ric(text, field=field, subject=subject)
    if kind is HolderCodeType.PASSPORT:
        return _validate_pattern(
            text,
            field=field,
            subject=subject,
            lengths=(9,),
            pattern=_PASSPORT_RE,
            expected=" E 或 G 加 8 位数字，或 E 加 1 位字母（不含 I、O）加 7 位数字",
        )
    if kind is HolderCodeType.HK_MACAO_PERMIT:
        return _validate_pattern(
            text,
            field=field,
            subject=subject,
            lengths=(9, 11),
            pattern=_HK_MACAO_PERMIT_RE,
            expected=" H 或 M 加 8 位或 10 位数字",
        )
    if kind is HolderCodeType.TAIWAN_PERMIT:
        return _validate_pattern(
            text,
            field=field,
            subject=subject,
            lengths=(8,),
            pattern=_TAIWAN_PERMIT_RE,
            expected=" 8 位数字",
        )
    # HolderCodeType.OTHER
    if len(text) > OTHER_CODE_MAX_LENGTH:
        _fail(field, "bad_length", f"{subject}长度不得超过 {OTHER_CODE_MAX_LENGTH} 个字符")
    if not text.isprintable():
        _fail(field, "bad_characters", f"{subject}不得包含控制字符或不可打印字符")
    return text
