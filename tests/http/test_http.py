"""Cross-cutting HTTP: one error shape, security headers, body cap, request ids, logs without secrets."""

from __future__ import annotations

import io
import json
import logging

import pytest

from backend.app import create_app
from backend.core import json_input
from tests.factories import certificate_body
from tests.support import error_code, error_of, field_errors


def test_unknown_path_answers_the_json_error_shape(client):
    response = client.get("/gov/v1/nothing-here")
    assert response.status_code == 404
    assert response.get_json() == {"error": {"code": "not_found", "message": "资源不存在"}}


def test_wrong_method_answers_405_in_the_error_shape_with_allow(client):
    response = client.delete("/healthz")
    assert response.status_code == 405
    assert response.get_json()["error"]["code"] == "method_not_allowed"
    assert "GET" in response.headers["Allow"]


def test_body_over_the_cap_is_refused_with_413(client):
    response = client.post("/gov/v1/oauth/token", data={"client_assertion": "x" * (1024 * 1024 + 10)})
    assert response.status_code == 413
    assert response.get_json()["error"]["code"] == "payload_too_large"


def test_unknown_form_fields_are_rejected_with_the_field_named(client):
    response = client.post("/gov/v1/oauth/token", data={
        "grant_type": "client_credentials",
        "client_assertion_type": "urn:ietf:params:oauth:client-assertion-type:jwt-bearer",
        "client_assertion": "a.b.c", "favourite_colour": "red"})
    assert response.status_code == 422
    fields = response.get_json()["error"]["details"]["fields"]
    assert {"field": "favourite_colour", "reason": "extra_forbidden"}.items() <= fields[0].items()


def test_security_headers_on_every_response(client):
    for response in (client.get("/healthz"), client.get("/missing"), client.get("/gov/v1/catalog/types")):
        assert response.headers["X-Content-Type-Options"] == "nosniff"
        assert "max-age=" in response.headers["Strict-Transport-Security"]
        assert "frame-ancestors 'none'" in response.headers["Content-Security-Policy"]


def test_api_responses_are_never_cached(client):
    response = client.get("/gov/v1/catalog/types")
    assert response.status_code == 401
    assert response.headers["Cache-Control"] == "no-store"


def test_request_id_is_echoed_when_well_formed_and_replaced_otherwise(client):
    assert client.get("/healthz", headers={"X-Request-Id": "abc12345-req"}).headers["X-Request-Id"] == "abc12345-req"
    replaced = client.get("/healthz", headers={"X-Request-Id": "bad id <script>"}).headers["X-Request-Id"]
    assert replaced and replaced != "bad id <script>"


def test_request_logs_are_json_and_hold_neither_tokens_nor_query_strings(dept_client, caplog):
    token = dept_client.token()
    with caplog.at_level(logging.INFO, logger="ecert.request"):
        dept_client.http.get("/gov/v1/catalog/types?id_number=411502199001011234",
                             headers={"Authorization": f"Bearer {token}"})
    records = [r for r in caplog.records if r.name == "ecert.request"]
    assert records
    line = json.dumps([r.getMessage() for r in records] + [getattr(r, "fields", {}) for r in records])
    assert token not in line
    assert "411502199001011234" not in line
    assert records[-1].fields["path"] == "/gov/v1/catalog/types"
    assert records[-1].fields["client"] == dept_client.client_id


@pytest.fixture
def failing_app(_migrated, tmp_path):
    from tests.conftest import _settings

    app = create_app(_settings(_migrated, tmp_path / "instance"))

    @app.get("/boom")
    def boom():
        raise RuntimeError("secret internals")

    return app


def test_unexpected_errors_answer_500_in_the_error_shape_without_internals(failing_app):
    response = failing_app.test_client().get("/boom")
    assert response.status_code == 500
    assert response.get_json() == {"error": {"code": "internal_error", "message": "服务器内部错误"}}
    assert b"secret internals" not in response.data


@pytest.mark.parametrize("body", [b'{"type_code": "\\ud800"}', b'{"type_code": "\\uDFFF"}',
                                  b'{"type_code": "\xed\xa0\x80"}'],  # escaped, or a surrogate's UTF-8 bytes
                         ids=["escaped", "escaped-upper", "utf-8-bytes"])
def test_json_with_lone_surrogates_is_refused_with_400(dept_client, body):
    response = dept_client.http.post("/gov/v1/certificates", data=body,
                                     content_type="application/json", headers=dept_client.headers())
    assert response.status_code == 400
    assert response.get_json()["error"]["code"] == "invalid_unicode"


def test_lone_surrogates_in_utf16_json_are_refused_with_400(dept_client):
    # JSON may come in UTF-16 or UTF-32 (RFC 8259 readers detect it), where no \\u or 0xED byte shows.
    body = json.dumps({"type_code": "x\ud800"}, ensure_ascii=False).encode("utf-16-le", "surrogatepass")
    response = dept_client.http.post("/gov/v1/certificates", data=body, content_type="application/json",
                                     headers=dept_client.headers())
    assert response.status_code == 400
    assert response.get_json()["error"]["code"] == "invalid_unicode"


def test_lone_surrogates_in_a_chunked_json_body_are_refused_with_400(dept_client):
    # No Content-Length: the body arrives chunked (the server marks the input terminated).
    response = dept_client.http.post("/gov/v1/certificates", input_stream=io.BytesIO(b'{"type_code": "\\ud800"}'),
                                     content_type="application/json",
                                     headers={**dept_client.headers(), "Transfer-Encoding": "chunked"},
                                     environ_overrides={"wsgi.input_terminated": True})
    assert response.status_code == 400
    assert response.get_json()["error"]["code"] == "invalid_unicode"


def test_malformed_json_is_refused_with_400(dept_client):
    response = dept_client.http.post("/gov/v1/certificates", data=b'{"type_code": ', content_type="application/json",
                                     headers=dept_client.headers())
    assert response.status_code == 400
    assert response.get_json()["error"]["code"] == "malformed_json"


def test_show_code_tokens_in_paths_are_redacted_from_request_logs(client, caplog):
    from backend.core.edge import loggable_path

    assert loggable_path("/v/AAAAtokenZZZZ") == "/v/[redacted]"
    assert loggable_path("/gov/v1/verify") == "/gov/v1/verify"
    with caplog.at_level(logging.INFO, logger="ecert.request"):
        client.get("/v/" + "A" * 132, headers={"Accept": "application/json"})
    assert all("A" * 132 not in json.dumps(getattr(r, "fields", {})) for r in caplog.records)


@pytest.mark.parametrize("literal", [b"NaN", b"Infinity", b"-Infinity", b"1e400", b"-1e400", b"9" * 5000, b"9" * 31])
def test_json_with_non_finite_or_out_of_range_numbers_is_a_400_before_it_reaches_the_view(dept_client, literal):
    body = json.dumps(certificate_body()).encode().replace(b'"fields": {', b'"fields": {"n": ' + literal + b", ")
    response = dept_client.http.post("/gov/v1/certificates", data=body, content_type="application/json",
                                     headers=dept_client.headers())
    assert error_of(response, 400, "malformed_json")["details"]["reason"] == "invalid_number"


@pytest.mark.parametrize("body", [b"[" * 100_000 + b"]" * 100_000, b'{"a":' * 50_000 + b"1" + b"}" * 50_000,
                                  b"[" * 100_000, b'{"provider": ' + b"[" * (json_input.MAX_DEPTH + 1)])
def test_deeply_nested_json_is_a_400_even_on_the_unauthenticated_login(client, body):
    response = client.post("/api/v1/auth/login", data=body, content_type="application/json")
    error = error_of(response, 400, "malformed_json")
    assert error["details"] == {"reason": "too_deep", "max_depth": json_input.MAX_DEPTH}


def test_json_nested_as_deep_as_the_limit_is_read_and_validated(client):
    nested = b"[" * (json_input.MAX_DEPTH - 1) + b"]" * (json_input.MAX_DEPTH - 1)
    response = client.post("/api/v1/auth/login", data=b'{"provider": ' + nested + b"}", content_type="application/json")
    assert error_code(response, 422) == "validation_failed"


def test_brackets_inside_strings_do_not_count_as_nesting():
    text = json.dumps({"a": "[" * 1000 + "{" * 1000, "b": ['"]]]\\' + "[" * 100]})
    assert json_input.nesting_depth(text) == 2
    assert json_input.loads(text)["a"].startswith("[[[")
    assert json_input.nesting_depth('"' + '\\"' * 1000 + "[" * 100) == 0  # an unterminated string ends the text


def test_a_body_that_is_not_utf8_is_a_400_naming_the_encoding(client):
    response = client.post("/api/v1/auth/login", data=b'{"provider": "\xff\xfe\xfd"}', content_type="application/json")
    assert error_of(response, 400, "malformed_json")["details"] == {"reason": "invalid_encoding"}


@pytest.mark.parametrize("value", ["[" * 5000, "{" * 5000, "9" * 5000, "NaN", "1e400", "-Infinity"])
def test_form_values_json_cannot_read_are_refused_as_invalid_fields_not_a_500(client, login, value):
    citizen = login()
    objection = client.post("/api/v1/objections", headers=citizen.headers, content_type="multipart/form-data",
                            data={"certificate_id": "x", "description": "有误", "disputed": value})
    assert "disputed" in field_errors(objection)
    token = client.post("/gov/v1/oauth/token", data={"grant_type": value, "client_assertion_type": value,
                                                     "client_assertion": value})
    assert 400 <= token.status_code < 500 and token.get_json()["error"]["code"]


def test_audit_details_and_ids_are_cleaned_of_control_characters(app, clock):
    from backend.audit.chain import record_event
    from backend.extensions import db
    from backend.kernel.actors import Actor
    from backend.models import AuditEvent

    with app.app_context():
        event = record_event(db.session(), actor=Actor(kind="client", id="x\x00y"), action="test", now=clock(),
                             object_id="a\x00b" * 100, details={"k\x00": "v\x00" * 1000, "n": 2**60})
        db.session.commit()
        stored = db.session.get(AuditEvent, event.seq)
        assert "\x00" not in stored.actor_id + (stored.object_id or "") + json.dumps(stored.details)
        assert len(stored.object_id or "") <= 128
        assert stored.details["n"] == str(2**60)
