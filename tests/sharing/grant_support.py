"""Helpers for the grant and redemption tests: a citizen's offers, a department's redemptions, database look-ups."""

from __future__ import annotations

import secrets
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any

import sqlalchemy as sa
from jwcrypto.jwk import JWK
from sd_jwt.verifier import SDJWTVerifier

from backend.core.context import field_cipher
from backend.extensions import db
from backend.kernel.actors import Actor
from backend.kernel.identifiers import HolderCodeType
from backend.kernel.ids import holder_index
from backend.models import AccessRequest, ApiClient, Certificate, Department, Grant, Holder
from backend.models.sharing import CONSENT_APP
from backend.sharing.grants import grant_from_request
from tests.conftest import START
from tests.support import detached

if TYPE_CHECKING:
    from tests.conftest import Citizen, DeptClient

GRANTS = "/api/v1/grants"
LICENCE_FIELDS = ["holder.name", "company_name", "legal_representative"]  # consented fields of a business licence
REDEEM = "/gov/v1/grants/redeem"


def offer(citizen: Citizen, certificate_id: str, client_id: str, fields: list[str], *,
          purpose: str = "办理营业执照变更", expires_in: int = 300, accept: str | None = None, **extra: Any) -> Any:
    body = {"certificate_id": certificate_id, "client_id": client_id, "fields": fields, "purpose": purpose,
            "expires_in": expires_in, **extra}
    headers = {**citizen.headers, **({"Accept": accept} if accept else {})}
    return citizen.http.post(GRANTS, json=body, headers=headers)


def offered(citizen: Citizen, certificate_id: str, client_id: str, fields: list[str], **kwargs: Any) -> dict[str, Any]:
    response = offer(citizen, certificate_id, client_id, fields, **kwargs)
    assert response.status_code == 201, response.get_json()
    return dict(response.get_json())


def redeem(dept: DeptClient, token: str | None = None, **body: Any) -> Any:
    headers = {"Authorization": f"Bearer {token or dept.token()}"}
    return dept.http.post(REDEEM, json=body, headers=headers)


def holder_of(app: Any, citizen: Citizen) -> Holder:
    """The citizen's Holder row (detached), found as login finds it: by the blind index of the ID number."""
    with app.app_context():
        index = holder_index(field_cipher(), HolderCodeType.RESIDENT_ID.value, citizen.id_number)
    return detached(app, Holder, Holder.id_index == index)


def stored_grant(app: Any, public_id: str) -> Grant:
    return detached(app, Grant, Grant.public_id == public_id)


def make_access_request(app: Any, dept: DeptClient, wanted: list[dict[str, Any]], *, now: datetime,
                        purpose: str = "办理婚姻状况证明", consent_seconds: int = 3600) -> str:
    """An access request stored directly (engineer R's endpoint builds these); returns its public id."""
    with app.app_context():
        client = db.session.scalar(sa.select(ApiClient).where(ApiClient.client_id == dept.client_id))
        assert client is not None
        department = db.session.get_one(Department, client.department_id)
        request = AccessRequest(public_id=secrets.token_hex(16), api_client_id=client.id,
                                department_id=department.id, wanted=wanted, purpose=purpose,
                                matter_code="411500-000-XK-001", consent_seconds=consent_seconds,
                                created_at=now, expires_at=now + timedelta(minutes=30))
        db.session.add(request)
        db.session.commit()
        return str(request.public_id)


def approve(app: Any, citizen: Any, request_id: str, certificate_ids: list[str], *,
            consent_method: str = CONSENT_APP, holder: Any = None) -> Any:
    """Call grant_from_request as engineer R's approval does; answers the grant's (public id, fields, expiry)."""
    holder = holder or holder_of(app, citizen)
    with app.app_context():
        request = db.session.scalar(sa.select(AccessRequest).where(AccessRequest.public_id == request_id))
        certificates = list(db.session.scalars(
            sa.select(Certificate).where(Certificate.public_id.in_(certificate_ids))))
        grant = grant_from_request(db.session, request=request, holder=db.session.get_one(Holder, holder.id),
                                   certificates=certificates, consent_method=consent_method,
                                   actor=Actor(kind="citizen", id=holder.public_id), now=START)
        db.session.commit()
        return grant.public_id, [gc.fields for gc in grant.certificates], grant.expires_at, grant.status, \
            grant.api_client.client_id, grant.consent_method


def reference_verify(http: Any, presentation: str, *, aud: str, nonce: str) -> dict[str, Any]:
    """The OpenWallet Foundation's RFC 9901 implementation (sd-jwt), given only our published JWKS: the payload
    with the disclosed claims, after checking the issuer signature, every disclosure and the KB-JWT (signature by
    the `cnf` key, typ, aud, nonce, sd_hash). Raises on any failure."""
    keys = http.get("/.well-known/jwks.json").get_json()["keys"]

    def issuer_key(_issuer: str, header: dict[str, Any]) -> JWK:
        return JWK(**next(key for key in keys if key["kid"] == header["kid"]))

    return dict(SDJWTVerifier(presentation, issuer_key, aud, nonce).get_verified_payload())


def disclosed_paths(claims: dict[str, Any]) -> set[str]:
    """The disclosed claims of a verified payload as "object.claim" names (holder, document, face)."""
    return {f"{obj}.{name}" for obj in ("holder", "document", "face") for name in claims.get(obj, {})}
