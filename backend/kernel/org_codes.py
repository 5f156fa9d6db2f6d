"""Organisation codes: 统一社会信用代码 (USCC, GB 32100) and 证照类型代码 (certificate type codes, DESIGN §4)."""

from __future__ import annotations

import functools
import re
import unicodedata
from operator import mul
from typing import Final, NoReturn

from stdnum.cn import uscc

from backend.errors import ValidationFailed

__all__ = ["TYPE_CODE_LENGTH", "USCC_LENGTH", "validate_type_code", "validate_uscc"]

USCC_LENGTH: Final = 18
TYPE_CODE_LENGTH: Final = 21
# Inputs longer than this are rejected before any normalisation (strip / upper / regex).
_RAW_INPUT_MAX_LENGTH: Final = 256

# Explicit ASCII classes: ``\d`` would also match non-ASCII digits.
_USCC_CHARS_RE: Final = re.compile(r"[0-9A-Z]{18}")
# stdnum.cn.uscc's format: 8 digits (registration authority, category, region), then 10 characters of its alphabet
# 0-9 and A-Z without I, O, S, V and Z.
_USCC_STDNUM_RE: Final = re.compile(r"[0-9]{8}[0-9A-HJ-NP-RTUW-Y]{10}")
_TYPE_CODE_CHARS_RE: Final = re.compile(r"[0-9A-Z]{18}[0-9]{3}")
# GB 32100 check character: weighted sum of the first 17 characters' values, modulo 31 (as stdnum.cn.uscc).
_USCC_ALPHABET: Final = "0123456789ABCDEFGHJKLMNPQRTUWXY"
_USCC_VALUES: Final = {character: value for value, character in enumerate(_USCC_ALPHABET)}
_USCC_WEIGHTS: Final = (1, 3, 9, 27, 19, 26, 16, 17, 20, 29, 25, 13, 8, 24, 10, 30, 28)


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
# Strict checks (no normalisation). `subject` is the zh-CN phrase naming the field.
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

    stdnum's rules (GB 32100), computed directly: ``validate`` cleans and compacts the code twice, character by
    character, which made it the costliest check of an imported row (a test compares the verdicts with stdnum's
    on random, valid and mutated codes). Remembered too: the same few department codes recur in identifiers.
    """
    if not _USCC_STDNUM_RE.fullmatch(code):
        return "characters"
    total = sum(map(mul, map(_USCC_VALUES.__getitem__, code[:17]), _USCC_WEIGHTS))
    return None if _USCC_ALPHABET[-total % 31] == code[17] else "check_character"


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


# ---------------------------------------------------------------------------------------------
# Public API
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
