"""Certificate identifiers and holder codes (DESIGN §4).

* Certificate identifier (证照标识, GB/T 36904)::

      1.2.156.3005.2.<type code>.<issuer USCC>.<serial>.<version>.<check>

  type code = 21 characters (the defining authority's 18-character USCC followed by a 3-digit
  sequence 001-999), issuer code = the issuing authority's 18-character USCC, serial =
  ``[0-9A-Z]{1,32}``, version = 3 digits ``001``-``999``, check character = ISO/IEC 7064
  MOD 37,36 over the four middle segments concatenated without dots.
* Holder codes (持证主体代码) and their types (持证主体代码类型): 001, 111, 414, 516, 511, 999.

Masking them for display and logs lives in :mod:`backend.security.masking`.

Every validator raises only :class:`backend.errors.ValidationFailed` (HTTP 422) for any string
input, with ``details == {"fields": [{"field": <field>, "reason": <reason>}]}``, a stable
snake_case ``reason`` and a zh-CN message naming the field. Error messages never echo the
submitted value (it may be personal data); they state only what is expected.
"""

from __future__ import annotations

import datetime
import functools
import re
import unicodedata
from dataclasses import dataclass
from enum import StrEnum
from typing import Final, NoReturn

from stdnum.cn import ric, uscc
from stdnum.exceptions import InvalidChecksum, InvalidComponent, ValidationError
from stdnum.iso7064 import mod_37_36

from backend.errors import ValidationFailed

__all__ = [
    "HOLDER_CODE_TYPE_LABELS",
    "IDENTIFIER_PREFIX",
    "CertificateIdentifier",
    "HolderCodeType",
    "build_identifier",
    "identifier_check_character",
    "parse_holder_code_type",
    "parse_identifier",
    "validate_holder_code",
    "validate_type_code",
    "validate_uscc",
]

IDENTIFIER_PREFIX: Final = "1.2.156.3005.2."
USCC_LENGTH: Final = 18
TYPE_CODE_LENGTH: Final = 21
SERIAL_MAX_LENGTH: Final = 32
VERSION_MIN: Final = 1
VERSION_MAX: Final = 999
OTHER_CODE_MAX_LENGTH: Final = 64
# Longest well-formed identifier: prefix + 21 + 18 + 32 + 3 + 1 characters and 4 dots.
IDENTIFIER_MAX_LENGTH: Final = (
    len(IDENTIFIER_PREFIX) + TYPE_CODE_LENGTH + USCC_LENGTH + SERIAL_MAX_LENGTH + 3 + 1 + 4
)
# Inputs longer than this are rejected before any normalisation (strip / upper / regex).
_RAW_INPUT_MAX_LENGTH: Final = 256

_ALPHABET_36: Final = "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZ"
# Explicit ASCII classes: ``\d`` would also match non-ASCII digits.
_USCC_CHARS_RE: Final = re.compile(r"[0-9A-Z]{18}")
# stdnum.cn.uscc's format: 8 digits (registration authority, category, region), then 10 characters of its alphabet
# 0-9 and A-Z without I, O, S, V and Z.
_USCC_STDNUM_RE: Final = re.compile(r"[0-9]{8}[0-9A-HJ-NP-RTUW-Y]{10}")
_TYPE_CODE_CHARS_RE: Final = re.compile(r"[0-9A-Z]{18}[0-9]{3}")
_SERIAL_RE: Final = re.compile(r"[0-9A-Z]+")
_VERSION_RE: Final = re.compile(r"[0-9]{3}")
_RIC_CHARS_RE: Final = re.compile(r"[0-9]{17}[0-9X]")
_OLD_RIC_RE: Final = re.compile(r"[0-9]{15}")
_PASSPORT_RE: Final = re.compile(r"[EG][0-9]{8}|E[A-HJ-NP-Z][0-9]{7}")
_HK_MACAO_PERMIT_RE: Final = re.compile(r"[HM][0-9]{8}(?:[0-9]{2})?")
_TAIWAN_PERMIT_RE: Final = re.compile(r"[0-9]{8}")


def _fail(field: str, reason: str, message: str) -> NoReturn:
    raise ValidationFailed.for_field(field, reason, message)


def _fold_width(text: str) -> str:
    """NFKC-fold human-entered codes: full-width digits and letters (IME input) become ASCII."""
    return unicodedata.normalize("NFKC", text)


def _reason(segment: str, kind: str) -> str:
    """``bad_<kind>`` for a stand-alone value, ``bad_<segment>_<kind>`` inside an identifier."""
    return f"bad_{segment}_{kind}" if segment else f"bad_{kind}"


def _require_str(value: object, field: str, subject: str) -> str:
    """Reject non-strings and absurdly long strings before any other processing."""
    if not isinstance(value, str):
        _fail(field, "bad_format", f"{subject}必须是字符串")
    if len(value) > _RAW_INPUT_MAX_LENGTH:
        _fail(field, "bad_length", f"{subject}过长")
    return value


# ---------------------------------------------------------------------------------------------
# Strict segment checks (no normalisation). `subject` is the zh-CN phrase naming the field.
# ---------------------------------------------------------------------------------------------


def _check_uscc(code: str, *, field: str, subject: str, segment: str = "") -> str:
    if len(code) != USCC_LENGTH:
        _fail(
            field,
            _reason(segment, "length"),
            f"{subject}长度应为 {USCC_LENGTH} 位，实际为 {len(code)} 位",
        )
    if not _USCC_CHARS_RE.fullmatch(code):
        _fail(field, _reason(segment, "characters"), f"{subject}只能包含数字和大写字母")
    problem = _uscc_problem(code)
    if problem == "check_character":
        _fail(field, _reason(segment, "check_character"), f"{subject}校验位错误")
    if problem is not None:
        _fail(
            field,
            _reason(segment, "characters"),
            f"{subject}格式错误：前 8 位应为数字，且不得包含字母 I、O、S、V、Z",
        )
    return code


@functools.lru_cache(maxsize=4096)
def _uscc_problem(code: str) -> str | None:
    """The verdict of stdnum's ``uscc.validate`` on an 18-character code: None, check_character or characters.

    stdnum's checks, with its format rules as one regular expression: ``validate`` compacts the code twice (for
    itself and for ``calc_check_digit``), which made it the most expensive check of an imported row. Remembered
    too: the same few department codes are checked in every identifier parsed.
    """
    if not _USCC_STDNUM_RE.fullmatch(code):
        return "characters"
    try:
        check = uscc.calc_check_digit(code)
    except ValueError:  # a stray stdnum complaint
        return "characters"
    return None if check == code[-1] else "check_character"


def _check_type_code(code: str, *, field: str, subject: str, segment: str = "") -> str:
    if len(code) != TYPE_CODE_LENGTH:
        _fail(
            field,
            _reason(segment, "length"),
            f"{subject}长度应为 {TYPE_CODE_LENGTH} 位，实际为 {len(code)} 位",
        )
    if not _TYPE_CODE_CHARS_RE.fullmatch(code):
        _fail(
            field,
            _reason(segment, "characters"),
            f"{subject}应由 18 位统一社会信用代码和 3 位数字顺序码组成",
        )
    _check_uscc(
        code[:USCC_LENGTH],
        field=field,
        subject=f"{subject}的前 18 位（定义机构统一社会信用代码）",
        segment=segment,
    )
    if code[USCC_LENGTH:] == "000":
        _fail(field, _reason(segment, "sequence"), f"{subject}的顺序码应为 001 至 999")
    return code


def _check_serial(serial: str, *, field: str, subject: str, segment: str = "") -> str:
    if not 1 <= len(serial) <= SERIAL_MAX_LENGTH:
        _fail(
            field,
            _reason(segment, "length"),
            f"{subject}长度应为 1 至 {SERIAL_MAX_LENGTH} 位，实际为 {len(serial)} 位",
        )
    if not _SERIAL_RE.fullmatch(serial):
        _fail(field, _reason(segment, "characters"), f"{subject}只能包含数字和大写字母 A-Z")
    return serial


def _check_version(version: int, *, field: str, subject: str) -> int:
    if isinstance(version, bool) or not isinstance(version, int):
        _fail(field, "bad_format", f"{subject}必须是整数")
    if not VERSION_MIN <= version <= VERSION_MAX:
        _fail(field, "bad_range", f"{subject}应在 {VERSION_MIN} 至 {VERSION_MAX} 之间")
    return version


_PART_LABELS: Final[dict[str, str]] = {
    "type_code": "证照类型代码",
    "issuer_code": "发证机构代码",
    "serial": "证照流水号",
}


def _check_parts(type_code: str, issuer_code: str, serial: str, version: int) -> None:
    """Strict validation of the four identifier segments, each reported under its own name."""
    for name, part in (("type_code", type_code), ("issuer_code", issuer_code), ("serial", serial)):
        _require_str(part, name, f"{_PART_LABELS[name]} {name} ")
    _check_type_code(type_code, field="type_code", subject="证照类型代码 type_code ")
    _check_uscc(issuer_code, field="issuer_code", subject="发证机构代码 issuer_code ")
    _check_serial(serial, field="serial", subject="证照流水号 serial ")
    _check_version(version, field="version", subject="证照版本号 version ")


def _mod_37_36(payload: str) -> str:
    return mod_37_36.calc_check_digit(payload, _ALPHABET_36)


# ---------------------------------------------------------------------------------------------
# Public API: USCC, type code, certificate identifier
# ---------------------------------------------------------------------------------------------


def validate_uscc(value: str, *, field: str = "code") -> str:
    """Validate a 统一社会信用代码 and return it compact and upper-case.

    Full-width characters are folded to ASCII (NFKC), spaces and dashes removed and letters
    upper-cased (stdnum's ``compact``) before the length, character set and check character
    are verified.
    """
    subject = f"统一社会信用代码 {field} "
    text = _require_str(value, field, subject)
    if _USCC_CHARS_RE.fullmatch(text):
        code = text  # already compact, upper-case ASCII: folding and compacting would change nothing
    else:
        try:
            code = uscc.compact(_fold_width(text))
        except ValueError:
            _fail(field, "bad_characters", f"{subject}包含无效字符")
    if not code:
        _fail(field, "empty", f"{subject}不能为空")
    return _check_uscc(code, field=field, subject=subject)


def validate_type_code(value: str, *, field: str = "type_code") -> str:
    """Validate a 证照类型代码: an 18-character USCC plus a 3-digit sequence 001-999.

    Surrounding whitespace is stripped and letters upper-cased; the normalised code is returned.
    """
    subject = f"证照类型代码 {field} "
    code = _require_str(value, field, subject).strip().upper()
    if not code:
        _fail(field, "empty", f"{subject}不能为空")
    return _check_type_code(code, field=field, subject=subject)


def identifier_check_character(type_code: str, issuer_code: str, serial: str, version: int) -> str:
    """ISO/IEC 7064 MOD 37,36 check character over ``type_code + issuer_code + serial + version``.

    The version is rendered as 3 digits. The segments are validated strictly (no normalisation).
    """
    _check_parts(type_code, issuer_code, serial, version)
    return _mod_37_36(f"{type_code}{issuer_code}{serial}{version:03d}")


@dataclass(frozen=True, slots=True)
class CertificateIdentifier:
    """A validated certificate identifier (证照标识). Construction validates every segment."""

    type_code: str
    issuer_code: str
    serial: str
    version: int

    def __post_init__(self) -> None:
        _check_parts(self.type_code, self.issuer_code, self.serial, self.version)

    @property
    def version_text(self) -> str:
        """The version as it appears in the identifier, e.g. ``"001"``."""
        return f"{self.version:03d}"

    @property
    def check_character(self) -> str:
        """The MOD 37,36 check character."""
        return _mod_37_36(f"{self.type_code}{self.issuer_code}{self.serial}{self.version_text}")

    @property
    def value(self) -> str:
        """The full dotted identifier string."""
        return (
            f"{IDENTIFIER_PREFIX}{self.type_code}.{self.issuer_code}.{self.serial}."
            f"{self.version_text}.{self.check_character}"
        )

    def __str__(self) -> str:
        return self.value


def build_identifier(type_code: str, issuer_code: str, serial: str, version: int) -> str:
    """Build ``1.2.156.3005.2.<type code>.<issuer USCC>.<serial>.<version>.<check>``.

    ``type_code`` and ``issuer_code`` are normalised (see :func:`validate_type_code` and
    :func:`validate_uscc`); ``serial`` must already be ``[0-9A-Z]{1,32}``; ``version`` 1..999.
    Errors name the argument (``type_code``, ``issuer_code``, ``serial``, ``version``).
    """
    if type(type_code) is str and type(issuer_code) is str:
        normalised_type, normalised_issuer = _identifier_head(type_code, issuer_code)
    else:  # not hashable, perhaps: let the validators name the argument
        normalised_type, normalised_issuer = _identifier_head.__wrapped__(type_code, issuer_code)
    _check_serial(_require_str(serial, "serial", "证照流水号 serial "), field="serial", subject="证照流水号 serial ")
    _check_version(version, field="version", subject="证照版本号 version ")
    payload = f"{normalised_type}{normalised_issuer}{serial}{version:03d}"
    return f"{IDENTIFIER_PREFIX}{normalised_type}.{normalised_issuer}.{serial}.{version:03d}.{_mod_37_36(payload)}"


@functools.lru_cache(maxsize=1024)
def _identifier_head(type_code: str, issuer_code: str) -> tuple[str, str]:
    """The validated, normalised type and issuer codes of an identifier. Remembered: an issuer builds identifiers
    for a handful of (type, issuer) pairs, and checking both codes cost more than the rest of an identifier."""
    return validate_type_code(type_code, field="type_code"), validate_uscc(issuer_code, field="issuer_code")


def parse_identifier(value: str, *, field: str = "identifier") -> CertificateIdentifier:
    """Parse and fully validate a certificate identifier.

    Surrounding whitespace is ignored; nothing else is normalised (lower-case letters are
    rejected). Reasons: ``bad_format``, ``bad_length``, ``empty``, ``bad_prefix``,
    ``bad_segment_count``, ``bad_type_code_{length,characters,check_character,sequence}``,
    ``bad_issuer_code_{length,characters,check_character}``,
    ``bad_serial_{length,characters}``, ``bad_version_format``, ``bad_version_range``,
    ``bad_check_character_format`` and ``bad_check_character``.
    """
    subject = f"证照标识 {field} "
    text = _require_str(value, field, subject).strip()
    if not text:
        _fail(field, "empty", f"{subject}不能为空")
    if not text.startswith(IDENTIFIER_PREFIX):
        _fail(field, "bad_prefix", f"{subject}应以 {IDENTIFIER_PREFIX} 开头")
    parts = text[len(IDENTIFIER_PREFIX) :].split(".")
    if len(parts) != 5:
        _fail(
            field,
            "bad_segment_count",
            f"{subject}应在前缀后包含 5 段（证照类型代码、发证机构代码、流水号、版本号、校验位），"
            f"实际为 {len(parts)} 段",
        )
    type_code, issuer_code, serial, version_text, check = parts
    inside = f"证照标识 {field} 中的"
    _check_type_code(type_code, field=field, subject=f"{inside}证照类型代码", segment="type_code")
    _check_uscc(issuer_code, field=field, subject=f"{inside}发证机构代码", segment="issuer_code")
    _check_serial(serial, field=field, subject=f"{inside}流水号", segment="serial")
    if not _VERSION_RE.fullmatch(version_text):
        _fail(field, "bad_version_format", f"{inside}版本号应为 3 位数字（001 至 999）")
    if version_text == "000":
        _fail(field, "bad_version_range", f"{inside}版本号应从 001 开始")
    if len(check) != 1 or check not in _ALPHABET_36:
        _fail(field, "bad_check_character_format", f"{inside}校验位应为 1 位数字或大写字母")
    expected = _mod_37_36(f"{type_code}{issuer_code}{serial}{version_text}")
    if check != expected:
        _fail(field, "bad_check_character", f"{subject}校验位错误")
    return CertificateIdentifier(type_code, issuer_code, serial, int(version_text))


# ---------------------------------------------------------------------------------------------
# Holder codes (持证主体代码类型 / 持证主体代码)
# ---------------------------------------------------------------------------------------------


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
