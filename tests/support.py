"""Helpers shared by the test modules: a department's system issuing and changing certificates, a citizen's wallet
and show codes, the one error shape, database look-ups, cursors and threads run at once."""

from __future__ import annotations

import base64
import contextlib
import re
import threading
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import date, datetime, time
from typing import TYPE_CHECKING, Any, TypeVar

import jsonschema
import pytest
import sqlalchemy as sa
from sqlalchemy.engine import make_url

from backend.extensions import db
from backend.kernel.china_time import CHINA
from backend.models import AuditEvent, Certificate, CertificateEvent, Notification, StatusList
from tests.factories import BUSINESS_LICENCE, DISABILITY, MARRIAGE, certificate_body


@contextlib.contextmanager
def throwaway_postgres(admin_url: str, prefix: str) -> Iterator[str]:
    """A new database on the PostgreSQL server of `admin_url`, named `<prefix>_<random>`; dropped afterwards."""
    url = make_url(admin_url).set(drivername="postgresql+psycopg")
    name = f"{prefix}_{uuid.uuid4().hex[:10]}"
    admin = sa.create_engine(url, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(sa.text(f'CREATE DATABASE "{name}"'))
    try:
        yield url.set(database=name).render_as_string(hide_password=False)
    finally:
        with admin.connect() as conn:
            conn.execute(sa.text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()


if TYPE_CHECKING:  # conftest imports this module for its fixtures
    from tests.conftest import Citizen, DeptClient

T = TypeVar("T")
CERTIFICATES = "/gov/v1/certificates"
WALLET = "/api/v1/wallet/certificates"
PARTNER_ID = "411502199203080021"  # the other party on a marriage certificate


# -- a department's business system -----------------------------------------------------------------------------

class Department:
    """A department's business system on /gov/v1/certificates, with one access token.

    `post`, `get` and `act` answer the response as it is; `issue`, `issued`, `issue_to`, `issue_to_company` and
    `change` must succeed and answer what they made.
    """

    def __init__(self, dept: DeptClient) -> None:
        self.dept = dept
        self.http = dept.http
        self.headers = dept.headers()

    def refresh(self) -> Department:
        """A new access token, after the test clock moved past the old one's lifetime."""
        self.headers = self.dept.headers()
        return self

    def post(self, body: dict[str, Any] | None = None, *, key: str | None = None) -> Any:
        """POST /gov/v1/certificates with `body` (a valid one if None), optionally with an Idempotency-Key."""
        headers = {**self.headers, **({"Idempotency-Key": key} if key else {})}
        return self.http.post(CERTIFICATES, json=certificate_body() if body is None else body, headers=headers)

    def get(self, identifier: str) -> Any:
        return self.http.get(f"{CERTIFICATES}/{identifier}", headers=self.headers)

    def act(self, identifier: str, action: str, body: dict[str, Any] | None = None) -> Any:
        """POST /gov/v1/certificates/{identifier}/{action} (reissue, revoke, suspend, resume)."""
        return self.http.post(f"{CERTIFICATES}/{identifier}/{action}", json=body or {}, headers=self.headers)

    def issue(self, type_code: str = BUSINESS_LICENCE, *, body: dict[str, Any] | None = None,
              **overrides: Any) -> dict[str, Any]:
        """Issue `body`, or a valid certificate of the type; answers the issuance (identifier, sd_jwt, …)."""
        response = self.post(certificate_body(type_code, **overrides) if body is None else body)
        assert response.status_code == 201, response.get_json()
        return dict(response.get_json())

    def issued(self, type_code: str = BUSINESS_LICENCE, **overrides: Any) -> str:
        """Issue a valid certificate; returns its identifier."""
        return str(self.issue(type_code, **overrides)["identifier"])

    def issue_to(self, citizen: Citizen | str, type_code: str = MARRIAGE, **overrides: Any) -> str:
        """Issue a natural-person certificate to a citizen (or an ID number); returns its identifier."""
        number = citizen if isinstance(citizen, str) else citizen.id_number
        name = "张伟" if isinstance(citizen, str) else citizen.name
        fields = {"holder_name": name, **overrides.pop("fields", {})}
        if type_code == DISABILITY:
            fields["id_number"] = number
        return self.issued(type_code, holder={"name": name, "code_type": "111", "code": number}, fields=fields,
                           **overrides)

    def issue_to_company(self, code: str, name: str = "信阳毛尖茶业有限公司", type_code: str = BUSINESS_LICENCE) -> str:
        """Issue a legal-person certificate (营业执照 by default) to a company; returns its identifier."""
        return self.issued(type_code, holder={"name": name, "code_type": "001", "code": code}, fields={"uscc": code})

    def change(self, identifier: str, action: str, body: dict[str, Any] | None = None) -> dict[str, Any]:
        """Reissue, revoke, suspend or resume; answers the changed certificate."""
        response = self.act(identifier, action, body)
        assert response.status_code in (200, 201), response.get_json()
        return dict(response.get_json())


def issue(dept: DeptClient, type_code: str = BUSINESS_LICENCE, *, body: dict[str, Any] | None = None,
          **overrides: Any) -> dict[str, Any]:
    """`Department.issue` with a token of its own, for tests that move the clock between calls."""
    return Department(dept).issue(type_code, body=body, **overrides)


def change(dept: DeptClient, identifier: str, action: str, body: dict[str, Any] | None = None) -> dict[str, Any]:
    """`Department.change` with a token of its own, for tests that move the clock between calls."""
    return Department(dept).change(identifier, action, body)


# -- the one error shape ----------------------------------------------------------------------------------------

def error_code(response: Any, status: int) -> str:
    """The `code` of an error in the one error shape, which must come with this status."""
    assert response.status_code == status, response.get_data(as_text=True)
    return str(response.get_json()["error"]["code"])


def error_of(response: Any, status: int, code: str) -> dict[str, Any]:
    """The one error shape with this status and code and a message; returns the error object."""
    assert error_code(response, status) == code, response.get_json()
    error = response.get_json()["error"]
    assert error["message"]
    return dict(error)


def field_errors(response: Any) -> dict[str, str]:
    """422 validation errors as {field: reason}."""
    error = error_of(response, 422, response.get_json()["error"]["code"])
    return {item["field"]: item["reason"] for item in error["details"]["fields"]}


def assert_documented(http: Any, method: str, path: str, response: Any) -> None:
    """The response body matches the schema /openapi.json documents for this operation and status."""
    document = http.get("/openapi.json").get_json()
    documented = document["paths"][path][method]["responses"][str(response.status_code)]
    schema = {**documented["content"]["application/json"]["schema"], "components": document["components"]}
    jsonschema.Draft202012Validator(schema).validate(response.get_json())


# -- database look-ups ------------------------------------------------------------------------------------------

def detached(app: Any, model: type[T], *where: Any) -> T:
    """The one row of `model` that `where` picks, detached from its session (there must be one)."""
    with app.app_context():
        row = db.session.scalar(sa.select(model).where(*where))
        assert row is not None
        db.session.expunge(row)
        return row


def detached_all(app: Any, statement: sa.Select[tuple[T]]) -> list[T]:
    """Every row `statement` selects, detached from its session."""
    with app.app_context():
        rows = list(db.session.scalars(statement))
        db.session.expunge_all()
        return rows


def stored(app: Any, identifier: str) -> Certificate:
    return detached(app, Certificate, Certificate.identifier == identifier)


def public_id_of(app: Any, identifier: str) -> str:
    """The opaque wallet id of the certificate version with this 证照标识."""
    with app.app_context():
        public_id = db.session.scalar(sa.select(Certificate.public_id).where(Certificate.identifier == identifier))
        assert public_id is not None
        return str(public_id)


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


# -- the citizen's wallet and show codes ------------------------------------------------------------------------

def wallet(citizen: Citizen, **query: Any) -> dict[str, Any]:
    response = citizen.http.get(WALLET, query_string=query, headers=citizen.headers)
    assert response.status_code == 200, response.get_json()
    return dict(response.get_json())


def wallet_ids(citizen: Citizen, **query: Any) -> list[str]:
    return [item["id"] for item in wallet(citizen, limit=100, **query)["items"]]


@dataclass
class Held:
    """A certificate issued to a citizen: its identifier (证照标识), its opaque wallet id and what was issued."""

    identifier: str
    id: str
    body: dict[str, Any]


def _held(app: Any, dept: DeptClient, body: dict[str, Any]) -> Held:
    identifier = str(issue(dept, body=body)["identifier"])
    return Held(identifier, public_id_of(app, identifier), body)


def marriage_of(citizen: Citizen, app: Any, dept: DeptClient) -> Held:
    return _held(app, dept, certificate_body(
        MARRIAGE, holder={"name": citizen.name, "code": citizen.id_number},
        fields={"holder_name": citizen.name, "party_a_name": citizen.name, "party_a_id_number": citizen.id_number,
                "party_b_id_number": PARTNER_ID}))


def disability_of(citizen: Citizen, app: Any, dept: DeptClient) -> Held:
    return _held(app, dept, certificate_body(
        DISABILITY, holder={"name": citizen.name, "code": citizen.id_number},
        fields={"holder_name": citizen.name, "id_number": citizen.id_number, "guardian_name": "刘建军",
                "contact_phone": "13912345678"}))


def mint(citizen: Citizen, certificate_id: str, profile: str | None = "basic", accept: str | None = None,
         **extra: Any) -> Any:
    body = {"profile": profile, **extra} if profile is not None else {**extra}
    headers = {**citizen.headers, **({"Accept": accept} if accept else {})}
    return citizen.http.post(f"{WALLET}/{certificate_id}/show-codes", json=body, headers=headers)


def minted(citizen: Citizen, certificate_id: str, profile: str = "basic") -> dict[str, Any]:
    response = mint(citizen, certificate_id, profile)
    assert response.status_code == 200, response.get_json()
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


# -- paging -----------------------------------------------------------------------------------------------------

def encoded_cursor(position: str) -> str:
    """A cursor as the API encodes one, for any position a client might forge."""
    return base64.urlsafe_b64encode(position.encode()).decode().rstrip("=")


# Forged positions: out of range once in UTC, a sequential or 30-digit id where a public id belongs (pytest params).
FORGED_CURSORS = [pytest.param(encoded_cursor(position), id=position) for position in (
    "0001-01-01T00:00:00+01:00|1", "9999-12-31T23:59:59-14:00|1", f"2026-11-26T09:00:00+00:00|{'9' * 30}",
    f"0001-01-01T00:00:00+01:00|{'0' * 32}", f"9999-12-31T23:59:59-14:00|{'0' * 32}",
    f"2026-11-26T09:00:00|{'0' * 32}",
)]


# -- concurrency ------------------------------------------------------------------------------------------------

def database_is_shared(app: Any) -> None:
    with app.app_context():
        url = db.engine.url
        assert url.get_backend_name() == "postgresql" or (url.database or ":memory:") != ":memory:", \
            "threads must meet in one database file, not per-connection memory databases"


def run_together(work: Callable[[int], T], threads: int) -> list[T]:
    """Run `work(0)` … `work(threads - 1)` on as many threads released at once; their results, first done first.

    A thread that fails or hangs fails the test in the main thread.
    """
    start = threading.Barrier(threads)
    results: list[T] = []
    failures: list[BaseException] = []

    def run(n: int) -> None:
        try:
            start.wait(timeout=30)
            results.append(work(n))
        except BaseException as exc:  # reported by the main thread
            failures.append(exc)

    running = [threading.Thread(target=run, args=(n,)) for n in range(threads)]
    for thread in running:
        thread.start()
    for thread in running:
        thread.join(timeout=120)
    assert not any(thread.is_alive() for thread in running)
    assert failures == []
    return results


def after_first_read(app: Any, table: str, action: Callable[[], None], *,
                     thread: int | None = None) -> contextlib.AbstractContextManager[None]:
    """Run `action` once per thread (or only on `thread`), right after that thread's first SELECT from `table`.

    A race by hand: the thread has read what it decides on and has not written yet. `action` may let another
    party finish meanwhile (`finish_meanwhile`) or hold every thread there (a barrier), so that only the database's
    answer to the write can decide who wins.
    """
    return _once_per_thread(app, rf"^\s*SELECT\b.*\bFROM {table}\b", "after_cursor_execute", action, thread)


def before_first_update(app: Any, table: str, action: Callable[[], None], *,
                        thread: int | None = None) -> contextlib.AbstractContextManager[None]:
    """Run `action` once per thread (or only on `thread`), right before that thread's first UPDATE of `table`.

    The latest moment of a read-then-write race: whatever the thread read (however often it re-read it) is read,
    nothing is written yet.
    """
    return _once_per_thread(app, rf"^\s*UPDATE {table}\b", "before_cursor_execute", action, thread)


@contextlib.contextmanager
def _once_per_thread(app: Any, statement: str, event: str, action: Callable[[], None],
                     thread: int | None) -> Iterator[None]:
    matches = re.compile(statement, re.IGNORECASE | re.DOTALL)
    seen: set[int] = set()
    guard = threading.Lock()

    def hook(*args: Any) -> None:
        me = threading.get_ident()
        if (thread is not None and me != thread) or not matches.match(args[2]):
            return
        with guard:
            if me in seen:
                return
            seen.add(me)
        action()

    with app.app_context():
        engine = db.engine
    sa.event.listen(engine, event, hook)
    try:
        yield
    finally:
        sa.event.remove(engine, event, hook)


def finish_meanwhile(work: Callable[[], T]) -> tuple[Callable[[], None], Callable[[], T]]:
    """(start, result): `start` runs `work` on its own thread (own client, session, connection) to its end, and
    waits for it; `result` answers what it answered. A `work` blocked by a lock the waiting thread holds (FOR UPDATE)
    is let run on once the waiting thread goes on, so a test of such code ends (and its result says who won)."""
    answers: list[T] = []
    failures: list[BaseException] = []

    def run() -> None:
        try:
            answers.append(work())
        except BaseException as exc:  # reported by `result`
            failures.append(exc)

    runner = threading.Thread(target=run)

    def start() -> None:
        runner.start()
        runner.join(timeout=10)

    def result() -> T:
        runner.join(timeout=120)
        assert not runner.is_alive() and failures == [], failures
        return answers[0]

    return start, result
