"""Masking (脱敏) of personal data for display and logs: one rule per kind of value, used everywhere."""

from __future__ import annotations

import re
from typing import Final

from backend.kernel.identifiers import HolderCodeType

__all__ = ["mask_certificate_number", "mask_holder_code", "mask_id_number", "mask_name", "mask_value"]

_CJK_RE: Final = re.compile(r"[\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff\U00020000-\U0003134f]")
_WHITESPACE_SPLIT_RE: Final = re.compile(r"(\s+)")
_FIXED_STARS: Final = "******"  # a fully masked value does not even reveal its length


def mask_id_number(number: str) -> str:
    """Keep the first 3 and last 2 characters and star the rest; 5 characters or fewer are starred entirely."""
    if len(number) <= 5:
        return "*" * len(number)
    return f"{number[:3]}{'*' * (len(number) - 5)}{number[-2:]}"


def mask_holder_code(code_type: str, code: str) -> str:
    """Mask a holder code (持证主体代码) by :func:`mask_id_number`, surrounding whitespace ignored.

    A USCC (001) identifies an organisation, not a person, and is returned unchanged. Unknown types are masked.
    """
    if code_type.strip() == HolderCodeType.USCC.value:
        return code
    return mask_id_number(code.strip())


def mask_certificate_number(number: str) -> str:
    """Mask a certificate number (证照编号) as printed: it may carry the holder's ID number."""
    return mask_id_number(number.strip())


def mask_name(name: str) -> str:
    """Mask a personal name for display.

    Chinese names keep the first character ("张三" → "张*", "欧阳娜娜" → "欧***"); a single
    character becomes "*"; Latin names keep the first letter of each word ("John Smith" →
    "J*** S****").
    """
    text = name.strip()
    if len(text) <= 1:
        return "*" * len(text)
    if _CJK_RE.search(text):
        return text[0] + "*" * (len(text) - 1)
    return "".join(
        part if not part or part.isspace() else part[0] + "*" * (len(part) - 1)
        for part in _WHITESPACE_SPLIT_RE.split(text)
    )


def mask_value(rule: str, value: str) -> str:
    """Mask a face value by its catalog rule: none, name, id_number, partial (keep the start), full."""
    if rule == "none":
        return value
    if rule == "name":
        return mask_name(value)
    if rule == "id_number":
        # Always starred: a field holding an ID number is personal whatever code type it is.
        return mask_id_number(value.strip())
    if rule == "partial":
        text = value.strip()
        keep = min(6, len(text) // 3)
        return f"{text[:keep]}{'*' * 4}" if keep else "*" * max(1, len(text))
    return _FIXED_STARS
