"""Presentations (RFC 9901 §4.3): an issued SD-JWT cut down to the consented claims, plus a key-binding JWT."""

from __future__ import annotations

import time
from collections.abc import Iterable
from typing import Any

import jwt

from backend.crypto.sdjwt import Signer, decode_disclosure, digest, key_binding_jwt, parse

ClaimPath = tuple[str, ...]


def _related(path: ClaimPath, wanted: set[ClaimPath]) -> bool:
    """A disclosure at `path` is needed if it is a wanted claim, on the way to one, or inside one."""
    return any(path[: len(w)] == w or w[: len(path)] == path for w in wanted)


def disclosures_for(issued: str, wanted: Iterable[ClaimPath]) -> list[str]:
    """The disclosures of `issued` (in their issued order) that reveal the `wanted` claim paths, e.g.
    ("face", "company_name"). A wanted path the token cannot reveal is simply not revealed."""
    parsed = parse(issued)
    targets = {tuple(path) for path in wanted}
    by_digest = {digest(d): d for d in parsed.disclosures}
    payload = jwt.decode(parsed.issuer_jwt, options={"verify_signature": False})
    kept: set[str] = set()

    def walk(node: Any, path: ClaimPath) -> None:
        if isinstance(node, dict):
            for key, value in node.items():
                if key not in ("_sd", "_sd_alg"):
                    walk(value, (*path, str(key)))
            for reference in node.get("_sd", []) if isinstance(node.get("_sd"), list) else []:
                disclosure = by_digest.get(reference) if isinstance(reference, str) else None
                if disclosure is None:
                    continue  # a decoy, or a claim not in this token
                _, name, value = decode_disclosure(disclosure)
                child = (*path, name or "")
                if _related(child, targets):
                    kept.add(disclosure)
                    walk(value, child)
        elif isinstance(node, list):
            for element in node:
                if isinstance(element, dict) and set(element) == {"..."}:
                    disclosure = by_digest.get(element["..."]) if isinstance(element["..."], str) else None
                    # An array element belongs to the array claim: revealed when the claim (or what holds it) is.
                    if disclosure is not None and any(path[: len(w)] == w for w in targets):
                        kept.add(disclosure)
                        walk(decode_disclosure(disclosure)[2], path)
                else:
                    walk(element, path)

    walk(payload, ())
    return [d for d in parsed.disclosures if d in kept]


def present(issued: str, wanted: Iterable[ClaimPath], *, sign: Signer, audience: str, nonce: str,
            iat: int | None = None) -> str:
    """`<issuer JWT>~<kept disclosures>~<KB-JWT>`: the KB-JWT (typ kb+jwt, signed by the holder key through `sign`)
    carries aud, nonce, iat and the sd_hash of everything before it."""
    parsed = parse(issued)
    without_kb = parsed.issuer_jwt + "~" + "".join(d + "~" for d in disclosures_for(issued, wanted))
    kb = key_binding_jwt(sign, presentation_without_kb=without_kb, audience=audience, nonce=nonce,
                         iat=int(time.time()) if iat is None else iat)
    return without_kb + kb
