"""Helpers for the citizen-side tests: a department issuing to a given citizen or company, and wallet look-ups."""

from __future__ import annotations

from typing import Any

import sqlalchemy as sa

from backend.extensions import db
from backend.models import Certificate
from tests.conftest import Citizen, DeptClient
from tests.factories import BUSINESS_LICENCE, DISABILITY, MARRIAGE, certificate_body

CERTIFICATES = "/gov/v1/certificates"
WALLET = "/api/v1/wallet/certificates"


class Department:
    """A department's business system issuing and changing certificates through /gov/v1/certificates."""

    def __init__(self, dept: DeptClient) -> None:
        self.http = dept.http
        self.headers = dept.headers()

    def issue(self, type_code: str, **overrides: Any) -> dict[str, Any]:
        response = self.http.post(CERTIFICATES, json=certificate_body(type_code, **overrides), headers=self.headers)
        assert response.status_code == 201, response.get_json()
        return dict(response.get_json())

    def issue_to(self, citizen: Citizen | str, type_code: str = MARRIAGE, **overrides: Any) -> str:
        """Issue a natural-person certificate to a citizen (or an ID number); returns its identifier."""
        number = citizen if isinstance(citizen, str) else citizen.id_number
        name = "张伟" if isinstance(citizen, str) else citizen.name
        fields = {"holder_name": name, **overrides.pop("fields", {})}
        if type_code == DISABILITY:
            fields["id_number"] = number
        return str(self.issue(type_code, holder={"name": name, "code_type": "111", "code": number}, fields=fields,
                              **overrides)["identifier"])

    def issue_to_company(self, code: str, name: str = "信阳毛尖茶业有限公司", type_code: str = BUSINESS_LICENCE) -> str:
        """Issue a legal-person certificate (营业执照 by default) to a company; returns its identifier."""
        return str(self.issue(type_code, holder={"name": name, "code_type": "001", "code": code},
                              fields={"uscc": code})["identifier"])

    def act(self, identifier: str, action: str, body: dict[str, Any] | None = None) -> dict[str, Any]:
        response = self.http.post(f"{CERTIFICATES}/{identifier}/{action}", json=body or {}, headers=self.headers)
        assert response.status_code in (200, 201), response.get_json()
        return dict(response.get_json())


def wallet(citizen: Citizen, **query: Any) -> dict[str, Any]:
    response = citizen.http.get(WALLET, query_string=query, headers=citizen.headers)
    assert response.status_code == 200, response.get_json()
    return dict(response.get_json())


def wallet_ids(citizen: Citizen, **query: Any) -> list[str]:
    return [item["id"] for item in wallet(citizen, limit=100, **query)["items"]]


def public_id_of(app: Any, identifier: str) -> str:
    """The opaque wallet id of the certificate version with this 证照标识."""
    with app.app_context():
        public_id = db.session.scalar(sa.select(Certificate.public_id).where(Certificate.identifier == identifier))
        assert public_id is not None
        return str(public_id)


def error_code(response: Any, status: int) -> str:
    assert response.status_code == status, response.get_data(as_text=True)
    return str(response.get_json()["error"]["code"])
