"""Login providers behind one interface, each turning a login request into a VerifiedIdentity: `dev`, `oidc` (an
ID token of a trusted IdP, checked in id_tokens.py) and `wechat` (see README.md)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import replace
from datetime import datetime
from typing import Any, Protocol

from flask import Flask
from sqlalchemy.orm import Session

from backend.adapters.jwks import JwksCache
from backend.adapters.sms import mobile_number
from backend.adapters.wechat import WechatClient, WechatLoginRejected, WechatUnavailable
from backend.config import OidcIssuer
from backend.crypto.encryption import FieldCipher
from backend.errors import AuditNote, Forbidden, ServiceUnavailable, Unauthorized, ValidationFailed
from backend.identity.citizens import CompanyClaim, VerifiedIdentity
from backend.identity.id_tokens import (
    REFUSED_LOGIN,
    UNKNOWN_ISSUER,
    TrustedIssuer,
    real_name,
    refused,
    use_once,
    verified_claims,
)
from backend.kernel.actors import Actor
from backend.kernel.identifiers import HolderCodeType, validate_holder_code


class LoginProvider(Protocol):
    name: str

    def authenticate(self, request: dict[str, Any], *, session: Session, cipher: FieldCipher, actor: Actor,
                     now: datetime) -> VerifiedIdentity:
        """`actor` is the still anonymous caller (address, request id), named in the audit of refused attempts.

        `session` holds single-use login state (nonces, accepted ID tokens); `cipher` digests subjects for audit.
        """
        ...


def provider_unavailable(name: str) -> Forbidden:
    return Forbidden(f"本平台未启用登录方式：{name}", code="provider_unavailable", details={"provider": name})


class DevProvider:
    """Local development, the demo and tests: trusts the name and ID number it is given. Never in production."""

    name = "dev"

    def __init__(self, enabled: bool) -> None:
        self.enabled = enabled

    def authenticate(self, request: dict[str, Any], *, session: Session, cipher: FieldCipher, actor: Actor,
                     now: datetime) -> VerifiedIdentity:
        if not self.enabled:
            raise Forbidden("开发登录已关闭", code="provider_disabled")
        id_type = request["id_type"]
        if id_type == HolderCodeType.USCC:
            raise ValidationFailed.for_field("id_type", "not_a_person", "登录的必须是自然人")
        id_number = validate_holder_code(id_type, request["id_number"], field="id_number")
        companies = tuple(CompanyClaim(code=c["code"], name=c["name"]) for c in request.get("companies") or ())
        phone = None
        if request.get("phone"):
            phone = mobile_number(request["phone"])
            if phone is None:
                raise ValidationFailed.for_field("phone", "invalid_mobile_number", "字段 phone 不是有效的手机号码")
        return VerifiedIdentity(provider="dev", subject=f"{id_type}:{id_number}", name=request["name"],
                                id_type=id_type, id_number=id_number, assurance_level="dev", companies=companies,
                                phone=phone)


class CodeToSession(Protocol):
    """The mini-app platform's code exchange (backend.adapters.wechat.WechatClient, or a test's fake)."""

    @property
    def appid(self) -> str: ...

    def code_to_session(self, code: str) -> str: ...


class WechatProvider:
    """Mini-app quick login: the code's openid must have been bound to a holder by a real-name login."""

    name = "wechat"

    def __init__(self, client: CodeToSession) -> None:
        self.client = client
        self.identity_provider = f"wechat:{client.appid}"

    def openid(self, code: str, *, actor: Actor) -> str:
        """Exchange a login code; 401 wechat_login_failed when the platform refuses it, 503 when it is unreachable."""
        try:
            return self.client.code_to_session(code)
        except WechatLoginRejected as exc:
            error = Unauthorized("微信登录失败，请重新打开小程序后再试", code="wechat_login_failed",
                                 details={"errcode": exc.errcode})
            error.audit = AuditNote(actor=actor, action=REFUSED_LOGIN, object_type="login_provider",
                                    object_id=self.identity_provider[:128],
                                    details={"reason": "wechat_login_failed", "errcode": exc.errcode})
            raise error from None
        except WechatUnavailable:
            raise ServiceUnavailable("微信登录服务暂不可用，请稍后再试", code="wechat_unavailable",
                                     headers={"Retry-After": "30"}) from None

    def authenticate(self, request: dict[str, Any], *, session: Session, cipher: FieldCipher, actor: Actor,
                     now: datetime) -> VerifiedIdentity:
        openid = self.openid(request["code"], actor=actor)
        return VerifiedIdentity(provider=self.identity_provider, subject=openid, name="", id_type="", id_number="",
                                assurance_level="", real_name=False)


class OidcProvider:
    """Real-name login with an ID token (OpenID Connect Core §3.1.3.7) from one of several trusted IdPs."""

    name = "oidc"

    def __init__(self, issuers: Mapping[str, TrustedIssuer], wechat: WechatProvider | None = None) -> None:
        self.issuers = dict(issuers)
        self.wechat = wechat

    def authenticate(self, request: dict[str, Any], *, session: Session, cipher: FieldCipher, actor: Actor,
                     now: datetime) -> VerifiedIdentity:
        trusted = self.issuers.get(str(request["issuer"]))
        if trusted is None:
            # The requested issuer is the caller's text: it is not audited (nor any part of it).
            raise refused("unknown_issuer", actor, UNKNOWN_ISSUER)
        claims = verified_claims(trusted, request["id_token"], request.get("nonce"), cipher=cipher, actor=actor,
                                 now=now)
        identity = real_name(trusted.config, claims, cipher=cipher, actor=actor)
        use_once(session, cipher, trusted.config.issuer, claims, actor=actor, now=now)
        if request.get("wechat_code"):
            if self.wechat is None:
                raise provider_unavailable("wechat")
            openid = self.wechat.openid(request["wechat_code"], actor=actor)
            identity = replace(identity, linked=((self.wechat.identity_provider, openid),))
        return identity


def _build_registry(app: Flask) -> dict[str, LoginProvider]:
    registry: dict[str, LoginProvider] = {"dev": DevProvider(app.config["ECERT_DEV_LOGIN"])}
    wechat: WechatProvider | None = None
    if app.config.get("ECERT_WECHAT_APPID"):
        wechat = WechatProvider(WechatClient(appid=app.config["ECERT_WECHAT_APPID"],
                                             secret=app.config.get("ECERT_WECHAT_SECRET") or "",
                                             api_url=app.config["ECERT_WECHAT_API_URL"]))
        registry["wechat"] = wechat
    configured: tuple[OidcIssuer, ...] = app.config.get("ECERT_OIDC_PROVIDERS") or ()
    if configured:
        issuers = {}
        for entry in configured:
            cache = (JwksCache.from_url(entry.jwks_uri, source=entry.issuer) if entry.jwks_uri
                     else JwksCache.from_file(str(entry.jwks_file), source=entry.issuer))
            issuers[entry.issuer] = TrustedIssuer(entry, cache)
        registry["oidc"] = OidcProvider(issuers, wechat)
    return registry


def providers(app: Flask) -> dict[str, LoginProvider]:
    """The app's login providers: dev always (maybe disabled), wechat with an appid, oidc with configured IdPs."""
    registry: dict[str, LoginProvider] | None = app.extensions.get("ecert.login_providers")
    if registry is None:
        # Built once per app: the JWKS caches live as long as the process. setdefault keeps one winner.
        registry = app.extensions.setdefault("ecert.login_providers", _build_registry(app))
    return registry


def login_provider(app: Flask, name: str) -> LoginProvider:
    """The named provider; 403 provider_unavailable when this deployment does not offer it."""
    provider = providers(app).get(name)
    if provider is None:
        raise provider_unavailable(name)
    return provider
