"""The OpenAPI document: valid 3.1, lists every route, one error shape; and every operation keeps to it."""

from __future__ import annotations

import re
from typing import Any

import pytest
import schemathesis
from flask_openapi3 import OpenAPI
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from openapi_spec_validator import validate
from schemathesis import Case, GenerationMode
from schemathesis.checks import not_a_server_error
from schemathesis.core.result import Ok
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_schema_conformance,
    status_code_conformance,
)

ALL_SCOPES = ("catalog", "issue", "verify", "request", "redeem", "objections", "stats")
ERROR_SCHEMA = {"$ref": "#/components/schemas/ErrorResponse"}
HTTP_METHODS = {"get", "put", "post", "delete", "options", "head", "patch", "trace"}
SETTINGS = settings(max_examples=25, deadline=None, derandomize=True, database=None,
                    suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much])
CHECKS = [not_a_server_error, status_code_conformance, content_type_conformance, response_schema_conformance]


@pytest.fixture
def document(client: Any) -> dict[str, Any]:
    response = client.get("/openapi.json")
    assert response.status_code == 200
    return dict(response.get_json())


def operations(document: dict[str, Any]) -> list[tuple[str, str, dict[str, Any]]]:
    return [(path, method, operation) for path, item in document["paths"].items()
            for method, operation in item.items() if method in HTTP_METHODS]


def test_document_is_valid_openapi_3_1(document):
    assert document["openapi"].startswith("3.1.")
    validate(document)


def test_document_lists_every_route_and_nothing_else(app: OpenAPI, document):
    routes = {(re.sub(r"<(?:[^:<>]+:)?([^<>]+)>", r"{\1}", rule.rule), method.lower())
              for rule in app.url_map.iter_rules() if rule.endpoint != "static"
              for method in rule.methods or () if method not in {"HEAD", "OPTIONS"}}
    documented = {(path, method) for path, method, _ in operations(document)}
    assert routes - documented == set(), "routes missing from /openapi.json"
    assert documented - routes == set(), "documented operations without a route"


def test_every_operation_documents_its_errors_with_the_one_error_shape(document):
    for path, method, operation in operations(document):
        errors = {status: response for status, response in operation["responses"].items() if int(status) >= 400}
        assert errors, f"{method.upper()} {path} documents no error response"
        for status, response in errors.items():
            assert response.get("content") == {"application/json": {"schema": ERROR_SCHEMA}}, \
                f"{method.upper()} {path} {status} is not documented as ErrorResponse"


@pytest.fixture
def api_schema(app: OpenAPI, make_dept_client: Any) -> Any:
    """The app's own document, with a department token of every scope for the clientBearer scheme."""
    token = make_dept_client(scopes=ALL_SCOPES).token()
    config = schemathesis.Config.from_dict({"auth": {"openapi": {"clientBearer": {"bearer": token}}}})
    return schemathesis.openapi.from_wsgi("/openapi.json", app, config=config)


def test_every_operation_keeps_to_its_document(api_schema):
    """No 5xx; status, content type and body as documented, for generated valid and invalid input.

    One Hypothesis run per operation, all failures reported together. (Not `schema.parametrize()`: the lazy
    `schemathesis.pytest.from_fixture` it needs for our function-scoped app reads `Node._nodeid`, which
    pytest 9.2 no longer has.)
    """
    failures = []
    for result in api_schema.get_all_operations():
        if not isinstance(result, Ok):
            failures.append(f"operation schemathesis cannot use: {result.err()}")
            continue
        operation = result.ok()

        # Negative cases are rejected for operations without inputs to break; positive ones remain.
        @given(case=st.one_of(operation.as_strategy(mode) for mode in GenerationMode))
        @SETTINGS
        def keeps_to_document(case: Case) -> None:
            case.call_and_validate(checks=CHECKS)

        try:
            keeps_to_document()
        # schemathesis' FailureGroup is a BaseExceptionGroup; collected so that one run names every failing operation.
        except (Exception, BaseExceptionGroup) as exc:
            failures.append(f"{operation.label}: {exc}")
    if failures:
        pytest.fail("\n\n".join(failures), pytrace=False)
