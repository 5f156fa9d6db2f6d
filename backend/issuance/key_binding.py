"""The holder binding of a presentation (RFC 9901 §7.3): a KB-JWT by the `cnf` key, made for the calling client,
fresh, for this presentation, and accepted once."""

from __future__ import annotations

import functools
import hashlib
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy.orm import Session

from backend.core.db.once import insert_once
from backend.crypto import jws
from backend.crypto.jwk import SUPPORTED_ALGS, JWKError, PublicKey, alg_for_jwk, load_public_jwk
from backend.crypto.jws import JWSError
from backend.crypto.sdjwt import KB_TYP, ParsedSdJwt, sd_hash
from backend.models import ApiClient, ClientAssertionUse

# Stable reason codes (the API's `reasons`) of the key binding's checks.
KB_MISSING = "kb_missing"
KB_MALFORMED = "kb_malformed"
KB_WRONG_TYP = "kb_wrong_typ"
KB_UNSUPPORTED_ALG = "kb_unsupported_alg"
KB_NO_HOLDER_KEY = "kb_no_holder_key"
KB_BAD_SIGNATURE = "kb_bad_signature"
KB_WRONG_AUDIENCE = "kb_wrong_audience"
KB_WRONG_NONCE = "kb_wrong_nonce"
KB_SD_HASH_MISMATCH = "kb_sd_hash_mismatch"
KB_IAT_OUT_OF_RANGE = "kb_iat_out_of_range"
KB_REPLAYED = "kb_replayed"

KB_IAT_WINDOW = timedelta(minutes=5)
# A KB-JWT is only accepted within KB_IAT_WINDOW of its iat, so one first accepted now is refused as stale after
# at most twice that: its record can go then (`flask jobs purge`).
KB_REPLAY_WINDOW = 2 * KB_IAT_WINDOW


@dataclass(frozen=True)
class Presentee:
    """Who a presentation is checked for: the calling client, and the nonce it expects (if it gave one)."""

    client: ApiClient
    nonce: str | None


@functools.lru_cache(maxsize=1024)
def _parsed_jwk(members: tuple[tuple[str, str], ...]) -> tuple[PublicKey, str]:
    """A public JWK's key, by its members: the same members are the same key, whatever else changes."""
    jwk = dict(members)
    return load_public_jwk(jwk), alg_for_jwk(jwk)


def _holder_key(jwk: dict[str, Any]) -> tuple[PublicKey, str]:
    """The `cnf` key and its algorithm; parsing one (an EC point check) was a visible share of a verification."""
    if all(isinstance(k, str) and isinstance(v, str) for k, v in jwk.items()):
        return _parsed_jwk(tuple(sorted(jwk.items())))
    return load_public_jwk(jwk), alg_for_jwk(jwk)  # not a plain JWK: refused there, never cached


def _key_binding(kb_jwt: str, payload: dict[str, Any], presented: str, *, now: datetime,
                 expected_audience: str, expected_nonce: str | None) -> list[str]:
    """KB-JWT checks (RFC 9901 §7.3): typ, signature by the `cnf.jwk` key, aud, nonce, sd_hash, iat."""
    try:
        token = jws.parse(kb_jwt)
    except JWSError:
        return [KB_MALFORMED]
    header = token.header
    if header.get("typ") != KB_TYP:
        return [KB_WRONG_TYP]
    if header.get("alg") not in SUPPORTED_ALGS:
        return [KB_UNSUPPORTED_ALG]
    cnf = payload.get("cnf")
    holder_jwk = cnf.get("jwk") if isinstance(cnf, dict) else None
    if not isinstance(holder_jwk, dict):
        return [KB_NO_HOLDER_KEY]
    try:
        holder_key, holder_alg = _holder_key(holder_jwk)
    except JWKError:
        return [KB_NO_HOLDER_KEY]
    try:
        token.verify(holder_key, holder_alg)
    except JWSError:
        return [KB_BAD_SIGNATURE]
    claims = token.payload
    reasons = []
    if any(name not in claims for name in ("iat", "aud", "nonce", "sd_hash")):
        reasons.append(KB_MALFORMED)
    if claims.get("aud") != expected_audience:
        reasons.append(KB_WRONG_AUDIENCE)
    if expected_nonce is not None and claims.get("nonce") != expected_nonce:
        reasons.append(KB_WRONG_NONCE)
    if claims.get("sd_hash") != sd_hash(presented):
        reasons.append(KB_SD_HASH_MISMATCH)
    iat = claims.get("iat")
    if isinstance(iat, bool) or not isinstance(iat, int | float) \
            or abs(iat - now.timestamp()) > KB_IAT_WINDOW.total_seconds():
        reasons.append(KB_IAT_OUT_OF_RANGE)
    return reasons


def _spend_key_binding(session: Session, client: ApiClient, kb_jwt: str, now: datetime) -> list[str]:
    """Accept a KB-JWT once per client: a presentation a department received cannot be verified again.

    Recorded with the client's assertion ids (same replay table, same purge), as "kb:" + SHA-256 of the KB-JWT's
    signed part. The signed part fixes aud, nonce, iat and sd_hash, and a re-encoded or malleated signature (ECDSA
    (r, n − s)) does not make it a new KB-JWT. The nonce alone would not do: one grant's presentations of several
    certificates share it.
    """
    index = "kb:" + hashlib.sha256(kb_jwt.rsplit(".", 1)[0].encode("ascii")).hexdigest()
    # Atomic: of two workers given the same KB-JWT at the same moment, one accepts it.
    spent = insert_once(session, ClientAssertionUse,
                        {"api_client_id": client.id, "jti": index, "expires_at": now + KB_REPLAY_WINDOW},
                        unique=["api_client_id", "jti"])
    return [] if spent else [KB_REPLAYED]


def holder_binding(session: Session, parsed: ParsedSdJwt, payload: dict[str, Any], token: str,
                   presentee: Presentee, now: datetime) -> list[str]:
    """RFC 9901 §7.3 for the calling client; required whenever the certificate (its issuer JWT's `payload`) names a
    holder key."""
    if parsed.kb_jwt is None:
        return [KB_MISSING] if presentee.nonce is not None or "cnf" in payload else []
    presented = token[: token.rindex("~") + 1]
    # TODO(issue 5): nonces become grant ids, checked against the grant redeemed by this client; until then a
    # nonce the caller gave must match, and any nonce is accepted once.
    reasons = _key_binding(parsed.kb_jwt, payload, presented, now=now,
                           expected_audience=presentee.client.client_id, expected_nonce=presentee.nonce)
    return reasons or _spend_key_binding(session, presentee.client, parsed.kb_jwt, now)
