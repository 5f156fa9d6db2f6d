"""Untrusted JSON read safely: nesting checked before parsing (without recursion), no NaN or Infinity, and only
numbers that exist in every JSON reader (finite floats, integers of at most MAX_INTEGER_DIGITS digits)."""

from __future__ import annotations

import json
import math
import re
from itertools import accumulate
from typing import Any

MAX_DEPTH = 32  # arrays and objects inside each other; our deepest body nests 4
MAX_INTEGER_DIGITS = 30  # far above any id, count or amount; JavaScript is exact only to 16 digits anyway

# A JSON string, escapes included. Possessive, and the closing quote optional: an unterminated string ends the text
# instead of making the scan restart at each later quote (quadratic time).
_STRING = re.compile(r'"(?:[^"\\]++|\\.)*+"?', re.DOTALL)
_NOT_BRACKET = re.compile(r"[^\[\]{}]++")
_STEP = {"[": 1, "{": 1, "]": -1, "}": -1}


class JSONInputError(json.JSONDecodeError):
    """The text is not JSON we accept; `reason`: malformed, invalid_encoding, too_deep or invalid_number, `message`
    in zh-CN. A JSONDecodeError (so a ValueError): whoever handles JSON that does not decode handles these too.
    """

    def __init__(self, reason: str, message: str, **details: Any) -> None:
        super().__init__(message, "", 0)
        self.reason = reason
        self.message = message
        self.details = details


def nesting_depth(text: str) -> int:
    """How deep arrays and objects nest in `text`, counted without parsing (brackets inside strings do not count).

    Exact for valid JSON; for invalid JSON exact up to the point where a parser stops, so a parser never nests
    deeper than this. Linear time, no recursion.
    """
    if text.count("[") + text.count("{") <= MAX_DEPTH:  # the usual body: cannot nest deeper than it has brackets
        return text.count("[") + text.count("{")
    brackets = _NOT_BRACKET.sub("", _STRING.sub("", text))
    return max(accumulate(map(_STEP.__getitem__, brackets)), default=0)


def _refuse_constant(name: str) -> Any:
    raise JSONInputError("invalid_number", f"JSON 中不允许 {name}（非有限数值）")


def _finite_float(text: str) -> float:
    value = float(text)
    if not math.isfinite(value):
        raise JSONInputError("invalid_number", "JSON 中的数值超出范围")
    return value


def _bounded_int(text: str) -> int:
    if len(text.lstrip("-")) > MAX_INTEGER_DIGITS:
        raise JSONInputError("invalid_number", f"JSON 中的整数不得超过 {MAX_INTEGER_DIGITS} 位",
                             max_digits=MAX_INTEGER_DIGITS)
    return int(text)


def decode_text(data: str | bytes) -> str:
    """The text of a JSON document: UTF-8 (or, as RFC 4627 allowed and `json` detects, UTF-16/32)."""
    if isinstance(data, str):
        return data
    if not isinstance(data, bytes | bytearray):
        raise TypeError(f"JSON text must be str or bytes, not {type(data).__name__}")
    try:
        # surrogatepass, as json.loads does: a lone surrogate is then refused where the value is used (the edge).
        return data.decode(json.detect_encoding(data), "surrogatepass")
    except UnicodeDecodeError as exc:
        raise JSONInputError("invalid_encoding", "不是有效的 UTF-8 文本") from exc


def loads(data: str | bytes) -> Any:
    """Parse untrusted JSON; raises JSONInputError (a ValueError) for anything we do not accept."""
    text = decode_text(data)
    if nesting_depth(text) > MAX_DEPTH:
        raise JSONInputError("too_deep", f"JSON 嵌套层数不得超过 {MAX_DEPTH}", max_depth=MAX_DEPTH)
    try:
        return json.loads(text, parse_constant=_refuse_constant, parse_float=_finite_float, parse_int=_bounded_int)
    except JSONInputError:
        raise
    except json.JSONDecodeError as exc:
        raise JSONInputError("malformed", f"不是有效的 JSON：第 {exc.lineno} 行第 {exc.colno} 列，{exc.msg}") from exc
    except (ValueError, RecursionError) as exc:  # not expected after the checks above; never a 500 either way
        raise JSONInputError("malformed", "不是可接受的 JSON") from exc
