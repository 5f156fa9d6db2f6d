"""Certificate identifiers (证照标识, GB/T 36904, DESIGN §4): build, parse and check them; the import point of the
USCC, type-code and holder-code validators too."""

from __future__ import annotations

import functools
import re
from dataclasses import dataclass
from typing import Final

from stdnum.iso7064 import mod_37_36

from backend.kernel.holder_codes import (
    HOLDER_CODE_TYPE_LABELS,
    OTHER_CODE_MAX_LENGTH,
    HolderCodeType,
    parse_holder_code_type,
    validate_holder_code,
)
from backend.kernel.org_codes import (
    TYPE_CODE_LENGTH,
    USCC_LENGTH,
    _check_type_code,
    _check_uscc,
    _fail,
    _reason,
    _require_str,
    validate_type_code,
    validate_uscc,
)

__all__ = [
    "HOLDER_CODE_TYPE_LABELS",
    "IDENTIFIER_PREFIX",
    "OTHER_CODE_MAX_LENGTH",
    "TYPE_CODE_LENGTH",
    "USCC_LENGTH",
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
SERIAL_MAX_LENGTH: Final = 32
VERSION_MIN: Final = 1
VERSION_MAX: Final = 999
# Longest well-formed identifier: prefix + 21 + 18 + 32 + 3 + 1 characters and 4 dots.
IDENTIFIER_MAX_LENGTH: Final = (
    len(IDENTIFIER_PREFIX) + TYPE_CODE_LENGTH + USCC_LENGTH + SERIAL_MAX_LENGTH + 3 + 1 + 4
)

_ALPHABET_36: Final = "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZ"
_SERIAL_RE: Final = re.compile(r"[0-9A-Z]+")
_VERSION_RE: Final = re.compile(r"[0-9]{3}")


# ---------------------------------------------------------------------------------------------
# Strict segment checks (no normalisation). `subject` is the zh-CN phrase naming the field.
# ---------------------------------------------------------------------------------------------


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
# Public API
# ---------------------------------------------------------------------------------------------


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
