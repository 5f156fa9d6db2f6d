"""Helpers for the access-request tests: a department's system that asks, a holder who answers, and a local HTTP
receiver standing in for the department's callback endpoint (no external network)."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from backend.extensions import db
from backend.kernel.actors import Actor
from backend.models import AccessRequest
from backend.sharing.access_requests import set_callback_allowlist
from tests.conftest import Citizen, DeptClient
from tests.factories import BUSINESS_LICENCE, MARRIAGE
from tests.support import detached

GOV = "/gov/v1/access-requests"
API = "/api/v1/access-requests"
MARRIAGE_FIELDS = ["holder.name", "registered_on", "party_a_name", "party_b_name"]
LICENCE_FIELDS = ["company_name", "uscc", "legal_representative"]


def ask_body(**overrides: Any) -> dict[str, Any]:
    """A valid request: a marriage certificate (level 3) and a business licence (level 1)."""
    body: dict[str, Any] = {
        "wanted": [{"type_code": MARRIAGE, "fields": MARRIAGE_FIELDS},
                   {"type_code": BUSINESS_LICENCE, "fields": LICENCE_FIELDS}],
        "purpose": "办理企业变更登记", "matter_code": "11411500MB1C629765-XK-001", "consent_seconds": 3600,
    }
    body.update(overrides)
    return body


class Asker:
    """A department's business system with scope `request` on /gov/v1/access-requests."""

    def __init__(self, dept: DeptClient) -> None:
        self.dept = dept
        self.http = dept.http
        self.headers = dept.headers()

    def refresh(self) -> Asker:
        self.headers = self.dept.headers()
        return self

    def post(self, body: dict[str, Any] | None = None, accept: str | None = None) -> Any:
        headers = {**self.headers, **({"Accept": accept} if accept else {})}
        return self.http.post(GOV, json=ask_body() if body is None else body, headers=headers)

    def ask(self, **overrides: Any) -> dict[str, Any]:
        response = self.post(ask_body(**overrides))
        assert response.status_code == 201, response.get_json()
        return dict(response.get_json())

    def poll(self, request_id: str) -> Any:
        return self.http.get(f"{GOV}/{request_id}", headers=self.headers)


def view(citizen: Citizen, request_id: str) -> Any:
    return citizen.http.get(f"{API}/{request_id}", headers=citizen.headers)


def answer(citizen: Citizen, request_id: str, action: str, certificate_ids: list[str] | None = None) -> Any:
    """POST approve/decline, then finish the response as a WSGI server would (which sends the callback)."""
    body = {"certificate_ids": certificate_ids or []} if action == "approve" else None
    response = citizen.http.post(f"{API}/{request_id}/{action}", json=body, headers=citizen.headers)
    response.close()
    return response


def allow_callbacks(app: Any, dept: DeptClient, *urls: str) -> None:
    with app.app_context():
        set_callback_allowlist(db.session(), dept.client_id, list(urls), allow_http=True,
                               actor=Actor.operator("test"), now=dept.clock())
        db.session.commit()


def stored_request(app: Any, request_id: str) -> AccessRequest:
    return detached(app, AccessRequest, AccessRequest.public_id == request_id)


# -- the department's callback endpoint ---------------------------------------------------------------------------

@dataclass
class Received:
    path: str
    headers: dict[str, str]
    body: bytes


@dataclass
class Receiver:
    """A local HTTP server on 127.0.0.1 in a thread: records every POST and answers `status` (and `location`)."""

    server: ThreadingHTTPServer
    received: list[Received] = field(default_factory=list)
    status: int = 200
    location: str | None = None

    @property
    def base(self) -> str:
        host, port = self.server.server_address[:2]
        return f"http://{host!s}:{port}"


def start_receiver() -> Iterator[Receiver]:
    receiver: Receiver

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            length = int(self.headers.get("Content-Length") or 0)
            receiver.received.append(Received(self.path, dict(self.headers.items()), self.rfile.read(length)))
            self.send_response(receiver.status)
            if receiver.location:
                self.send_header("Location", receiver.location)
            self.send_header("Content-Length", "0")
            self.end_headers()

        def log_message(self, *args: Any) -> None:  # keep test output quiet
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    receiver = Receiver(server)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield receiver
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=10)
