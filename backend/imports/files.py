"""Batch files (批量文件): JSON Lines or CSV rows read as a stream, each becoming one certificate's input or
problems."""

from __future__ import annotations

import csv
import hashlib
import io
import re
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import IO, Any

from backend.core import json_input
from backend.errors import PayloadTooLarge, ValidationFailed
from backend.issuance.issuer import UNSET, CertificateInput
from backend.models import CertificateType

FORMATS = ("jsonl", "csv")
MAX_LINE_BYTES = 1 << 20  # one JSON line, like one POST /gov/v1/certificates body
LONG_TERM = "长期"
BOM = b"\xef\xbb\xbf"

JSONL_KEYS = frozenset({"type_code", "certificate_number", "holder", "issued_on", "valid_from", "valid_until",
                        "fields"})
HOLDER_KEYS = frozenset({"name", "code_type", "code"})
CSV_COLUMNS = ("type_code", "certificate_number", "holder_name", "holder_code_type", "holder_code", "issued_on",
               "valid_from", "valid_until")
CSV_REQUIRED = CSV_COLUMNS[:-1]
FIELD_PREFIX = "fields."
_FIELD_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,63}$")
_CSV_TRUE, _CSV_FALSE = frozenset({"true", "是"}), frozenset({"false", "否"})
_CSV_INTEGER = re.compile(r"^-?\d{1,18}$")

Problem = tuple[str | None, str, str]  # (field or None for the whole row, reason, zh-CN detail)


@dataclass
class Row:
    """One data row of the file: its number (JSONL: line; CSV: data row after the header) and what it holds."""

    number: int
    data: CertificateInput | None
    problems: list[Problem] = field(default_factory=list)
    csv_fields: bool = False  # face values are CSV strings, converted once the type is known


class HashingReader(io.RawIOBase):
    """Passes a binary stream through while hashing it (idempotency) and counting bytes (progress)."""

    def __init__(self, source: IO[bytes]) -> None:
        self._source = source
        self._sha256 = hashlib.sha256()
        self.bytes_read = 0

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        data = self._source.read(len(buffer))
        if not data:
            return 0
        n = len(data)
        buffer[:n] = data
        self._sha256.update(data)
        self.bytes_read += n
        return n

    def hexdigest(self) -> str:
        return self._sha256.hexdigest()

    def drain(self) -> str:
        while self.read(1 << 16):
            pass
        return self.hexdigest()


_SURROGATE = re.compile("[\ud800-\udfff]")
_SURROGATE_ESCAPE = re.compile(rb"\\u[dD][89a-fA-F]")  # the only way to one in a line that decoded as UTF-8


def _has_surrogate(value: Any) -> bool:
    """Whether a decoded JSON value holds a lone surrogate (a \\ud800-style escape without its pair) anywhere.
    Without recursion: a line may nest as deep as the JSON parser allows."""
    pending = [value]
    while pending:
        item = pending.pop()
        if isinstance(item, str):
            if _SURROGATE.search(item) is not None:
                return True
        elif isinstance(item, dict):
            pending.extend(item.keys())
            pending.extend(item.values())
        elif isinstance(item, list):
            pending.extend(item)
    return False


def _unicode_problem(value: dict[str, Any]) -> Problem | None:
    """A lone surrogate is not a character: it cannot be hashed, signed or stored. The row fails, naming the
    field (holder.<name>, fields.<name> or the key) when the field's own name is text, else the whole row."""
    if not _has_surrogate(value):
        return None
    detail = "含有无效的 Unicode 转义（单独的代理项，如 \\ud800）"
    for key, item in value.items():
        if _has_surrogate(key):
            return (None, "invalid_unicode", detail)
        if key in ("holder", "fields") and isinstance(item, dict):
            for inner, inner_item in item.items():
                if _has_surrogate(inner):
                    return (key, "invalid_unicode", detail)
                if _has_surrogate(inner_item):
                    return (field_label(f"{key}.{inner}"), "invalid_unicode", detail)
        if _has_surrogate(item):
            return (field_label(key), "invalid_unicode", detail)
    return (None, "invalid_unicode", detail)  # not reached: the surrogate is in some key or value


def _jsonl_row(number: int, line: bytes) -> Row:
    try:
        text = line.rstrip(b"\r\n").decode("utf-8")
    except UnicodeDecodeError:
        return Row(number, None, [(None, "invalid_encoding", "该行不是有效的 UTF-8 文本")])
    try:
        value = json_input.loads(text)  # nested too deep, NaN, 1e400, a 5000-digit integer: a row problem too
    except json_input.JSONInputError as exc:
        return Row(number, None, [(None, "malformed_json", f"该行不是可接受的 JSON：{exc.message}")])
    if not isinstance(value, dict):
        return Row(number, None, [(None, "not_an_object", "每行应为一个 JSON 对象")])
    if _SURROGATE_ESCAPE.search(line) and (unicode_problem := _unicode_problem(value)) is not None:
        return Row(number, None, [unicode_problem])
    problems: list[Problem] = [(field_label(key), "unknown_field", "不支持的字段") for key in value
                               if key not in JSONL_KEYS]
    holder = value.get("holder")
    if not isinstance(holder, dict):
        problems.append(("holder", "not_an_object", "holder 应为对象（name、code_type、code）"))
        holder = {}
    problems.extend((field_label(f"holder.{key}"), "unknown_field", "不支持的字段") for key in holder
                    if key not in HOLDER_KEYS)
    valid_until = value.get("valid_until", UNSET)
    data = CertificateInput(
        type_code=value.get("type_code"), certificate_number=value.get("certificate_number"),
        holder_name=holder.get("name"), holder_code_type=holder.get("code_type"), holder_code=holder.get("code"),
        issued_on=value.get("issued_on"), valid_from=value.get("valid_from"), fields=value.get("fields"),
        valid_until=None if valid_until == LONG_TERM else valid_until,
    )
    return Row(number, data, problems)


def read_jsonl(stream: io.BufferedReader) -> Iterator[Row]:
    """Rows of a JSON Lines file; blank lines are skipped (but counted, so numbers match the file's lines)."""
    number = 0
    while line := stream.readline(MAX_LINE_BYTES + 1):
        number += 1
        if number == 1:
            line = line.removeprefix(BOM)
        if len(line) > MAX_LINE_BYTES and not line.endswith(b"\n"):
            while (rest := stream.readline(1 << 16)) and not rest.endswith(b"\n"):
                pass
            yield Row(number, None, [(None, "line_too_long", f"单行不得超过 {MAX_LINE_BYTES} 字节")])
        elif line.strip():
            yield _jsonl_row(number, line)


def _csv_header(cells: list[str]) -> list[str]:
    names = [cell.strip() for cell in cells]
    unknown = [name for name in names if name not in CSV_COLUMNS
               and not (name.startswith(FIELD_PREFIX) and _FIELD_NAME.match(name.removeprefix(FIELD_PREFIX)))]
    if unknown:
        raise ValidationFailed(f"CSV 表头含未知列：{'、'.join(field_label(n) for n in unknown[:5])}",
                               code="unknown_column",
                               details={"columns": [field_label(n) for n in unknown[:50]],
                                        "allowed": [*CSV_COLUMNS, "fields.<字段名>"]})
    duplicates = sorted({name for name in names if names.count(name) > 1})
    if duplicates:
        raise ValidationFailed(f"CSV 表头列重复：{'、'.join(duplicates[:5])}", code="duplicate_column",
                               details={"columns": duplicates[:50]})
    missing = [name for name in CSV_REQUIRED if name not in names]
    if missing:
        raise ValidationFailed(f"CSV 表头缺少列：{'、'.join(missing)}", code="missing_column",
                               details={"columns": missing})
    return names


def _csv_row(number: int, names: list[str], cells: list[str]) -> Row:
    if len(cells) != len(names):
        return Row(number, None, [(None, "wrong_column_count", f"应有 {len(names)} 列，实际 {len(cells)} 列")])
    values = {name: cell.strip() for name, cell in zip(names, cells, strict=True)}
    code_type = values["holder_code_type"]
    if code_type.isdigit() and len(code_type) < 3:  # a spreadsheet dropped the leading zeros of 001
        code_type = code_type.zfill(3)
    valid_until: Any = values.get("valid_until", "")
    valid_until = UNSET if valid_until == "" else None if valid_until == LONG_TERM else valid_until
    fields = {name.removeprefix(FIELD_PREFIX): value for name, value in values.items()
              if name.startswith(FIELD_PREFIX) and value != ""}
    data = CertificateInput(
        type_code=values["type_code"], certificate_number=values["certificate_number"],
        holder_name=values["holder_name"], holder_code_type=code_type, holder_code=values["holder_code"],
        issued_on=values["issued_on"], valid_from=values["valid_from"], fields=fields, valid_until=valid_until,
    )
    return Row(number, data, csv_fields=True)


def read_csv(stream: io.BufferedReader) -> Iterator[Row]:
    """Rows of a CSV file with a header row (UTF-8, BOM tolerated); numbers count data rows, header excluded."""
    reader = csv.reader(io.TextIOWrapper(stream, encoding="utf-8-sig", newline=""))
    number = 0
    try:
        header = next(reader, None)
        if header is None:
            return
        names = _csv_header(header)
        for cells in reader:
            number += 1
            if any(cell.strip() for cell in cells):
                yield _csv_row(number, names, cells)
    except UnicodeDecodeError as exc:
        raise ValidationFailed(f"CSV 文件不是有效的 UTF-8 文本（第 {number + 1} 数据行附近）",
                               code="invalid_encoding", details={"row": number + 1}) from exc
    except csv.Error as exc:
        raise ValidationFailed(f"CSV 格式错误（第 {number + 1} 数据行）：{exc}", code="malformed_csv",
                               details={"row": number + 1}) from exc


def csv_face(ctype: CertificateType, fields: dict[str, str]) -> dict[str, Any]:
    """CSV cells are strings: booleans and integers become typed values by the type's field schema."""
    specs = {spec["name"]: spec for spec in ctype.definition["fields"]}
    typed: dict[str, Any] = {}
    for name, value in fields.items():
        kind = specs.get(name, {}).get("type")
        if kind == "boolean" and value.lower() in _CSV_TRUE:
            typed[name] = True
        elif kind == "boolean" and value.lower() in _CSV_FALSE:
            typed[name] = False
        elif kind == "integer" and _CSV_INTEGER.match(value):
            typed[name] = int(value)
        else:
            typed[name] = value  # decimals stay strings (exact); anything else is validated as given
    return typed


def field_label(name: str) -> str:
    return name if len(name) <= 100 else name[:100] + "…"


def read_rows(stream: io.BufferedReader, file_format: str, max_rows: int) -> Iterator[Row]:
    """The file's rows; more than `max_rows` of them is refused as a whole (413)."""
    reader = read_jsonl(stream) if file_format == "jsonl" else read_csv(stream)
    for count, row in enumerate(reader, 1):
        if count > max_rows:
            raise PayloadTooLarge(f"批量文件最多 {max_rows} 行", code="too_many_rows", details={"max_rows": max_rows})
        yield row
