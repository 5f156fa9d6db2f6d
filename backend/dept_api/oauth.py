"""OAuth 2 token endpoint: client credentials with private_key_jwt (RFC 7523)."""

from __future__ import annotations

from typing import Literal

from flask import Response, current_app, jsonify
from flask_openapi3 import APIBlueprint, Tag
from pydantic import BaseModel, ConfigDict, Field

from backend.auth.access import public
from backend.core.context import keystore, now, request_actor_context
from backend.extensions import db, limiter
from backend.identity.clients import TokenPolicy, issue_access_token
from backend.kernel.actors import Actor
from backend.schemas import COMMON_ERRORS, StrictModel, error_responses

bp = APIBlueprint(
    "gov_oauth", __name__, url_prefix="/gov/v1/oauth", abp_tags=[Tag(name="gov-oauth", description="部门系统认证")]
)


class TokenForm(StrictModel):
    # flask-openapi3 JSON-decodes form values ("0" → 0): keep every value a string.
    model_config = ConfigDict(extra="forbid", coerce_numbers_to_str=True)

    grant_type: Literal["client_credentials"]
    client_assertion_type: Literal["urn:ietf:params:oauth:client-assertion-type:jwt-bearer"]
    client_assertion: str = Field(min_length=1, max_length=8192, description="JWT signed with the client's key")
    scope: str | None = Field(default=None, max_length=512, description="space-separated subset of the client's scopes")


class TokenResponse(BaseModel):
    access_token: str
    token_type: Literal["Bearer"]
    expires_in: int
    scope: str


def token_endpoint_url() -> str:
    return current_app.config["ECERT_PUBLIC_URL"] + "/gov/v1/oauth/token"


@bp.post(
    "/token",
    responses={200: TokenResponse, **error_responses(*COMMON_ERRORS, 401, 403, 422)},
    security=[],
    openapi_extensions={"x-form-urlencoded": True},
)
@limiter.limit(lambda: current_app.config["ECERT_RATELIMIT_TOKEN"])
@public
def token(form: TokenForm) -> Response:
    """Exchange a signed client assertion for a short-lived access token."""
    config = current_app.config
    policy = TokenPolicy(token_endpoint=token_endpoint_url(), issuer=config["ECERT_PUBLIC_URL"],
                         ttl=config["ECERT_ACCESS_TOKEN_TTL"],
                         max_assertion_lifetime=config["ECERT_MAX_ASSERTION_LIFETIME"])
    issued = issue_access_token(db.session(), keystore(), assertion=form.client_assertion, requested_scope=form.scope,
                                policy=policy, origin=Actor(kind="client", id="unknown", **request_actor_context()),
                                now=now())
    body = TokenResponse(
        access_token=issued.access_token, token_type="Bearer", expires_in=issued.expires_in, scope=issued.scope
    )
    return jsonify(body.model_dump())
