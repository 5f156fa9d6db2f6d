"""Department API clients: registration, and access tokens for client credentials with private_key_jwt."""

from __future__ import annotations

import math
import re
import secrets
from dataclasses import dataclass, replace
from datetime import datetime, timedelta
from typing import Any

import jwt
from sqlalchemy import delete, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from backend.audit.chain import record_event
from backend.crypto.jwk import SUPPORTED_ALGS, JWKError, load_public_jwk
from backend.errors import AuditNote, BadRequest, InvalidClient, NotFound, ValidationFailed
from backend.kernel.actors import Actor
from backend.keys.keystore import PURPOSE_PLATFORM, KeyStore
from backend.models import ApiClient, ClientAssertionUse, Department

# Scopes a department client may hold; each /gov/v1 route names the one it needs.
SCOPES = {
    "catalog": "读取证照目录",
    "issue": "签发、变更证照",
    "verify": "核验证照",
    "request": "发起用证请求",
    "redeem": "使用授权",
    "objections": "处理异议",
    "stats": "查看统计",
}
ASSERTION_TYPE = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer"
ACCESS_TOKEN_TYP = "at+jwt"
ACCESS_TOKEN_AUDIENCE = "ecert-gov-api"
CLIENT_ID_PATTERN = re.compile(r"dc_[A-Za-z0-9_-]{8,60}")
JTI_PATTERN = re.compile(r"[\x21-\x7e]{8,128}")


def register_client(
    session: Session,
    *,
    department: Department,
    name: str,
    scopes: list[str],
    jwks: dict[str, Any],
    callback_allowlist: list[str] | None = None,
    actor: Actor,
    now: datetime,
) -> ApiClient:
    unknown = sorted(set(scopes) - set(SCOPES))
    if unknown or not scopes:
        raise ValidationFailed.for_field("scope", "unknown_scope",
                                         f"未知或缺少权限范围：{', '.join(unknown) or '(空)'}")
    keys = jwks.get("keys") if "keys" in jwks else [jwks]
    if not isinstance(keys, list) or not keys:
        raise ValidationFailed.for_field("jwk", "empty", "至少需要一个公钥")
    try:
        for key in keys:
            load_public_jwk(key)
    except JWKError as exc:
        raise ValidationFailed.for_field("jwk", "invalid_jwk", f"公钥无效：{exc}") from exc
    client = ApiClient(
        client_id="dc_" + secrets.token_urlsafe(18),
        department=department,
        name=name,
        scopes=sorted(set(scopes)),
        public_jwks={"keys": keys},
        callback_allowlist=callback_allowlist or [],
        active=True,
        created_at=now,
    )
    session.add(client)
    session.flush()
    record_event(session, actor=actor, action="client.registered", now=now, object_type="api_client",
                 object_id=client.client_id, details={"department": department.code, "scopes": client.scopes})
    return client


def set_client_active(session: Session, client_id: str, active: bool, *, actor: Actor, now: datetime) -> ApiClient:
    client = session.scalar(select(ApiClient).where(ApiClient.client_id == client_id))
    if client is None:
        raise NotFound("客户端不存在", code="client_not_found")
    client.active = active
    client.disabled_at = None if active else now
    record_event(session, actor=actor, action="client.enabled" if active else "client.disabled", now=now,
                 object_type="api_client", object_id=client_id)
    session.flush()
    return client


@dataclass(frozen=True)
class IssuedToken:
    access_token: str
    expires_in: int
    scope: str


@dataclass(frozen=True)
class TokenPolicy:
    """The token endpoint's settings: its own URL (the assertions' `aud`), the platform's URL (the tokens' `iss`),
    the tokens' lifetime and the longest an assertion may live, in seconds."""

    token_endpoint: str
    issuer: str
    ttl: int
    max_assertion_lifetime: int


def _unverified_claims(assertion: str) -> tuple[dict[str, Any], dict[str, Any]]:
    try:
        header = jwt.get_unverified_header(assertion)
        claims = jwt.decode(assertion, options={"verify_signature": False})
    except jwt.PyJWTError as exc:
        raise InvalidClient("client_assertion 不是有效的 JWT") from exc
    return header, claims


def _refused(caller: Actor, reason: str, message: str) -> InvalidClient:
    """A refused assertion of `caller` (the client it names): the request rolls back; the edge then records this
    failure in its own transaction."""
    error = InvalidClient(message, details={"reason": reason})
    error.audit = AuditNote(actor=caller, action="client.token_refused", object_type="api_client",
                            object_id=caller.id, details={"reason": reason})
    return error


def _signed_claims(client: ApiClient, assertion: str, alg: str, kid: Any, *, token_endpoint: str,
                   caller: Actor) -> dict[str, Any]:
    """The assertion's claims, checked against each of the client's registered keys its header's `kid` may name."""
    for jwk in [k for k in client.public_jwks["keys"] if kid is None or k.get("kid") in (None, kid)]:
        try:
            return dict(jwt.decode(
                assertion,
                load_public_jwk({k: v for k, v in jwk.items() if k not in {"kid", "use", "alg"}}),
                algorithms=[alg],
                audience=token_endpoint,
                options={"require": ["iss", "sub", "aud", "exp", "jti"], "verify_exp": False, "verify_iat": False,
                         "verify_nbf": False},
            ))
        except jwt.InvalidAudienceError as exc:
            raise _refused(caller, "wrong_audience", "client_assertion 的 aud 必须是令牌端点地址") from exc
        except jwt.MissingRequiredClaimError as exc:
            raise _refused(caller, "missing_claim", f"client_assertion 缺少 {exc.claim}") from exc
        except (jwt.InvalidSignatureError, jwt.DecodeError, JWKError):
            continue  # try the client's next registered key
        except jwt.PyJWTError as exc:
            raise _refused(caller, "invalid_claims", f"client_assertion 的声明无效：{exc}") from exc
    raise _refused(caller, "bad_signature", "client_assertion 签名无效")


def _check_claims(client: ApiClient, claims: dict[str, Any], *, max_lifetime: int, caller: Actor,
                  now: datetime) -> None:
    """One audience, sub = iss, a short enough lifetime, sane times, a well-formed jti."""
    if not isinstance(claims["aud"], str):
        # One audience only: a list would let an assertion minted for another server be replayed here.
        raise _refused(caller, "wrong_audience", "client_assertion 的 aud 必须是令牌端点地址（单个字符串）")
    if claims["sub"] != client.client_id:
        raise _refused(caller, "sub_mismatch", "client_assertion 的 iss 与 sub 必须都是 client_id")
    exp = claims["exp"]
    now_ts = now.timestamp()
    if isinstance(exp, bool) or not isinstance(exp, int | float) or not math.isfinite(exp):
        raise _refused(caller, "invalid_claims", "client_assertion 的 exp 必须是数字时间戳")
    if exp <= now_ts:
        raise _refused(caller, "expired", "client_assertion 已过期")
    if exp > now_ts + max_lifetime + 5:
        raise _refused(caller, "lifetime_too_long", f"client_assertion 的有效期不得超过 {max_lifetime} 秒")
    for name in ("iat", "nbf"):
        if name in claims and (isinstance(claims[name], bool) or not isinstance(claims[name], int | float)
                               or not math.isfinite(claims[name])):
            raise _refused(caller, "invalid_claims", f"client_assertion 的 {name} 必须是数字时间戳")
        if name in claims and claims[name] > now_ts + 30:
            raise _refused(caller, "not_yet_valid", "client_assertion 尚未生效")
    jti = claims["jti"]
    if not isinstance(jti, str) or not JTI_PATTERN.fullmatch(jti):
        raise _refused(caller, "bad_jti", "client_assertion 的 jti 必须是 8–128 个可打印 ASCII 字符")


def verify_client_assertion(session: Session, assertion: str, *, token_endpoint: str, max_lifetime: int,
                            origin: Actor, now: datetime) -> ApiClient:
    """The active client whose private_key_jwt assertion (RFC 7523) this is; its `jti` is spent (once only).

    `origin` is the anonymous caller (address, request id); refusals are audited as the client the assertion names.
    """
    header, unverified = _unverified_claims(assertion)
    claimed = unverified.get("iss")
    # Only a well-formed client id reaches the database (no NUL bytes, no oversized strings).
    client_id = claimed if isinstance(claimed, str) and CLIENT_ID_PATTERN.fullmatch(claimed) else "invalid"
    client = session.scalar(select(ApiClient).where(ApiClient.client_id == client_id))
    caller = replace(origin, kind="client", id=client_id)
    if client is None:
        raise _refused(caller, "unknown_client", "未知的客户端")
    if not client.active:
        raise _refused(caller, "client_disabled", "客户端已停用")
    # Checked after the client lookup so that a forged (alg none / HMAC) assertion naming a real client is audited.
    alg = header.get("alg")
    if alg not in SUPPORTED_ALGS:
        raise _refused(caller, "unsupported_alg", "client_assertion 必须使用非对称签名算法（ES256 或 EdDSA）")
    claims = _signed_claims(client, assertion, alg, header.get("kid"), token_endpoint=token_endpoint, caller=caller)
    _check_claims(client, claims, max_lifetime=max_lifetime, caller=caller, now=now)
    try:
        with session.begin_nested():
            session.add(ClientAssertionUse(api_client_id=client.id, jti=claims["jti"],
                                           expires_at=datetime.fromtimestamp(claims["exp"], now.tzinfo)))
    except IntegrityError as exc:
        raise _refused(caller, "replayed_jti", "client_assertion 的 jti 已被使用（重放）") from exc
    return client


def granted_scopes(client: ApiClient, requested_scope: str | None, *, origin: Actor) -> list[str]:
    """The scopes the token carries: the requested ones (all held by the client), or all the client holds."""
    if not requested_scope:
        return client.scopes
    wanted = requested_scope.split()
    excess = sorted(set(wanted) - set(client.scopes))
    if excess:
        # RFC 6749 §5.2: invalid_scope is a 400; refused attempts are audited like the others.
        error = BadRequest(f"客户端无权申请权限范围：{' '.join(excess)}", code="invalid_scope",
                           details={"scopes": excess})
        error.audit = AuditNote(actor=replace(origin, kind="client", id=client.client_id),
                                action="client.token_refused", object_type="api_client", object_id=client.client_id,
                                details={"reason": "invalid_scope", "scopes": excess})
        raise error
    return sorted(set(wanted))


def mint_access_token(session: Session, keys: KeyStore, client: ApiClient, granted: list[str], *, issuer: str,
                      ttl: int, origin: Actor, now: datetime) -> IssuedToken:
    """A short-lived access token (at+jwt) for the client, signed with the platform key; audited."""
    now_ts = int(now.timestamp())
    token_jti = secrets.token_urlsafe(16)
    token = keys.sign_jwt(
        keys.active_key(PURPOSE_PLATFORM),
        {
            "iss": issuer,
            "aud": ACCESS_TOKEN_AUDIENCE,
            "sub": client.client_id,
            "client_id": client.client_id,
            "dept": client.department.code,
            "scope": " ".join(granted),
            "iat": now_ts,
            "exp": now_ts + ttl,
            "jti": token_jti,
        },
        headers={"typ": ACCESS_TOKEN_TYP},
    )
    actor = replace(origin, kind="client", id=client.client_id, department_code=client.department.code)
    record_event(session, actor=actor, action="client.token_issued", now=now, object_type="api_client",
                 object_id=client.client_id, details={"scope": granted, "jti_prefix": token_jti[:8]})
    return IssuedToken(access_token=token, expires_in=ttl, scope=" ".join(granted))


def issue_access_token(session: Session, keys: KeyStore, *, assertion: str, requested_scope: str | None,
                       policy: TokenPolicy, origin: Actor, now: datetime) -> IssuedToken:
    """Verify a private_key_jwt client assertion (RFC 7523) and mint a short-lived access token."""
    client = verify_client_assertion(session, assertion, token_endpoint=policy.token_endpoint,
                                     max_lifetime=policy.max_assertion_lifetime, origin=origin, now=now)
    granted = granted_scopes(client, requested_scope, origin=origin)
    return mint_access_token(session, keys, client, granted, issuer=policy.issuer, ttl=policy.ttl, origin=origin,
                             now=now)


def purge_used_assertions(session: Session, *, now: datetime) -> int:
    """Forget spent assertion ids and accepted KB-JWTs (ClientAssertionUse) that could no longer be replayed."""
    stale = ClientAssertionUse.expires_at < now - timedelta(minutes=5)
    result = session.execute(delete(ClientAssertionUse).where(stale))
    return int(result.rowcount or 0)  # type: ignore[attr-defined]
