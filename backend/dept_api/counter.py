"""Counter service without a smartphone (第十一条): consent to an assisted access request at the window."""

from __future__ import annotations

from typing import Annotated, Literal

from flask import Response, current_app, g, jsonify
from flask_openapi3 import APIBlueprint, Tag
from pydantic import BaseModel, Field, RootModel

from backend.adapters.sms import SmsGateway, gateway_from_settings
from backend.auth.clients import BEARER_SECURITY, require_scope
from backend.core.context import field_cipher, now
from backend.extensions import db
from backend.schemas import AUTH_ERRORS, COMMON_ERRORS, StrictModel, error_responses
from backend.sharing import counter_service as service

bp = APIBlueprint("gov_counter", __name__, url_prefix="/gov/v1/access-requests",
                  abp_tags=[Tag(name="gov-counter", description="窗口代办授权（无智能手机的持证人）")],
                  abp_security=BEARER_SECURITY)

Identifier = Annotated[str, Field(min_length=1, max_length=200)]
IDENTIFIERS_DESCRIPTION = ("optional: the certificates to use, by 证照标识, one per wanted type, each a currently "
                           "valid certificate of the named holder; omitted = the holder's newest valid certificate "
                           "of each wanted type")
IdDocumentType = Literal["resident_id_card", "temporary_resident_id_card", "passport", "hk_macao_travel_permit",
                         "taiwan_travel_permit", "foreign_permanent_resident_id_card"]


class RequestPath(BaseModel):
    id: str = Field(max_length=64, description="the access request's id (from POST /gov/v1/access-requests)")


class SmsCodeOut(BaseModel):
    sent_to: str = Field(description="the holder's registered mobile number, masked (138****5678)")
    expires_at: str = Field(description="the code must be typed in before this (ISO 8601; 5 minutes)")
    resend_after: int = Field(description="seconds before another code may be sent")
    sends_left: int = Field(description="codes that may still be sent for this request")


class SmsCodeConsent(StrictModel):
    """The citizen typed in the code texted to their phone."""

    method: Literal["sms_code"]
    code: str = Field(pattern=r"^[0-9]{6}$", description="the 6-digit code from the text message")
    identifiers: list[Identifier] | None = Field(default=None, min_length=1, max_length=10,
                                                 description=IDENTIFIERS_DESCRIPTION)


class StaffAttestedConsent(StrictModel):
    """The staff member checked the citizen's physical ID document and attests the citizen's consent."""

    method: Literal["staff_attested"]
    staff_id: str = Field(min_length=1, max_length=64, description="the staff member's id in the department (工号)")
    staff_name: str = Field(min_length=1, max_length=50, description="the staff member's name")
    reason: str = Field(min_length=2, max_length=200,
                        description="why the citizen cannot consent in the app or by SMS "
                                    "(e.g. 无智能手机，未登记手机号)")
    id_document_checked: Literal[True] = Field(description="the staff member checked the original ID document")
    id_document_type: IdDocumentType = Field(description="which document was checked")
    identifiers: list[Identifier] | None = Field(default=None, min_length=1, max_length=10,
                                                 description=IDENTIFIERS_DESCRIPTION)


class ConsentBody(RootModel[Annotated[SmsCodeConsent | StaffAttestedConsent, Field(discriminator="method")]]):
    """Consent by SMS code or attested by staff, chosen by `method`."""


class ConsentedCertificate(BaseModel):
    identifier: str = Field(description="证照标识")
    type_code: str
    type_name: str
    fields: list[str] = Field(description="the fields the grant discloses")


class ConsentOut(BaseModel):
    request_id: str
    status: Literal["approved"]
    consent_method: Literal["sms_code", "staff_attested"]
    grant_id: str = Field(description="redeem with POST /gov/v1/grants/redeem {\"request_id\"} (once)")
    grant_expires_at: str
    certificates: list[ConsentedCertificate]


def sms_gateway() -> SmsGateway | None:
    """The app's SMS gateway, built once from the settings (tests put a fake in its place)."""
    if "ecert.sms" not in current_app.extensions:
        current_app.extensions["ecert.sms"] = gateway_from_settings(current_app.config)
    gateway: SmsGateway | None = current_app.extensions["ecert.sms"]
    return gateway


@bp.post("/<id>/sms-code",
         responses={200: SmsCodeOut, **error_responses(*COMMON_ERRORS, *AUTH_ERRORS, 404, 409, 410, 422, 503)})
@require_scope("request")
def send_sms_code(path: RequestPath) -> Response:
    """Text a 6-digit one-time code (5 minutes) to the holder of an assisted request; an earlier code stops working.

    409 holder_not_registered / phone_not_registered: no registered mobile number, use staff attestation instead;
    422 holder_not_a_person: the holder is a company, which consents only in the app (its legal representative or
    authorised agent opens the request there); 409 request_not_assisted, access_request_decided, request_locked,
    sms_send_limit; 410 access_request_expired; 429 sms_code_throttled (one code a minute, Retry-After);
    503 sms_unavailable.
    """
    sent = service.send_sms_code(db.session(), sms_gateway(), field_cipher(), client=g.client,
                                 request_id=path.id, actor=g.actor, now=now())
    return jsonify(SmsCodeOut(sent_to=sent.phone_masked, expires_at=sent.expires_at.isoformat(),
                              resend_after=sent.resend_after, sends_left=sent.sends_left).model_dump())


@bp.post("/<id>/consent",
         responses={201: ConsentOut, **error_responses(*COMMON_ERRORS, *AUTH_ERRORS, 404, 409, 410, 422)})
@require_scope("request")
def consent(path: RequestPath, body: ConsentBody) -> Response:
    """Record the present citizen's consent to an assisted request; the grant is created for this client.

    `sms_code`: the code texted by …/sms-code (single use; 5 wrong codes lock the request: 409 request_locked;
    422 sms_code_invalid, 410 sms_code_expired, 409 sms_code_not_sent). `staff_attested`: the staff member, the
    reason and the ID document check are recorded and audited apart (access_request.attested_by_staff).
    409 no_matching_certificates when the holder has no valid certificate of a wanted type. 422 holder_not_a_person
    when the holder is a company: neither method stands for a company's consent; its legal representative or
    authorised agent approves the request in the app. Either method replaces the app's step-up (recent login): the
    one-time code or the staff member's check of the ID document stands in for it.
    """
    choice = body.root
    identifiers = list(choice.identifiers) if choice.identifiers else None
    session, cipher, moment = db.session(), field_cipher(), now()
    if isinstance(choice, SmsCodeConsent):
        result = service.consent_by_sms_code(session, cipher, client=g.client, request_id=path.id,
                                             code=choice.code, identifiers=identifiers, actor=g.actor, now=moment,
                                             commit=session.commit)  # the attempt counts before the check
    else:
        attestation = service.StaffAttestation(staff_id=choice.staff_id, staff_name=choice.staff_name,
                                               reason=choice.reason, id_document_type=choice.id_document_type,
                                               id_document_checked=choice.id_document_checked)
        result = service.attest_by_staff(session, cipher, client=g.client, request_id=path.id,
                                         attestation=attestation, identifiers=identifiers, actor=g.actor,
                                         now=moment)
    fields = {entry.certificate_id: entry.fields for entry in result.grant.certificates}
    answer = ConsentOut(
        request_id=result.request.public_id, status="approved",
        consent_method="sms_code" if isinstance(choice, SmsCodeConsent) else "staff_attested",
        grant_id=result.grant.public_id, grant_expires_at=result.grant.expires_at.isoformat(),
        certificates=[ConsentedCertificate(identifier=c.identifier, type_code=c.certificate_type.type_code,
                                           type_name=c.certificate_type.name, fields=list(fields.get(c.id, [])))
                      for c in result.certificates])
    response = jsonify(answer.model_dump())
    response.status_code = 201
    return response

