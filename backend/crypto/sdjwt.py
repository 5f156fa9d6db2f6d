"""SD-JWT (RFC 9901): selective disclosures, issuance, presentation and structural verification."""

from __future__ import annotations

import base64
import hashlib
import json
import re
import secrets
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

import jwt

from backend.core import json_input

SD_ALG = "sha-256"
ISSUED_TYP = "dc+sd-jwt"
KB_TYP = "kb+jwt"
_RESERVED = {"_sd", "...", "_sd_alg"}
_B64URL = re.compile(r"[A-Za-z0-9_-]+")

Signer = Callable[[dict[str, Any], dict[str, Any]], str]


class SdJwtFormatError(ValueError):
    """The SD-JWT is structurally invalid; `reason` is a stable token."""

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason


def b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).decode().rstrip("=")


def b64url_decode(text: str) -> bytes:
    if not isinstance(text, str) or not _B64URL.fullmatch(text):
        raise SdJwtFormatError("malformed_disclosure", "not base64url")
    try:
        return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))
    except ValueError as exc:  # a length of 4n + 1 characters holds no whole byte
        raise SdJwtFormatError("malformed_disclosure", "not base64url") from exc


def digest(disclosure: str) -> str:
    """The disclosure's digest; a disclosure is base64url text, so anything else is a format error."""
    if not isinstance(disclosure, str):
        raise SdJwtFormatError("malformed_disclosure", "披露项必须是字符串")
    try:
        data = disclosure.encode("ascii")
    except UnicodeEncodeError as exc:
        raise SdJwtFormatError("malformed_disclosure", "披露项不是 base64url 文本") from exc
    return b64url(hashlib.sha256(data).digest())


def make_disclosure(name: str, value: Any) -> str:
    salt = b64url(secrets.token_bytes(16))
    return b64url(json.dumps([salt, name, value], ensure_ascii=False, separators=(",", ":")).encode())


@dataclass(frozen=True)
class IssuedSdJwt:
    token: str  # <issuer JWT>~<disclosure>~…~
    disclosures: dict[tuple[str, str], str]  # (object, claim) → disclosure


def issue(
    sign: Signer,
    *,
    visible: dict[str, Any],
    disclosable: dict[str, dict[str, Any]],
    decoys: int = 2,
) -> IssuedSdJwt:
    """Sign `visible` claims plus one object per `disclosable` key whose every property is selectively disclosable."""
    payload = dict(visible)
    disclosures: dict[tuple[str, str], str] = {}
    for obj_name, claims in disclosable.items():
        digests = []
        for claim, value in claims.items():
            disclosure = make_disclosure(claim, value)
            disclosures[(obj_name, claim)] = disclosure
            digests.append(digest(disclosure))
        # Decoy digests hide how many claims the object has (RFC 9901 §4.2.5).
        digests.extend(b64url(hashlib.sha256(secrets.token_bytes(32)).digest()) for _ in range(decoys))
        payload[obj_name] = {"_sd": sorted(digests)}
    payload["_sd_alg"] = SD_ALG
    issuer_jwt = sign(payload, {"typ": ISSUED_TYP})
    return IssuedSdJwt(issuer_jwt + "~" + "".join(d + "~" for d in disclosures.values()), disclosures)


@dataclass(frozen=True)
class ParsedSdJwt:
    issuer_jwt: str
    disclosures: list[str]
    kb_jwt: str | None

    @property
    def without_kb(self) -> str:
        return self.issuer_jwt + "~" + "".join(d + "~" for d in self.disclosures)


def parse(token: str) -> ParsedSdJwt:
    if not isinstance(token, str) or "~" not in token:
        raise SdJwtFormatError("not_sd_jwt", "不是 SD-JWT 格式（缺少 ~ 分隔符）")
    parts = token.split("~")
    issuer_jwt, middle, last = parts[0], parts[1:-1], parts[-1]
    if issuer_jwt.count(".") != 2 or any(not d for d in middle):
        raise SdJwtFormatError("not_sd_jwt", "SD-JWT 结构错误")
    return ParsedSdJwt(issuer_jwt, middle, last or None)


def decode_disclosure(disclosure: str) -> tuple[str, str | None, Any]:
    try:
        decoded = json_input.loads(b64url_decode(disclosure))
    except ValueError as exc:  # bad base64/UTF-8/JSON, nested too deep, NaN or numbers out of range
        raise SdJwtFormatError("malformed_disclosure", "披露项无法解析") from exc
    if isinstance(decoded, list) and len(decoded) == 3 and isinstance(decoded[0], str) and isinstance(decoded[1], str):
        if decoded[1] in _RESERVED:
            raise SdJwtFormatError("malformed_disclosure", "披露项使用了保留的声明名")
        return decoded[0], decoded[1], decoded[2]
    if isinstance(decoded, list) and len(decoded) == 2 and isinstance(decoded[0], str):
        return decoded[0], None, decoded[1]
    raise SdJwtFormatError("malformed_disclosure", "披露项结构错误")


def reconstruct(payload: dict[str, Any], disclosures: Iterable[str]) -> dict[str, Any]:
    """Replace digests by disclosed values (RFC 9901 §7.1). Duplicate or unreferenced disclosures are errors.

    Whatever the input, the answer is the claims or SdJwtFormatError: payload and disclosures come from the
    presenter, so a wrong type anywhere is a format error, never a crash.
    """
    if not isinstance(payload, dict):
        raise SdJwtFormatError("malformed_payload", "载荷必须是 JSON 对象")
    if payload.get("_sd_alg", SD_ALG) != SD_ALG:
        raise SdJwtFormatError("unsupported_sd_alg", "不支持的 _sd_alg")
    by_digest: dict[str, str] = {}
    for disclosure in disclosures:
        key = digest(disclosure)
        if key in by_digest:
            raise SdJwtFormatError("duplicate_disclosure", "同一披露项出现多次")
        by_digest[key] = disclosure
    seen: set[str] = set()

    def take(reference: str) -> str | None:
        """The disclosure a digest refers to (None: undisclosed or a decoy); a digest may appear only once."""
        if reference in seen:
            raise SdJwtFormatError("duplicate_digest", "摘要被重复引用")
        seen.add(reference)
        return by_digest.get(reference)

    def walk_object(node: dict[Any, Any]) -> dict[Any, Any]:
        result = {key: walk(value) for key, value in node.items() if key not in ("_sd", "_sd_alg")}
        digests = node.get("_sd", [])
        if not isinstance(digests, list):
            raise SdJwtFormatError("malformed_payload", "_sd 必须是摘要数组")
        for item in digests:
            if not isinstance(item, str):
                raise SdJwtFormatError("malformed_payload", "_sd 中必须是摘要字符串")
            disclosure = take(item)
            if disclosure is None:
                continue
            _, name, value = decode_disclosure(disclosure)
            if name is None or name in result:
                raise SdJwtFormatError("malformed_disclosure", "披露项与已有声明冲突")
            result[name] = walk(value)
        return result

    def walk_array(node: list[Any]) -> list[Any]:
        out = []
        for element in node:
            if not (isinstance(element, dict) and set(element) == {"..."}):
                out.append(walk(element))
                continue
            reference = element["..."]
            if not isinstance(reference, str):
                raise SdJwtFormatError("malformed_payload", "数组元素的 ... 必须是摘要字符串")
            disclosure = take(reference)
            if disclosure is None:
                continue
            _, name, value = decode_disclosure(disclosure)
            if name is not None:
                raise SdJwtFormatError("malformed_disclosure", "数组元素披露项结构错误")
            out.append(walk(value))
        return out

    def walk(node: Any) -> Any:
        if isinstance(node, dict):
            return walk_object(node)
        if isinstance(node, list):
            return walk_array(node)
        return node

    try:
        claims = walk_object(payload)
    except RecursionError as exc:  # nesting deeper than any certificate has
        raise SdJwtFormatError("malformed_payload", "载荷嵌套过深") from exc
    unreferenced = set(by_digest) - seen
    if unreferenced:
        raise SdJwtFormatError("unreferenced_disclosure", "存在未被引用的披露项")
    return claims


def sd_hash(presentation_without_kb: str) -> str:
    return b64url(hashlib.sha256(presentation_without_kb.encode("ascii")).digest())


def select_disclosures(issued: str, wanted: set[tuple[str, str]], objects: Iterable[str]) -> str:
    """Keep only the disclosures of `wanted` (object, claim) pairs; the result ends with `~` (no KB-JWT)."""
    parsed = parse(issued)
    object_names = set(objects)
    kept = []
    # Map each disclosure back to the object whose _sd array holds its digest.
    payload = jwt.decode(parsed.issuer_jwt, options={"verify_signature": False})
    for disclosure in parsed.disclosures:
        _, name, _ = decode_disclosure(disclosure)
        d = digest(disclosure)
        owner = next((o for o in object_names if d in payload.get(o, {}).get("_sd", [])), None)
        if owner is not None and (owner, name or "") in wanted:
            kept.append(disclosure)
    return parsed.issuer_jwt + "~" + "".join(d + "~" for d in kept)


def key_binding_jwt(sign: Signer, *, presentation_without_kb: str, audience: str, nonce: str, iat: int) -> str:
    return sign({"aud": audience, "nonce": nonce, "iat": iat, "sd_hash": sd_hash(presentation_without_kb)},
                {"typ": KB_TYP})
