"""Helpers for the staff console tests: staff accounts, a browser-like client with its own cookies, and objections
filed by a citizen about a certificate a department issued."""

from __future__ import annotations

import io
import re
import secrets
from dataclasses import dataclass
from typing import Any

import sqlalchemy as sa
from argon2 import PasswordHasher
from flask.testing import FlaskClient
from PIL import Image

from backend.catalog.loader import get_department
from backend.core.context import evidence_storage, field_cipher, working_calendar
from backend.extensions import db
from backend.identity.staff import create_staff
from backend.kernel.actors import Actor
from backend.kernel.ids import holder_index
from backend.models import AuditEvent, Certificate, Holder, Objection, StaffAccount
from backend.objections.checks import DisputedField
from backend.objections.filing import ObjectionInput, file_objection
from tests.support import detached, detached_all

# Cheap argon2 parameters for tests (STYLE: test settings lower expensive crypto costs).
FAST_HASHER = PasswordHasher(time_cost=1, memory_cost=8, parallelism=1)
PASSWORD = "Xinyang-2026-console"
_CSRF = re.compile(r'name="csrf_token" value="([^"]+)"')


@dataclass(frozen=True)
class Staff:
    username: str
    password: str
    public_id: str
    department_code: str | None


def make_staff(app: Any, clock: Any, department: str | None, *, username: str | None = None,
               password: str = PASSWORD) -> Staff:
    """A department's staff member (department = its USCC) or, with None, a city administrator."""
    name = username or f"staff{secrets.token_hex(3)}"
    with app.app_context():
        dept = get_department(db.session, department) if department else None
        account = create_staff(db.session, FAST_HASHER, username=name, display_name=f"工作人员{name[-3:]}",
                               department=dept, password=password, actor=Actor.operator("test"), now=clock())
        db.session.commit()
        return Staff(name, password, account.public_id, department)


def csrf_token(html: str) -> str:
    match = _CSRF.search(html)
    assert match, "the page has no CSRF token"
    return match.group(1)


class Console:
    """One browser: its own cookie jar, talking to the console like a person's browser would."""

    def __init__(self, app: Any) -> None:
        self.http: FlaskClient = app.test_client()

    def get(self, path: str, **kwargs: Any) -> Any:
        return self.http.get(path, **kwargs)

    def text(self, path: str) -> str:
        response = self.http.get(path)
        assert response.status_code == 200, (response.status_code, response.get_data(as_text=True)[:500])
        return str(response.get_data(as_text=True))

    def token(self, path: str = "/console/login") -> str:
        """The CSRF token of the form on `path` (as a browser has it after loading the page)."""
        return csrf_token(self.text(path))

    def login(self, staff: Staff | None = None, *, username: str | None = None, password: str | None = None,
              **extra: str) -> Any:
        token = self.token("/console/login")
        return self.http.post("/console/login", data={
            "csrf_token": token, "username": username if username is not None else staff.username if staff else "",
            "password": password if password is not None else staff.password if staff else "", **extra})

    def logged_in(self, staff: Staff) -> Console:
        response = self.login(staff)
        assert response.status_code == 302, response.get_data(as_text=True)[:500]
        return self

    def post(self, path: str, data: dict[str, str] | None = None, *, token: str | None = None,
             page: str | None = None) -> Any:
        """POST a form with the token of the page it is on (`page`, by default the console's queue)."""
        form = dict(data or {})
        form["csrf_token"] = token if token is not None else self.token(page or "/console/objections")
        return self.http.post(path, data=form)

    def cookie(self) -> str | None:
        found = self.http.get_cookie("ecert_console", path="/console")
        return found.value if found else None


def jpeg(width: int = 64, height: int = 48, colour: str = "red") -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", (width, height), colour).save(buffer, "JPEG")
    return buffer.getvalue()


def file_about(app: Any, clock: Any, citizen: Any, identifier: str, *,
               disputed: dict[str, str] | None = None, evidence: list[bytes] | None = None) -> str:
    """The citizen files an objection about their certificate; returns the objection's public id."""
    with app.app_context():
        cipher = field_cipher()
        holder = db.session.scalar(sa.select(Holder).where(
            Holder.id_index == holder_index(cipher, "111", citizen.id_number)))
        certificate = db.session.scalar(sa.select(Certificate).where(Certificate.identifier == identifier))
        assert holder is not None and certificate is not None
        claims = disputed or {"party_b_name": "李 娜"}
        filing = ObjectionInput([DisputedField(name, value) for name, value in claims.items()],
                                "配偶姓名登记有误，应为“李 娜”。", evidence if evidence is not None else [jpeg()])
        objection = file_objection(
            db.session, cipher, evidence_storage(), certificate=certificate, holder=holder, filing=filing,
            actor=Actor(kind="citizen", id=holder.public_id), now=clock(), calendar=working_calendar())
        db.session.commit()
        return objection.public_id


def objection_row(app: Any, public_id: str) -> Objection:
    return detached(app, Objection, Objection.public_id == public_id)


def account(app: Any, username: str) -> StaffAccount:
    return detached(app, StaffAccount, StaffAccount.username == username)


def audit_events(app: Any, action: str) -> list[AuditEvent]:
    return detached_all(app, sa.select(AuditEvent).where(AuditEvent.action == action).order_by(AuditEvent.seq))
