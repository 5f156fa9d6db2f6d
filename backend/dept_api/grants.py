"""Redemption for departments (用证, 第十二条): POST /gov/v1/grants/redeem with a grant code or an access request id."""

from __future__ import annotations

from flask import Response, g, jsonify
from flask_openapi3 import APIBlueprint, Tag
from pydantic import BaseModel, Field, model_validator

from backend.auth.clients import BEARER_SECURITY, require_scope
from backend.core.context import deps, now
from backend.schemas import AUTH_ERRORS, COMMON_ERRORS, StrictModel, error_responses
from backend.sharing import redemption as service

bp = APIBlueprint("gov_grants", __name__, url_prefix="/gov/v1/grants",
                  abp_tags=[Tag(name="gov-grants", description="授权用证")], abp_security=BEARER_SECURITY)


class RedeemRequest(StrictModel):
    """Exactly one of `code` (the holder's one-time code, or the URL its QR holds) and `request_id`."""

    code: str | None = Field(default=None, min_length=1, max_length=512,
                             description="授权码: the 22-character code, or the URL the holder's QR code holds")
    request_id: str | None = Field(default=None, min_length=1, max_length=64,
                                   description="the id of this client's access request the holder approved")

    @model_validator(mode="after")
    def _exactly_one(self) -> RedeemRequest:
        if (self.code is None) == (self.request_id is None):
            raise ValueError("give exactly one of: code, request_id")
        return self


class PresentationOut(BaseModel):
    identifier: str = Field(description="证照标识 of the presented certificate")
    sd_jwt: str = Field(description="SD-JWT VC presentation (RFC 9901): the issuer-signed JWT, only the consented "
                                    "disclosures, and a KB-JWT with aud = your client_id, nonce = grant_id")


class RedeemResponse(BaseModel):
    grant_id: str = Field(description="the grant's id; also the KB-JWT nonce of every presentation")
    redemption_id: str
    purpose: str = Field(description="用证事由 the holder consented to")
    redeemed_at: str
    presentations: list[PresentationOut]


@bp.post("/redeem", responses={200: RedeemResponse,
                               **error_responses(*COMMON_ERRORS, *AUTH_ERRORS, 404, 409, 410, 422)})
@require_scope("redeem")
def redeem(body: RedeemRequest) -> Response:
    """Use a grant once: the presentations of the consented fields. Used: 409 grant_already_used; another client's:
    403 grant_wrong_client (audited); expired or revoked: 410 grant_expired / grant_revoked; unknown: 404. A covered
    certificate whose holder key (`cnf`) the platform does not hold, e.g. one synced from the department's own
    system with a key of its own choosing, cannot be presented: 409 holder_key_not_held, the grant stays unused."""
    moment = now()
    if body.code is not None:
        redeemed = service.redeem_by_code(deps(), body.code, client=g.client, actor=g.actor, now=moment)
    else:
        assert body.request_id is not None
        redeemed = service.redeem_by_request(deps(), body.request_id, client=g.client, actor=g.actor, now=moment)
    return jsonify(RedeemResponse(
        grant_id=redeemed.grant.public_id, redemption_id=redeemed.redemption.public_id,
        purpose=redeemed.grant.purpose, redeemed_at=redeemed.redemption.redeemed_at.isoformat(),
        presentations=[PresentationOut(identifier=p.identifier, sd_jwt=p.sd_jwt) for p in redeemed.presentations],
    ).model_dump())
