"""Helpers for the certificate tests: a department's system on /gov/v1/certificates and database look-ups."""

from __future__ import annotations

from datetime import date, datetime, time, timedelta, timezone
from typing import Any

import jsonschema
import sqlalchemy as sa

from backend.extensions import db
from backend.models import AuditEvent, Certificate, CertificateEvent, Notification, StatusList
from tests.conftest import DeptClient
from tests.factories import BUSINESS_LICENCE, certificate_body

URL = "/gov/v1/certificates"
CHINA = timezone(timedelta(hours=8))


class Api:
    """A department's business system talking to /gov/v1/certificates with one access token."""

    def __init__(self, dept: DeptClient) -> None:
        self.dept = dept
        self.headers = dept.headers()

    def refresh(self) -> Api:
        """A new access token, after the test clock moved past the old one's lifetime."""
        self.headers = self.dept.headers()
        return self

    def issue(self, body: dict[str, Any] | None = None, *, key: str | None = None) -> Any:
        headers = {**self.headers, **({"Idempotency-Key": key} if key else {})}
        return self.dept.http.post(URL, json=certificate_body() if body is None else body, headers=headers)

    def issued(self, type_code: str = BUSINESS_LICENCE, **overrides: Any) -> str:
        """Issue a valid certificate; returns its identifier."""
        response = self.issue(certificate_body(type_code, **overrides))
        assert response.status_code == 201, response.get_json()
        return str(response.get_json()["identifier"])

    def get(self, identifier: str) -> Any:
        return self.dept.http.get(f"{URL}/{identifier}", headers=self.headers)

    def act(self, identifier: str, action: str, body: dict[str, Any] | None = None) -> Any:
        return self.dept.http.post(f"{URL}/{identifier}/{action}", json=body or {}, headers=self.headers)


def error_of(response: Any, status: int, code: str) -> dict[str, Any]:
    """The one error shape with this status and code; returns the error object."""
    assert response.status_code == status, response.get_data(as_text=True)
    error = response.get_json()["error"]
    assert error["code"] == code, error
    assert error["message"]
    return dict(error)


def field_errors(response: Any) -> dict[str, str]:
    """422 validation errors as {field: reason}."""
    error = error_of(response, 422, response.get_json()["error"]["code"])
    return {item["field"]: item["reason"] for item in error["details"]["fields"]}


def stored(app: Any, identifier: str) -> Certificate:
    with app.app_context():
        certificate = db.session.scalar(sa.select(Certificate).where(Certificate.identifier == identifier))
        assert certificate is not None
        db.session.expunge(certificate)
        return certificate


def count(app: Any, model: Any) -> int:
    with app.app_context():
        return int(db.session.scalar(sa.select(sa.func.count()).select_from(model)) or 0)


def events_of(app: Any, identifier: str) -> list[tuple[str, str | None, str]]:
    with app.app_context():
        rows = db.session.execute(sa.select(CertificateEvent.event, CertificateEvent.from_status,
                                            CertificateEvent.to_status).join(Certificate)
                                  .where(Certificate.identifier == identifier).order_by(CertificateEvent.id))
        return [tuple(row) for row in rows]  # type: ignore[misc]


def audit_actions(app: Any, identifier: str) -> list[str]:
    with app.app_context():
        return list(db.session.scalars(sa.select(AuditEvent.action).where(AuditEvent.object_id == identifier)
                                       .order_by(AuditEvent.seq)))


def holder_notifications(app: Any, identifier: str) -> list[tuple[str, str]]:
    """(kind, title) of the inbox rows for the certificate's holder, found as the wallet finds them: by blind index."""
    certificate = stored(app, identifier)
    with app.app_context():
        rows = db.session.execute(sa.select(Notification.kind, Notification.title, Notification.data)
                                  .where(Notification.holder_index == certificate.holder_index)
                                  .order_by(Notification.id))
        return [(kind, title) for kind, title, data in rows if data.get("identifier") == identifier]


def list_revision(app: Any, identifier: str) -> int:
    certificate = stored(app, identifier)
    with app.app_context():
        return int(db.session.get_one(StatusList, certificate.status_list_id).revision)


def china_midnight(day: str) -> int:
    return int(datetime.combine(date.fromisoformat(day), time.min, CHINA).timestamp())


def assert_documented(http: Any, method: str, path: str, response: Any) -> None:
    """The response body matches the schema /openapi.json documents for this operation and status."""
    document = http.get("/openapi.json").get_json()
    documented = document["paths"][path][method]["responses"][str(response.status_code)]
    schema = {**documented["content"]["application/json"]["schema"], "components": document["components"]}
    jsonschema.Draft202012Validator(schema).validate(response.get_json())
