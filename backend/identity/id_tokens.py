"""OIDC ID tokens of trusted identity providers: signature, issuer, audience, times and nonce checked, used once,
and the real-name claims read (OidcProvider in providers.py logs in with them)."""

from __future__ import annotations

import hmac
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

import jwt
from sqlalchemy.orm import Session

from backend.adapters import AdapterUnavailable
from backend.adapters.jwks import JwkDict, JwksCache
from backend.adapters.sms import mobile_number
from backend.config import OIDC_ALGORITHMS, OidcIssuer
from backend.crypto.encryption import FieldCipher
from backend.errors import AuditNote, ServiceUnavailable, Unauthorized, ValidationFailed
from backend.identity.citizens import CompanyClaim, VerifiedIdentity, subject_reference
from backend.identity.login_nonces import NonceOutcome, consume_login_nonce, id_token_index, remember_id_token
from backend.kernel.actors import Actor
from backend.kernel.identifiers import HolderCodeType, validate_holder_code, validate_uscc

REFUSED_LOGIN = "citizen.login_refused"
# Holder code types of a person (自然人): everything but 001 (统一社会信用代码).
PERSON_ID_TYPES = ("111", "414", "516", "511", "999")
COMPANY_ROLES = ("legal_representative", "authorised_agent")
MAX_COMPANIES = 50
IAT_LEEWAY = 30  # seconds an IdP's clock may run ahead of ours
MAX_TOKEN_AGE = 600  # an ID token is used within ten minutes of its issue
_CURVES = {"ES256": "P-256", "ES384": "P-384", "ES512": "P-521"}
_PRIVATE_MEMBERS = {"d", "p", "q", "dp", "dq", "qi", "k", "oth"}
# `alg` values an audit row or an error may name; anything else a token claims is "unrecognised" (attacker text,
# NUL bytes included, never reaches the audit trail).
_NAMED_ALGS = frozenset({*OIDC_ALGORITHMS, "none", "HS256", "HS384", "HS512", "ES256K", "Ed25519", "Ed448"})
UNKNOWN_ISSUER = "unknown"

# reason (details.reason of 401 invalid_id_token) -> message for people
_ID_TOKEN_REASONS = {
    "unknown_issuer": "不受信任的身份认证服务",
    "malformed": "ID 令牌格式错误",
    "unsupported_alg": "ID 令牌的签名算法不被接受",
    "unknown_key": "ID 令牌的签名密钥未知",
    "bad_signature": "ID 令牌签名无效",
    "wrong_issuer": "ID 令牌的签发者（iss）不匹配",
    "wrong_audience": "ID 令牌的受众（aud）不是本平台",
    "wrong_authorized_party": "ID 令牌的授权方（azp）不是本平台",
    "expired": "ID 令牌已过期",
    "issued_in_future": "ID 令牌的签发时间晚于当前时间",
    "too_old": "ID 令牌签发已超过 10 分钟，请重新认证",
    "not_yet_valid": "ID 令牌尚未生效",
    "nonce_mismatch": "ID 令牌的 nonce 无效或已过期，请重新获取 nonce 并认证",
    "nonce_used": "ID 令牌的 nonce 已被使用，请重新认证",
    "replayed": "该 ID 令牌已用于登录，不能再次使用，请重新认证",
    "missing_claim": "ID 令牌缺少必需的实名信息",
    "invalid_claim": "ID 令牌中的实名信息无效",
}


@dataclass(frozen=True)
class TrustedIssuer:
    config: OidcIssuer
    jwks: JwksCache


def verified_claims(trusted: TrustedIssuer, token: str, nonce: str | None, *, cipher: FieldCipher, actor: Actor,
                    now: datetime) -> dict[str, Any]:
    """The token's claims once its signature, issuer, audience, times and nonce are checked (OIDC Core §3.1.3.7)."""
    config = trusted.config
    issuer = config.issuer
    try:
        header = jwt.get_unverified_header(token)
    except jwt.PyJWTError:
        raise refused("malformed", actor, issuer) from None
    alg, kid = header.get("alg"), header.get("kid")
    if alg not in config.algorithms:  # `none` and HS* are never configurable
        raise refused("unsupported_alg", actor, issuer, alg=_named_alg(alg))
    if kid is not None and not isinstance(kid, str):
        raise refused("malformed", actor, issuer)
    try:
        candidates = trusted.jwks.keys_for(kid)
    except AdapterUnavailable:
        raise ServiceUnavailable("实名认证服务的公钥暂时无法获取，请稍后再试", code="idp_unavailable",
                                 details={"issuer": issuer}, headers={"Retry-After": "60"}) from None
    keys = [key for key in (_public_key(jwk, alg) for jwk in candidates) if key is not None]
    if not keys:
        raise refused("unknown_key", actor, issuer)
    claims: dict[str, Any] | None = None
    for key in keys:
        try:
            claims = jwt.decode(token, key, algorithms=[alg], options={
                "require": ["iss", "sub", "aud", "exp", "iat"], "verify_aud": False, "verify_iss": False,
                "verify_exp": False, "verify_iat": False, "verify_nbf": False})
            break
        except jwt.InvalidSignatureError:
            continue  # another key of the set may have signed it
        except jwt.MissingRequiredClaimError as exc:
            raise refused("missing_claim", actor, issuer, claim=exc.claim) from None
        except jwt.PyJWTError:
            raise refused("malformed", actor, issuer) from None
    if claims is None:
        raise refused("bad_signature", actor, issuer)
    subject = claims["sub"]
    if not isinstance(subject, str) or not 1 <= len(subject) <= 200:
        raise refused("invalid_claim", actor, issuer, claim="sub")

    def refuse(reason: str, **details: Any) -> Unauthorized:
        return refused(reason, actor, issuer, subject=subject_reference(cipher, subject), **details)

    if claims["iss"] != issuer:
        raise refuse("wrong_issuer")
    audience = claims["aud"]
    audiences = [audience] if isinstance(audience, str) else audience
    if not isinstance(audiences, list) or config.client_id not in audiences:
        raise refuse("wrong_audience")
    azp = claims.get("azp")
    if (len(audiences) > 1 or azp is not None) and azp != config.client_id:
        raise refuse("wrong_authorized_party")
    moment = now.timestamp()
    for name in ("exp", "iat", "nbf"):
        value = claims.get(name)
        if (name in claims) and (isinstance(value, bool) or not isinstance(value, int | float)):
            raise refuse("invalid_claim", claim=name)
    if claims["exp"] <= moment:
        raise refuse("expired")
    if claims["iat"] > moment + IAT_LEEWAY:
        raise refuse("issued_in_future")
    if claims["iat"] < moment - MAX_TOKEN_AGE:
        raise refuse("too_old")
    if claims.get("nbf", 0) > moment + IAT_LEEWAY:
        raise refuse("not_yet_valid")
    token_nonce = claims.get("nonce")
    if not isinstance(token_nonce, str) or not token_nonce:
        raise refuse("nonce_mismatch")
    # The nonce in the request body is optional (older clients send it); when sent, it must be the token's.
    if nonce is not None and not hmac.compare_digest(token_nonce.encode(), nonce.encode()):
        raise refuse("nonce_mismatch")
    return claims


def use_once(session: Session, cipher: FieldCipher, issuer: str, claims: dict[str, Any], *, actor: Actor,
             now: datetime) -> None:
    """The ID token logs in once: never accepted before, and its nonce one we issued, unexpired and unused.

    Both writes belong to the login's transaction: a login refused later leaves the nonce usable.
    """
    subject, nonce = claims["sub"], claims["nonce"]
    jti = claims.get("jti")
    token_index = id_token_index(cipher, issuer=issuer, subject=subject, jti=jti if isinstance(jti, str) else None,
                                 issued_at=claims["iat"], nonce=nonce)
    reference = subject_reference(cipher, subject)
    if not remember_id_token(session, token_index, keep_until=now + timedelta(seconds=MAX_TOKEN_AGE + IAT_LEEWAY)):
        raise refused("replayed", actor, issuer, subject=reference)
    outcome = consume_login_nonce(session, nonce, now=now)
    if outcome is NonceOutcome.USED:
        raise refused("nonce_used", actor, issuer, subject=reference)
    if outcome is not NonceOutcome.ACCEPTED:
        raise refused("nonce_mismatch", actor, issuer, subject=reference)


def _named_alg(alg: object) -> str:
    return alg if isinstance(alg, str) and alg in _NAMED_ALGS else "unrecognised"


def refused(reason: str, actor: Actor, issuer: str, subject: str | None = None, **details: Any) -> Unauthorized:
    """401 invalid_id_token naming the reason; the refused attempt is audited after the rollback.

    `issuer` is a configured issuer or UNKNOWN_ISSUER, `subject` a digest prefix (subject_reference), `details`
    our own words: nothing the caller typed goes into the audit row.
    """
    error = Unauthorized(_ID_TOKEN_REASONS[reason], code="invalid_id_token", details={"reason": reason, **details})
    audited = {"reason": reason, **details, **({"subject": subject} if subject else {})}
    error.audit = AuditNote(actor=actor, action=REFUSED_LOGIN, object_type="identity_provider",
                            object_id=issuer[:128], details=audited)
    return error


def _public_key(jwk: JwkDict, alg: str) -> Any:
    """The verification key of a JWK usable with `alg`, or None (wrong type or curve, private, weak, malformed)."""
    if _PRIVATE_MEMBERS & set(jwk) or jwk.get("use") not in (None, "sig") or jwk.get("alg") not in (None, alg):
        return None
    kty = jwk.get("kty")
    if alg in _CURVES:
        usable = kty == "EC" and jwk.get("crv") == _CURVES[alg]
    elif alg == "EdDSA":
        usable = kty == "OKP" and jwk.get("crv") in ("Ed25519", "Ed448")
    elif alg.startswith(("RS", "PS")):
        usable = kty == "RSA"
    else:  # `none`, HS*: never, whatever the configuration says
        usable = False
    if not usable:
        return None
    try:
        key = jwt.PyJWK(jwk, algorithm=alg).key
    except (jwt.PyJWTError, ValueError, TypeError):
        return None
    if kty == "RSA" and key.key_size < 2048:
        return None
    return key


def real_name(config: OidcIssuer, claims: dict[str, Any], *, cipher: FieldCipher, actor: Actor) -> VerifiedIdentity:
    """The real-name claims (names mapped per IdP): name, ID type and number, assurance level, companies."""
    names = config.claims
    subject: str = claims["sub"]

    def refuse(reason: str, claim: str, **details: Any) -> Unauthorized:
        return refused(reason, actor, config.issuer, subject=subject_reference(cipher, subject), claim=claim,
                        **details)

    def text(claim: str, *, maximum: int, default: str | None = None) -> str:
        value = claims.get(names[claim], default)
        if value is None:
            raise refuse("missing_claim", names[claim])
        if not isinstance(value, str) or not 1 <= len(value.strip()) <= maximum:
            raise refuse("invalid_claim", names[claim])
        return value.strip()

    name = text("name", maximum=100)
    id_type = text("id_type", maximum=3, default=HolderCodeType.RESIDENT_ID.value)
    if id_type not in PERSON_ID_TYPES:
        raise refuse("invalid_claim", names["id_type"], check="not_a_person_id_type")
    raw_number = text("id_number", maximum=64)
    try:
        id_number = validate_holder_code(id_type, raw_number, field="id_number")
    except ValidationFailed as exc:
        raise refuse("invalid_claim", names["id_number"], check=_field_reason(exc)) from None
    assurance = text("assurance_level", maximum=16, default="unspecified")
    raw_companies = claims.get(names["companies"], [])
    if not isinstance(raw_companies, list) or len(raw_companies) > MAX_COMPANIES:
        raise refuse("invalid_claim", names["companies"])
    companies = []
    for entry in raw_companies:
        if (not isinstance(entry, dict) or not isinstance(entry.get("code"), str)
                or not isinstance(entry.get("name"), str) or not entry["name"].strip()):
            raise refuse("invalid_claim", names["companies"])
        role = entry.get("role", COMPANY_ROLES[0])
        if role not in COMPANY_ROLES:
            raise refuse("invalid_claim", names["companies"], check="unknown_role")
        try:
            code = validate_uscc(entry["code"], field="companies.code")
        except ValidationFailed as exc:
            raise refuse("invalid_claim", names["companies"], check=_field_reason(exc)) from None
        companies.append(CompanyClaim(code=code, name=entry["name"].strip()[:200], role=role))
    return VerifiedIdentity(provider=f"oidc:{config.issuer}", subject=subject, name=name, id_type=id_type,
                            id_number=id_number, assurance_level=assurance, companies=tuple(companies),
                            phone=_verified_phone(claims))


def _verified_phone(claims: dict[str, Any]) -> str | None:
    """The standard `phone_number` claim (OIDC Core §5.1) as E.164, unless the IdP says it is unverified
    (`phone_number_verified`: false) or it is no mobile number: then None, and the login goes on without it."""
    value = claims.get("phone_number")
    if not isinstance(value, str) or claims.get("phone_number_verified") is False:
        return None
    return mobile_number(value)


def _field_reason(error: ValidationFailed) -> str:
    fields = error.details.get("fields") or [{}]
    return str(fields[0].get("reason", "invalid"))
