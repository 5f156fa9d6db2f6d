"""Helpers for the show-code tests: certificates issued to a logged-in citizen, codes minted and scanned."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from flask_openapi3 import OpenAPI
from sqlalchemy import select

from backend.extensions import db
from backend.models import Certificate
from tests.conftest import Citizen, DeptClient
from tests.factories import DISABILITY, MARRIAGE, certificate_body

DISABLED_PERSONS_FEDERATION = "13411500005993726Q"  # 信阳市残疾人联合会
PARTNER_ID = "411502199203080021"


@dataclass
class Held:
    """A certificate issued to a citizen: its identifier (证照标识) and its opaque wallet id."""

    identifier: str
    id: str
    body: dict[str, Any]


def issue(dept: DeptClient, body: dict[str, Any]) -> str:
    response = dept.http.post("/gov/v1/certificates", json=body, headers=dept.headers())
    assert response.status_code == 201, response.get_json()
    return str(response.get_json()["identifier"])


def public_id(app: OpenAPI, identifier: str) -> str:
    with app.app_context():
        return str(db.session.scalar(select(Certificate.public_id).where(Certificate.identifier == identifier)))


def marriage_of(citizen: Citizen, app: OpenAPI, dept: DeptClient) -> Held:
    body = certificate_body(MARRIAGE, holder={"name": citizen.name, "code": citizen.id_number},
                            fields={"holder_name": citizen.name, "party_a_name": citizen.name,
                                    "party_a_id_number": citizen.id_number, "party_b_id_number": PARTNER_ID})
    identifier = issue(dept, body)
    return Held(identifier, public_id(app, identifier), body)


def disability_of(citizen: Citizen, app: OpenAPI, dept: DeptClient) -> Held:
    body = certificate_body(DISABILITY, holder={"name": citizen.name, "code": citizen.id_number},
                            fields={"holder_name": citizen.name, "id_number": citizen.id_number,
                                    "guardian_name": "刘建军", "contact_phone": "13912345678"})
    identifier = issue(dept, body)
    return Held(identifier, public_id(app, identifier), body)


def mint(citizen: Citizen, certificate_id: str, profile: str | None = "basic", accept: str | None = None,
         **extra: Any) -> Any:
    body = {"profile": profile, **extra} if profile is not None else {**extra}
    headers = {**citizen.headers, **({"Accept": accept} if accept else {})}
    return citizen.http.post(f"/api/v1/wallet/certificates/{certificate_id}/show-codes", json=body, headers=headers)


def minted(citizen: Citizen, certificate_id: str, profile: str = "basic") -> dict[str, Any]:
    response = mint(citizen, certificate_id, profile)
    assert response.status_code == 200, response.get_json()
    return dict(response.get_json())


def change(dept: DeptClient, identifier: str, action: str, body: dict[str, Any] | None = None) -> dict[str, Any]:
    response = dept.http.post(f"/gov/v1/certificates/{identifier}/{action}", json=body, headers=dept.headers())
    assert response.status_code in (200, 201), response.get_json()
    return dict(response.get_json())


def page(http: Any, token: str) -> str:
    response = http.get(f"/v/{token}")
    assert response.status_code == 200
    assert response.mimetype == "text/html"
    return str(response.get_data(as_text=True))


def verdict(http: Any, token: str) -> dict[str, Any]:
    response = http.get(f"/v/{token}", headers={"Accept": "application/json"})
    assert response.status_code == 200
    return dict(response.get_json())


def tampered(token: str, position: int = 60) -> str:
    """The token with one character changed (every character carries 6 bits of the 99 bytes)."""
    replacement = "A" if token[position] != "A" else "B"
    return token[:position] + replacement + token[position + 1:]
