"""Who is calling comes first: every route declares its caller, checked before anything reads the request.

An anonymous caller, a forged token, another face's token or a department client without the route's scope gets
401/403 in the error shape (the console: its login page, or 403) whatever the path, query, headers, form or body;
never an answer about the request's schema (issue 11, finding 7).
"""

from __future__ import annotations

import io
import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import pytest
from flask import Flask
from flask.testing import FlaskClient

from backend.auth.access import PUBLIC, Access, check_routes, route_access
from backend.auth.citizens import CitizenAccess
from backend.auth.clients import ClientAccess
from backend.auth.staff import StaffAccess
from backend.identity.clients import SCOPES
from tests.web.console_support import FAST_HASHER, Console, make_staff

# Anyone may call these; a new public route is added here on purpose, never by forgetting a declaration.
PUBLIC_ENDPOINTS = frozenset({
    "static", "public.healthz", "public.jwks", "public.openapi", "status_lists.status_list",
    "verify_page.verify_show_code", "gov_oauth.token", "citizen_auth.issue_nonce", "citizen_auth.login",
    "citizen_auth.refresh", "console.login", "console.logout",
})
_PARAMETER = re.compile(r"<(?:[^:<>]+:)?([^<>]+)>")
# Each of these fails some route's validation: path ids too long (and not integers), query values out of range or
# unknown, a malformed Idempotency-Key, and bodies empty, malformed, unencodable, of another media type or a form.
_BAD_PATH_VALUE = "x" * 300
_BAD_QUERY = {"limit": "0", "cursor": "x" * 300, "status": "nonsense", "mode": "nonsense", "unknown": "1"}
_BAD_HEADERS = {"Idempotency-Key": "x", "Accept": "application/xml"}
_BAD_BODIES: dict[str, Callable[[], dict[str, Any]]] = {
    "an empty JSON object": lambda: {"json": {}},
    "malformed JSON": lambda: {"data": b'{"holder": ', "content_type": "application/json"},
    "JSON with a lone surrogate": lambda: {"data": b'{"reason": "\\ud800"}', "content_type": "application/json"},
    "another media type": lambda: {"data": b"type_code,holder\n", "content_type": "text/plain"},
    "a multipart form": lambda: {"data": {"certificate_id": "", "disputed": "[" * 200,
                                          "evidence": (io.BytesIO(b"not an image"), "a.jpg")}},
    "an urlencoded form": lambda: {"data": {"unknown": "1"}},
}


@pytest.fixture
def app_settings() -> dict[str, Any]:
    return {"STAFF_PASSWORD_HASHER": FAST_HASHER}  # the console's city administrator logs in


@dataclass(frozen=True)
class Route:
    method: str
    path: str  # with every parameter filled in with a value no route accepts
    endpoint: str
    access: Access

    def send(self, http: FlaskClient, body: str, headers: dict[str, str] | None = None) -> Any:
        return http.open(self.path, method=self.method, query_string=_BAD_QUERY,
                         headers={**_BAD_HEADERS, **(headers or {})}, **_BAD_BODIES[body]())

    def __str__(self) -> str:
        return f"{self.method} {self.endpoint}"


def routes(app: Flask) -> list[Route]:
    found = []
    for rule in app.url_map.iter_rules():
        access = route_access(app, rule.endpoint)
        assert access is not None, rule.endpoint
        for method in sorted((rule.methods or set()) - {"HEAD", "OPTIONS"}):
            found.append(Route(method, _PARAMETER.sub(_BAD_PATH_VALUE, rule.rule), rule.endpoint, access))
    return found


def protected(app: Flask, kind: type) -> list[Route]:
    chosen = [route for route in routes(app) if isinstance(route.access, kind)]
    assert chosen, kind
    return chosen


def refusals(http: FlaskClient, chosen: list[Route], headers: dict[str, str] | None = None,
             expect: Callable[[Any], bool] = lambda response: False) -> list[str]:
    """Every route sent every bad body: the answers that are not the expected refusal."""
    wrong = []
    for route in chosen:
        for body in _BAD_BODIES:
            response = route.send(http, body, headers)
            if not expect(response):
                wrong.append(f"{route} with {body}: {response.status_code} {response.get_data(as_text=True)[:200]}")
    return wrong


def refused_with(status: int, code: str) -> Callable[[Any], bool]:
    """The error shape with `status` and `code`, and nothing about the request in its details."""

    def check(response: Any) -> bool:
        error = (response.get_json(silent=True) or {}).get("error", {})
        return (response.status_code == status and error.get("code") == code and "fields" not in str(error)
                and "WWW-Authenticate" in response.headers)

    return check


# -- declarations ---------------------------------------------------------------------------------------------------

def test_every_route_declares_its_caller_and_only_the_listed_routes_are_public(app):
    declared = {rule.endpoint: route_access(app, rule.endpoint) for rule in app.url_map.iter_rules()}
    assert {endpoint for endpoint, access in declared.items() if access is None} == set()
    assert {endpoint for endpoint, access in declared.items() if access == PUBLIC} == PUBLIC_ENDPOINTS
    for endpoint, access in declared.items():
        face = endpoint.partition(".")[0]
        if endpoint not in PUBLIC_ENDPOINTS:
            expected = StaffAccess if face == "console" else ClientAccess if face.startswith("gov_") else CitizenAccess
            assert isinstance(access, expected), endpoint


def test_an_app_with_a_route_that_declares_no_caller_is_not_built(app):
    app.add_url_rule("/gov/v1/forgotten", "gov_forgotten.read", lambda: "data")
    with pytest.raises(RuntimeError, match=r"gov_forgotten\.read"):
        check_routes(app)


def test_the_document_names_each_routes_security_scheme_and_its_401_and_403(app, client):
    document = client.get("/openapi.json").get_json()
    schemes = {ClientAccess: [{"clientBearer": []}], CitizenAccess: [{"citizenBearer": []}]}
    for route in routes(app):
        if isinstance(route.access, StaffAccess) or route.endpoint in ("static", "console.login", "console.logout"):
            continue  # the console's pages are not part of the API document
        rule = next(rule for rule in app.url_map.iter_rules(endpoint=route.endpoint))
        operation = document["paths"][_PARAMETER.sub(r"{\1}", rule.rule)][route.method.lower()]
        security = operation.get("security", document.get("security", []))
        if route.access == PUBLIC:
            assert security == [], route
        else:
            assert security == schemes[type(route.access)], route
            assert {"401", "403"} <= set(operation["responses"]), route


# -- the department API and the citizen API -----------------------------------------------------------------------

def test_an_anonymous_caller_gets_401_from_every_protected_route_whatever_the_request(app, client):
    chosen = protected(app, ClientAccess) + protected(app, CitizenAccess)
    assert refusals(client, chosen, expect=refused_with(401, "unauthorized")) == []


def test_a_forged_token_or_another_faces_token_gets_401_whatever_the_request(app, client, make_dept_client, login):
    department_token = make_dept_client(scopes=tuple(SCOPES)).token()
    citizen_token = login().access_token
    invalid = refused_with(401, "invalid_token")
    for token, chosen in ((citizen_token, protected(app, ClientAccess)),
                          (department_token, protected(app, CitizenAccess)),
                          ("eyJhbGciOiJub25lIn0.e30.", protected(app, ClientAccess) + protected(app, CitizenAccess))):
        assert refusals(client, chosen, {"Authorization": f"Bearer {token}"}, expect=invalid) == []


def test_a_department_client_without_the_routes_scope_gets_403_whatever_the_request(app, client,
                                                                                    make_dept_client):
    by_scopes: dict[tuple[str, ...], list[Route]] = {}
    for route in protected(app, ClientAccess):
        assert isinstance(route.access, ClientAccess)
        by_scopes.setdefault(route.access.scopes, []).append(route)
    for scopes, chosen in by_scopes.items():
        others = tuple(sorted(set(SCOPES) - set(scopes)))
        token = make_dept_client(scopes=others).token()
        assert refusals(client, chosen, {"Authorization": f"Bearer {token}"},
                        expect=refused_with(403, "insufficient_scope")) == [], scopes


# -- the staff console ------------------------------------------------------------------------------------------------

def test_an_anonymous_browser_is_sent_to_the_login_page_from_every_console_route_whatever_the_form(app, client):
    def to_login(response: Any) -> bool:
        return response.status_code == 302 and response.headers["Location"].startswith("/console/login")

    assert refusals(client, protected(app, StaffAccess), expect=to_login) == []


def test_a_city_administrator_is_refused_an_action_before_its_form_is_read(app, clock, catalog):
    admin = Console(app).logged_in(make_staff(app, clock, None, username="city.admin"))
    acting = [route for route in protected(app, StaffAccess) if isinstance(route.access, StaffAccess)
              and route.access.acting]
    assert {route.endpoint for route in acting} == {"console.accept", "console.reject", "console.correction",
                                                    "console.resolve"}

    def read_only(response: Any) -> bool:
        return response.status_code == 403 and "市级管理员只能查看异议" in response.get_data(as_text=True)

    assert refusals(admin.http, acting, expect=read_only) == []
