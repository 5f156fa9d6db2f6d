"""Citizen login, token refresh, logout and the current holder (/api/v1/auth, /api/v1/me)."""

from __future__ import annotations

from typing import Annotated, Literal

from flask import Response, current_app, g, jsonify
from flask_openapi3 import APIBlueprint, Tag
from pydantic import BaseModel, Field, RootModel

from backend.auth.access import public
from backend.auth.citizens import CITIZEN_SECURITY, require_citizen
from backend.core.context import deps, field_cipher, keystore, now, representation_max_age, request_actor_context
from backend.crypto.masking import mask_holder_code
from backend.extensions import db, limiter
from backend.identity import citizens as citizen_auth
from backend.identity import login_nonces
from backend.identity.providers import login_provider
from backend.kernel.actors import Actor
from backend.schemas import AUTH_ERRORS, COMMON_ERRORS, StrictModel, error_responses

bp = APIBlueprint("citizen_auth", __name__, url_prefix="/api/v1",
                  abp_tags=[Tag(name="citizen-auth", description="市民登录")])


class CompanyIn(StrictModel):
    code: str = Field(min_length=18, max_length=18, description="统一社会信用代码")
    name: str = Field(min_length=1, max_length=200)


class DevLogin(StrictModel):
    provider: Literal["dev"]
    name: str = Field(min_length=1, max_length=100)
    id_type: Literal["111", "414", "516", "511", "999"] = Field(description="持证主体代码类型 of a person")
    id_number: str = Field(min_length=1, max_length=64)
    companies: list[CompanyIn] = Field(default_factory=list, max_length=20,
                                       description="companies represented (dev only; real IdPs assert these)")
    phone: str | None = Field(default=None, max_length=32,
                              description="mobile number for counter-service SMS codes (dev only; real IdPs assert "
                                          "it as the phone_number claim)")


# A mini-app login code (wx.login): short-lived, single use, opaque.
WECHAT_CODE = r"^[A-Za-z0-9_-]{1,128}$"


class OidcLogin(StrictModel):
    """Real-name login with an ID token from a trusted identity provider (the province's 统一实名认证)."""

    provider: Literal["oidc"]
    issuer: str = Field(min_length=1, max_length=200, description="the IdP's issuer identifier, as configured")
    id_token: str = Field(min_length=1, max_length=16384, description="the ID token (signed JWT) the IdP issued")
    nonce: str | None = Field(default=None, min_length=8, max_length=256,
                              description="optional: the nonce from POST /auth/nonce that the app sent in its "
                                          "authentication request; the ID token's own nonce claim is what counts")
    wechat_code: str | None = Field(default=None, pattern=WECHAT_CODE,
                                    description="a mini-app login code: binds this WeChat account to the holder, "
                                                "for later quick logins with provider wechat")


class WechatLogin(StrictModel):
    """Quick login from the mini-app: its account must have been bound by a real-name (oidc) login before."""

    provider: Literal["wechat"]
    code: str = Field(pattern=WECHAT_CODE, description="the code from wx.login()")


class LoginBody(RootModel[Annotated[DevLogin | OidcLogin | WechatLogin, Field(discriminator="provider")]]):
    """One of the login providers' request shapes, chosen by `provider`."""


class NonceResponse(BaseModel):
    nonce: str = Field(description="send as `nonce` in the authentication request to the identity provider; "
                                   "single use")
    expires_in: int = Field(description="seconds: the ID token must be presented at /auth/login within this time")


class TokenPair(BaseModel):
    access_token: str
    refresh_token: str
    token_type: Literal["Bearer"] = "Bearer"
    expires_in: int


class RefreshBody(StrictModel):
    refresh_token: str = Field(min_length=10, max_length=200)


class CompanyOut(BaseModel):
    code: str
    name: str
    role: str
    asserted_at: str = Field(description="when a real-name login last asserted the representation (ISO 8601)")
    current: bool = Field(description="false when that was longer ago than the platform accepts: the company's "
                                      "certificates stay hidden until the next real-name login asserts it again")


class MeResponse(BaseModel):
    id: str
    name: str
    id_type: str
    id_number_masked: str
    assurance_level: str
    companies: list[CompanyOut] = Field(description="represented companies, current or lapsed")
    auth_time: str


def _issuer() -> str:
    return str(current_app.config["ECERT_PUBLIC_URL"])


def _pair(issued: citizen_auth.IssuedSession) -> Response:
    return jsonify(TokenPair(access_token=issued.access_token, refresh_token=issued.refresh_token,
                             expires_in=issued.expires_in).model_dump())


@bp.post("/auth/nonce", responses={200: NonceResponse, **error_responses(*COMMON_ERRORS, 403)}, security=[])
@limiter.limit(lambda: current_app.config["ECERT_RATELIMIT_TOKEN"])
@public
def issue_nonce() -> Response:
    """A fresh single-use nonce for a real-name (oidc) authentication request; valid 10 minutes.

    The ID token presented at /auth/login must carry it: a token with an unknown, expired or used nonce is refused.
    403 provider_unavailable when this deployment has no trusted identity provider.
    """
    login_provider(current_app, "oidc")
    issued = login_nonces.issue_login_nonce(db.session(), now=now())
    return jsonify(NonceResponse(nonce=issued.nonce, expires_in=issued.expires_in).model_dump())


@bp.post("/auth/login", responses={200: TokenPair, **error_responses(*COMMON_ERRORS, 401, 403, 422, 503)},
         security=[])
@limiter.limit(lambda: current_app.config["ECERT_RATELIMIT_TOKEN"])
@public
def login(body: LoginBody) -> Response:
    """Log in with a provider (oidc, wechat, dev); answers an access token (≤ 15 min) and a refresh token.

    An oidc ID token must carry a nonce from POST /auth/nonce, unused and unexpired; each ID token logs in once.
    401 invalid_id_token (details.reason names the failed check), realname_required (a WeChat account not yet
    bound by a real-name login), wechat_login_failed; 403 provider_unavailable / provider_disabled; 503 when the
    identity provider or the WeChat platform cannot be reached.
    """
    moment = now()
    origin = Actor(kind="citizen", id="unknown", **request_actor_context())
    provider = login_provider(current_app, body.root.provider)
    session, cipher = db.session(), field_cipher()
    identity = provider.authenticate(body.root.model_dump(), session=session, cipher=cipher, actor=origin, now=moment)
    return _pair(citizen_auth.log_in(deps(), identity, origin=origin, now=moment))


@bp.post("/auth/refresh", responses={200: TokenPair, **error_responses(*COMMON_ERRORS, 401, 422)}, security=[])
@limiter.limit(lambda: current_app.config["ECERT_RATELIMIT_TOKEN"])
@public
def refresh(body: RefreshBody) -> Response:
    """Exchange a refresh token for a new pair; the old refresh token is used up (reuse revokes the session)."""
    actor = Actor(kind="citizen", id="unknown", **request_actor_context())
    return _pair(citizen_auth.refresh_session(db.session(), keystore(), body.refresh_token, issuer=_issuer(),
                                              actor=actor, now=now()))


@bp.post("/auth/logout", responses={204: None, **error_responses(*COMMON_ERRORS, *AUTH_ERRORS)},
         security=CITIZEN_SECURITY)
@require_citizen
def logout() -> Response:
    """End the current session: its refresh tokens and access tokens stop working at once."""
    citizen_auth.end_session(db.session(), g.auth, actor=g.actor, now=now())
    return Response(status=204)


@bp.get("/me", responses={200: MeResponse, **error_responses(*COMMON_ERRORS, *AUTH_ERRORS)}, security=CITIZEN_SECURITY)
@require_citizen
def me() -> Response:
    """The logged-in holder: name, masked ID number, represented companies (and whether each is still current)."""
    cipher = field_cipher()
    holder = g.holder
    moment, max_age = now(), representation_max_age()
    id_number = citizen_auth.holder_id_number(cipher, holder)
    companies = [CompanyOut(code=r.company_code, name=r.company_name, role=r.role,
                            asserted_at=r.asserted_at.isoformat(),
                            current=citizen_auth.representation_is_current(r, now=moment, max_age=max_age))
                 for r in holder.representations]
    return jsonify(MeResponse(
        id=holder.public_id, name=citizen_auth.holder_name(cipher, holder), id_type=holder.id_type,
        id_number_masked=mask_holder_code(holder.id_type, id_number), assurance_level=holder.assurance_level,
        companies=companies, auth_time=g.auth.auth_time.isoformat()).model_dump())
