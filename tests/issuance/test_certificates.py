"""Issuing, syncing and the lifecycle of certificates through the department API (/gov/v1/certificates)."""

from __future__ import annotations

import base64
import json
import re
import secrets
import shutil
import threading
from dataclasses import dataclass
from datetime import date, timedelta
from pathlib import Path
from typing import Any

import jwt
import pytest
import sqlalchemy as sa
from cryptography.hazmat.primitives.asymmetric import ec

from backend.catalog.face import FieldProblems
from backend.catalog.loader import get_department
from backend.core.context import field_cipher, keystore
from backend.crypto import sdjwt
from backend.crypto.jwk import public_jwk
from backend.extensions import db
from backend.imports.signer import CERTIFICATE_COLUMNS
from backend.issuance.issuer import SERIAL_ALPHABET, CertificateInput, Issuer, new_serial
from backend.kernel.actors import Actor
from backend.kernel.identifiers import build_identifier, identifier_check_character, parse_identifier
from backend.keys.deps import Deps
from backend.models import Certificate
from tests.conftest import CIVIL_AFFAIRS, DEMO_CATALOG, SAMR, START
from tests.factories import (
    BUSINESS_LICENCE,
    DISABILITY,
    FOOD_LICENCE,
    MARRIAGE,
    certificate_body,
    company_code,
    resident_id,
)
from tests.support import (
    CERTIFICATES,
    assert_documented,
    audit_actions,
    before_first_update,
    china_midnight,
    count,
    database_is_shared,
    error_of,
    events_of,
    field_errors,
    finish_meanwhile,
    holder_notifications,
    list_revision,
    stored,
)

# -- issuing ---------------------------------------------------------------------------------------------

def test_issuing_answers_201_with_identifier_version_status_and_sd_jwt(samr):
    response = samr.post(certificate_body())

    assert response.status_code == 201
    body = response.get_json()
    assert set(body) == {"identifier", "version", "status", "sd_jwt"}
    assert body["version"] == 1
    assert body["status"] == "valid"
    assert body["sd_jwt"].count("~") >= 2


def test_the_identifier_is_gbt_36904_with_a_correct_check_character(samr):
    identifier = samr.issued()

    parsed = parse_identifier(identifier)
    assert (parsed.type_code, parsed.issuer_code, parsed.version) == (BUSINESS_LICENCE, SAMR, 1)
    assert identifier.startswith(f"1.2.156.3005.2.{BUSINESS_LICENCE}.{SAMR}.{parsed.serial}.001.")
    assert identifier[-1] == identifier_check_character(BUSINESS_LICENCE, SAMR, parsed.serial, 1)


def test_serials_are_12_random_base36_characters():
    serials = [new_serial() for _ in range(2000)]
    assert all(re.fullmatch(r"[0-9A-Z]{12}", serial) for serial in serials)
    assert len(set(serials)) == len(serials)
    assert {serial[0] for serial in serials} == set(SERIAL_ALPHABET)  # every position takes every character
    assert {serial[-1] for serial in serials} == set(SERIAL_ALPHABET)


def test_a_built_row_has_a_value_for_every_certificate_column(app, samr, clock):
    """Imports insert `build_row`'s values with Core: a column it forgot would be NULL, a stray key an error."""
    with app.app_context():
        issuer = Issuer(Deps(db.session(), keystore(), field_cipher(), "http://localhost"),
                        get_department(db.session, SAMR), actor=Actor.operator("test"), now=clock())
        problems = FieldProblems()
        body = certificate_body()
        prepared = issuer.prepare(CertificateInput(body["type_code"], body["certificate_number"],
                                                   body["holder"]["name"], body["holder"]["code_type"],
                                                   body["holder"]["code"], body["issued_on"], body["valid_from"],
                                                   body["fields"], body["valid_until"]), problems)
        assert prepared is not None, problems.items
        row = issuer.build_row(prepared, origin="imported")
        assert set(row) == set(CERTIFICATE_COLUMNS)
        assert row["number_index"] == issuer.number_index(prepared) and row["status"] == "valid"
        db.session.rollback()


def test_the_sd_jwt_is_signed_by_the_department_and_discloses_holder_and_face(app, client, samr):
    body = certificate_body()
    token = samr.post(body).get_json()["sd_jwt"]

    parsed = sdjwt.parse(token)
    header = jwt.get_unverified_header(parsed.issuer_jwt)
    published = {k["kid"]: k for k in client.get("/.well-known/jwks.json").get_json()["keys"]}
    key = jwt.PyJWK(published[header["kid"]])
    payload = jwt.decode(parsed.issuer_jwt, key, algorithms=["ES256"], options={"verify_nbf": False})
    claims = sdjwt.reconstruct(payload, parsed.disclosures)
    assert header["typ"] == "dc+sd-jwt"
    assert claims["iss"] == f"http://localhost/issuers/{SAMR}"
    assert claims["vct"] == f"urn:ecert:{BUSINESS_LICENCE}"
    assert claims["holder"] == {"name": body["holder"]["name"], "code_type": "001", "code": body["holder"]["code"]}
    assert claims["document"] == {"number": body["certificate_number"]}
    assert claims["face"]["legal_representative"] == body["fields"]["legal_representative"]
    # Nothing personal is visible without its disclosure.
    assert body["holder"]["code"] not in json.dumps(payload, ensure_ascii=False)


def test_holder_face_and_sd_jwt_are_encrypted_at_rest(app, samr):
    body = certificate_body(fields={"legal_representative": "欧阳明远"})
    response = samr.post(body)
    identifier, token = response.get_json()["identifier"], response.get_json()["sd_jwt"]
    secrets_in_clear = [body["holder"]["code"], body["holder"]["name"], "欧阳明远", body["certificate_number"],
                        token.split("~")[0], token.split("~")[1]]

    with app.app_context():
        row = db.session.execute(sa.text("SELECT * FROM certificate WHERE identifier = :i"), {"i": identifier}).one()
    for column, value in row._mapping.items():
        raw = bytes(value) if isinstance(value, bytes | memoryview) else str(value).encode()
        for secret in secrets_in_clear:
            assert secret.encode() not in raw, f"{secret!r} readable in column {column}"


def test_the_holder_code_is_nowhere_in_the_database_in_clear(app, samr):
    body = certificate_body()
    samr.post(body)

    with app.app_context():
        for table in db.metadata.sorted_tables:
            for row in db.session.execute(sa.select(table)):
                assert body["holder"]["code"] not in repr(tuple(row)), f"holder code readable in {table.name}"


@pytest.mark.parametrize(("fields", "field", "reason"), [
    ({"legal_representative": None}, "fields.legal_representative", "missing"),
    ({"shareholders": "王建国"}, "fields.shareholders", "unknown_field"),
    ({"established_on": "2018/05/12"}, "fields.established_on", "invalid"),
    ({"entity_type": "外星企业"}, "fields.entity_type", "invalid"),
    ({"address": "茶韵路\x0118 号"}, "fields.address", "invalid"),
    ({"business_scope": "茶叶\x1f销售"}, "fields.business_scope", "invalid"),
], ids=["missing", "unknown", "malformed-date", "not-a-choice", "control-character", "unit-separator"])
def test_a_bad_face_field_is_422_naming_it(app, samr, fields, field, reason):
    body = certificate_body()
    body["fields"].update(fields)
    body["fields"] = {k: v for k, v in body["fields"].items() if v is not None}

    response = samr.post(body)

    assert field_errors(response).get(field) == reason
    assert count(app, Certificate) == 0


def test_tabs_and_line_breaks_are_allowed_in_text_fields_but_not_in_the_number(app, samr):
    body = certificate_body(fields={"business_scope": "茶叶种植\t加工\n销售"})
    assert samr.post(body).status_code == 201
    assert field_errors(samr.post(certificate_body(certificate_number="XY\t1"))).get("certificate_number") == "invalid"


def with_wrong_check_character(code: str, alphabet: str) -> str:
    return code[:-1] + next(c for c in alphabet if c != code[-1])


@pytest.mark.parametrize(("type_code", "code_type", "code"), [
    (BUSINESS_LICENCE, "001", with_wrong_check_character(company_code(4242), "0123456789ABCDEFGHJKLMNPQRTUWXY")),
    (MARRIAGE, "111", with_wrong_check_character(resident_id(seq=4242), "0123456789X")),
], ids=["uscc", "resident-id"])
def test_a_holder_code_with_a_wrong_check_character_is_422_naming_holder_code(app, samr, civil_affairs, type_code,
                                                                               code_type, code):
    api = samr if type_code == BUSINESS_LICENCE else civil_affairs

    response = api.post(certificate_body(type_code, holder={"code_type": code_type, "code": code}))

    assert "holder.code" in field_errors(response)
    assert count(app, Certificate) == 0


def test_a_natural_person_certificate_refuses_a_uscc_holder(app, civil_affairs):
    body = certificate_body(MARRIAGE, holder={"code_type": "001", "code": company_code()})

    response = civil_affairs.post(body)

    assert field_errors(response).get("holder.code_type") == "wrong_holder_category"


def test_a_type_the_department_does_not_issue_is_403(app, samr):
    response = samr.post(certificate_body(MARRIAGE))

    error = error_of(response, 403, "type_not_issuable")
    assert error["details"]["type_code"] == MARRIAGE
    assert count(app, Certificate) == 0


def test_an_unknown_type_is_422(samr):
    body = certificate_body()
    body["type_code"] = f"{SAMR}099"

    response = samr.post(body)

    assert field_errors(response).get("type_code") == "unknown_type"


def test_the_same_idempotency_key_and_body_return_the_same_certificate(app, samr):
    body = certificate_body()
    first = samr.post(body, key="order-20261126-0001")

    again = samr.post(body, key="order-20261126-0001")

    assert (first.status_code, again.status_code) == (201, 200)
    assert again.get_json()["identifier"] == first.get_json()["identifier"]
    assert count(app, Certificate) == 1


def test_the_same_idempotency_key_with_another_body_is_409(app, samr):
    samr.post(certificate_body(), key="order-20261126-0002")

    response = samr.post(certificate_body(), key="order-20261126-0002")

    error_of(response, 409, "idempotency_key_reused")
    assert count(app, Certificate) == 1


def test_the_same_certificate_number_twice_is_409(app, samr):
    first = certificate_body()
    samr.post(first)

    response = samr.post(certificate_body(certificate_number=first["certificate_number"]))

    error_of(response, 409, "certificate_number_taken")
    assert count(app, Certificate) == 1


def test_a_food_licence_cannot_be_long_term(samr):
    response = samr.post(certificate_body(FOOD_LICENCE, valid_until=None))

    assert field_errors(response).get("valid_until") == "long_term_not_allowed"


def test_an_omitted_valid_until_is_the_types_default_validity(samr):
    body = certificate_body(FOOD_LICENCE, valid_from="2026-01-10")
    assert "valid_until" not in body

    issued = samr.post(body).get_json()

    assert samr.get(issued["identifier"]).get_json()["valid_until"] == "2031-01-09"  # 5 years − 1 day
    payload = jwt.decode(issued["sd_jwt"].split("~")[0], options={"verify_signature": False})
    assert payload["exp"] == china_midnight("2031-01-10")


def test_a_type_without_default_validity_needs_valid_until_unless_long_term_is_allowed(app, runner, tmp_path, samr):
    catalog = tmp_path / "catalog"
    shutil.copytree(DEMO_CATALOG, catalog)
    food = catalog / "types" / "food_business_license.yaml"
    food.write_text(food.read_text().replace("default_years: 5", "default_years: null"))
    assert runner.invoke(args=["catalog", "load", str(catalog)]).exit_code == 0

    response = samr.post(certificate_body(FOOD_LICENCE))

    assert field_errors(response).get("valid_until") == "long_term_not_allowed"
    assert samr.post(certificate_body(FOOD_LICENCE, valid_until="2030-12-31")).status_code == 201


def test_issuing_needs_the_issue_scope(app, make_dept_client):
    catalog_only = make_dept_client(SAMR, scopes=("catalog",))

    response = catalog_only.http.post(CERTIFICATES, json=certificate_body(), headers=catalog_only.headers())

    error_of(response, 403, "insufficient_scope")
    assert count(app, Certificate) == 0


# -- lifecycle -------------------------------------------------------------------------------------------

def test_reissue_makes_version_002_with_the_same_serial_and_supersedes_the_old_one(app, samr):
    old = samr.issued()

    response = samr.act(old, "reissue", {"fields": {"address": "河南省信阳市平桥区新华路 1 号"}, "reason": "住所变更"})

    assert response.status_code == 201, response.get_json()
    new = response.get_json()
    before, after = parse_identifier(old), parse_identifier(new["identifier"])
    assert new["version"] == 2
    assert after.version_text == "002"
    assert (after.type_code, after.issuer_code, after.serial) == (before.type_code, before.issuer_code, before.serial)
    assert after.check_character != before.check_character
    assert new["fields"]["address"] == "河南省信阳市平桥区新华路 1 号"
    assert samr.get(old).get_json()["status"] == "superseded"
    history = samr.get(new["identifier"]).get_json()["versions"]
    assert [(v["identifier"], v["version"], v["status"]) for v in history] == [
        (old, 1, "superseded"), (new["identifier"], 2, "valid")]


def test_reading_shows_the_decrypted_certificate_with_its_events(samr):
    body = certificate_body()
    identifier = samr.post(body).get_json()["identifier"]

    detail = samr.get(identifier).get_json()

    assert detail["holder"] == body["holder"]
    assert detail["certificate_number"] == body["certificate_number"]
    assert detail["fields"]["company_name"] == body["fields"]["company_name"]
    assert detail["origin"] == "issued"
    assert [(e["event"], e["to_status"]) for e in detail["events"]] == [("issued", "valid")]


@pytest.mark.parametrize("body", [{}, {"reason": "作废"}, {"reason": ""}], ids=["missing", "other", "empty"])
def test_revoking_needs_the_reason_注销_or_吊销(samr, body):
    identifier = samr.issued()

    response = samr.act(identifier, "revoke", body)

    assert any(field.endswith("reason") for field in field_errors(response))
    assert samr.get(identifier).get_json()["status"] == "valid"


@pytest.mark.parametrize("reason", ["注销", "吊销"])
def test_revoking_with_注销_or_吊销_revokes(samr, reason):
    identifier = samr.issued()

    response = samr.act(identifier, "revoke", {"reason": reason, "note": "依申请"})

    assert response.status_code == 200
    assert response.get_json()["status"] == "revoked"
    assert response.get_json()["status_reason"].startswith(reason)


@pytest.mark.parametrize(("action", "body"), [
    ("resume", None), ("suspend", {"reason": "核查"}), ("reissue", {}), ("revoke", {"reason": "注销"}),
])
def test_a_revoked_certificate_stays_revoked(samr, action, body):
    identifier = samr.issued()
    samr.act(identifier, "revoke", {"reason": "吊销"})

    response = samr.act(identifier, action, body)

    error_of(response, 409, "invalid_status_transition")
    detail = samr.get(identifier).get_json()
    assert (detail["status"], [v["version"] for v in detail["versions"]]) == ("revoked", [1])


def test_suspend_then_resume_makes_it_valid_again(samr):
    identifier = samr.issued()

    suspended = samr.act(identifier, "suspend", {"reason": "涉嫌虚假登记，立案调查"})
    resumed = samr.act(identifier, "resume")

    assert suspended.get_json()["status"] == "suspended"
    assert resumed.get_json()["status"] == "valid"
    events = [(e["event"], e["from_status"], e["to_status"]) for e in resumed.get_json()["events"]]
    assert events == [("issued", None, "valid"), ("suspended", "valid", "suspended"),
                      ("resumed", "suspended", "valid")]


@pytest.mark.parametrize(("action", "body"), [("resume", None), ("suspend", {"reason": "再次中止"})])
def test_a_transition_from_the_wrong_state_is_409(samr, action, body):
    identifier = samr.issued()
    if action == "suspend":
        samr.act(identifier, "suspend", {"reason": "核查"})

    error_of(samr.act(identifier, action, body), 409, "invalid_status_transition")


@pytest.mark.parametrize(("action", "body"), [
    ("revoke", {"reason": "注销"}), ("suspend", {"reason": "核查"}), ("reissue", {}),
])
def test_a_change_decided_on_a_status_another_change_replaced_meanwhile_is_409(app, samr, action, body):
    database_is_shared(app)
    identifier = samr.issued()

    def act(verb: str, verb_body: dict[str, Any]) -> Any:
        return app.test_client().post(f"{CERTIFICATES}/{identifier}/{verb}", json=verb_body, headers=samr.headers)

    revocation, revoked = finish_meanwhile(lambda: act("revoke", {"reason": "吊销"}))
    with before_first_update(app, "certificate", revocation, thread=threading.get_ident()):
        late = act(action, body)

    assert revoked().status_code == 200
    error_of(late, 409, "invalid_status_transition")
    assert events_of(app, identifier) == [("issued", None, "valid"), ("revoked", "valid", "revoked")]
    assert [v["version"] for v in samr.get(identifier).get_json()["versions"]] == [1]


# (steps before, action, body, event, holder notification kind, status afterwards)
CHANGES = {
    "suspended": ([], "suspend", {"reason": "核查"}, "suspended", "certificate_suspended", "suspended"),
    "resumed": ([("suspend", {"reason": "核查"})], "resume", None, "resumed", "certificate_resumed", "valid"),
    "revoked": ([], "revoke", {"reason": "注销"}, "revoked", "certificate_revoked", "revoked"),
}


def test_issuing_writes_an_event_an_audit_event_and_a_holder_notification(app, samr):
    identifier = samr.issued()

    assert events_of(app, identifier) == [("issued", None, "valid")]
    assert audit_actions(app, identifier) == ["certificate.issued"]
    assert [kind for kind, _ in holder_notifications(app, identifier)] == ["certificate_issued"]


@pytest.mark.parametrize("change", sorted(CHANGES))
def test_every_status_change_writes_an_event_an_audit_event_a_holder_notification_and_bumps_the_list(
        app, samr, change):
    before, action, body, event, kind, status = CHANGES[change]
    identifier = samr.issued()
    for step, step_body in before:
        samr.act(identifier, step, step_body)
    revision = list_revision(app, identifier)
    notified = len(holder_notifications(app, identifier))

    assert samr.act(identifier, action, body).status_code == 200

    assert events_of(app, identifier)[-1][0] == event
    assert events_of(app, identifier)[-1][2] == status
    assert audit_actions(app, identifier)[-1] == f"certificate.{event}"
    notes = holder_notifications(app, identifier)
    assert len(notes) == notified + 1
    assert notes[-1][0] == kind
    assert list_revision(app, identifier) > revision


def test_reissuing_writes_events_audit_and_a_holder_notification_for_both_versions(app, samr):
    old = samr.issued()
    revision = list_revision(app, old)

    new = samr.act(old, "reissue", {"reason": "换证"}).get_json()["identifier"]

    assert events_of(app, old)[-1] == ("superseded", "valid", "superseded")
    assert events_of(app, new) == [("reissued", None, "valid")]
    assert audit_actions(app, new) == ["certificate.reissued"]
    assert [kind for kind, _ in holder_notifications(app, new)] == ["certificate_reissued"]
    assert list_revision(app, old) > revision


def test_issue_read_and_change_answers_keep_to_the_openapi_document(samr):
    issued = samr.post(certificate_body())
    identifier = issued.get_json()["identifier"]
    path = "/gov/v1/certificates/{identifier}"

    assert_documented(samr.dept.http, "post", CERTIFICATES, issued)
    assert_documented(samr.dept.http, "get", path, samr.get(identifier))
    assert_documented(samr.dept.http, "post", path + "/suspend", samr.act(identifier, "suspend", {"reason": "核查"}))
    assert_documented(samr.dept.http, "post", path + "/reissue", samr.act(identifier, "reissue"))


# -- one department cannot touch another's certificates ------------------------------------------------

@pytest.mark.parametrize(("action", "body"), [
    ("read", None), ("reissue", {}), ("revoke", {"reason": "注销"}), ("suspend", {"reason": "核查"}), ("resume", None),
])
def test_a_department_cannot_touch_another_departments_certificate(app, samr, civil_affairs, action, body):
    identifier = civil_affairs.issued(MARRIAGE)
    if action == "resume":
        civil_affairs.act(identifier, "suspend", {"reason": "核查"})
    status = stored(app, identifier).status
    audited = audit_actions(app, identifier)

    response = samr.get(identifier) if action == "read" else samr.act(identifier, action, body)

    error_of(response, 403, "not_certificate_issuer")
    assert "fields" not in response.get_json()
    assert stored(app, identifier).status == status
    assert audit_actions(app, identifier) == audited
    assert count(app, Certificate) == 1


@pytest.mark.parametrize("action", ["read", "reissue", "revoke", "suspend", "resume"])
def test_an_unknown_well_formed_identifier_is_404(samr, action):
    identifier = UNISSUED
    body = {"reason": "注销"} if action == "revoke" else {"reason": "核查"} if action == "suspend" else None

    response = samr.get(identifier) if action == "read" else samr.act(identifier, action, body)

    error_of(response, 404, "certificate_not_found")


UNISSUED = build_identifier(BUSINESS_LICENCE, SAMR, "NEVERISSUED1", 1)


@pytest.mark.parametrize("identifier", [
    with_wrong_check_character(UNISSUED, "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZ"),
    UNISSUED.rsplit(".", 2)[0] + ".1",
    UNISSUED.lower(),
    "not-an-identifier",
], ids=["check-character", "version-format", "lower-case", "garbage"])
def test_a_malformed_identifier_is_422_naming_identifier(samr, identifier):
    response = samr.get(identifier)

    assert "identifier" in field_errors(response)


def test_lifecycle_changes_need_the_issue_scope(app, samr, make_dept_client):
    identifier = samr.issued()
    verifier = make_dept_client(SAMR, scopes=("verify",))

    response = verifier.http.post(f"{CERTIFICATES}/{identifier}/suspend", json={"reason": "核查"},
                                  headers=verifier.headers())

    error_of(response, 403, "insufficient_scope")
    assert stored(app, identifier).status == "valid"


# -- sync: certificates signed in the department's own system --------------------------------------------

@dataclass
class ExternalSigner:
    """A department's own signing system: its private key and the kid the platform registered for it."""

    private: ec.EllipticCurvePrivateKey
    kid: str

    def sign(self, payload: dict[str, Any], headers: dict[str, Any]) -> str:
        return jwt.encode(payload, self.private, algorithm="ES256", headers={**headers, "kid": self.kid})


def register_external_key(runner: Any, tmp_path: Path, department: str) -> ExternalSigner:
    private = ec.generate_private_key(ec.SECP256R1())
    path = tmp_path / f"{department}-{secrets.token_hex(4)}.jwk.json"
    path.write_text(json.dumps(public_jwk(private.public_key())))
    result = runner.invoke(args=["keys", "import", "--dept", department, "--jwk", str(path)])
    assert result.exit_code == 0, result.output
    return ExternalSigner(private, result.stdout.strip())


@pytest.fixture
def own_system(runner: Any, tmp_path: Path, catalog: None) -> ExternalSigner:
    """SAMR's own certificate system, its public key registered with `flask keys import`."""
    return register_external_key(runner, tmp_path, SAMR)


def serial() -> str:
    return "".join(secrets.choice("0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZ") for _ in range(12))


def externally_signed(signer: ExternalSigner, *, type_code: str = FOOD_LICENCE, department: str = SAMR,
                      claims: dict[str, Any] | None = None, face: dict[str, Any] | None = None,
                      disclose: bool = True) -> tuple[str, dict[str, Any], str]:
    """An SD-JWT VC following the platform's profile, signed outside the platform. Returns (token, body, identifier)."""
    body = certificate_body(type_code, fields=face or {})
    body.setdefault("valid_until", "2031-01-09")
    identifier = build_identifier(type_code, department, serial(), 1)
    visible: dict[str, Any] = {
        "iss": f"http://localhost/issuers/{department}", "vct": f"urn:ecert:{type_code}", "identifier": identifier,
        "type_code": type_code, "version": 1, "issued_on": body["issued_on"], "iat": int(START.timestamp()),
        "nbf": china_midnight(body["valid_from"]),
    }
    if body["valid_until"] is not None:
        visible["exp"] = china_midnight((date.fromisoformat(body["valid_until"]) + timedelta(days=1)).isoformat())
    visible.update(claims or {})
    token = sdjwt.issue(signer.sign, visible=visible, disclosable={
        "holder": {"name": body["holder"]["name"], "code_type": body["holder"]["code_type"],
                   "code": body["holder"]["code"]},
        "document": {"number": body["certificate_number"]},
        "face": body["fields"],
    }).token
    if not disclose:
        token = token.split("~")[0] + "~"
    return token, body, identifier


def test_a_certificate_signed_by_the_departments_registered_key_is_stored_as_synced(app, samr, own_system):
    token, body, identifier = externally_signed(own_system)

    response = samr.post({"sd_jwt": token})

    assert response.status_code == 201, response.get_json()
    assert response.get_json() == {"identifier": identifier, "version": 1, "status": "valid", "sd_jwt": token}
    detail = samr.get(identifier).get_json()
    assert detail["origin"] == "synced"
    assert (detail["valid_from"], detail["valid_until"]) == (body["valid_from"], "2031-01-09")
    assert detail["holder"] == body["holder"]
    assert detail["fields"]["operator_name"] == body["fields"]["operator_name"]
    assert stored(app, identifier).signing_kid == own_system.kid
    assert audit_actions(app, identifier) == ["certificate.issued"]


def test_a_synced_certificate_may_be_long_term_when_its_type_allows(samr, own_system):
    token, _, identifier = externally_signed(own_system, type_code=BUSINESS_LICENCE)

    assert samr.post({"sd_jwt": token}).status_code == 201
    assert samr.get(identifier).get_json()["valid_until"] is None


def tampered(token: str) -> str:
    issuer_jwt, _, rest = token.partition("~")
    head, payload, signature = issuer_jwt.split(".")
    claims = json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))
    claims["issued_on"] = "2020-01-01"
    forged = base64.urlsafe_b64encode(json.dumps(claims).encode()).decode().rstrip("=")
    return f"{head}.{forged}.{signature}~{rest}"


def test_sync_refuses_a_key_nobody_registered(app, samr, catalog):
    stranger = ExternalSigner(ec.generate_private_key(ec.SECP256R1()), "unregistered-key-0001")
    token, _, _ = externally_signed(stranger)

    assert error_of(samr.post({"sd_jwt": token}), 422, "invalid_sd_jwt")["details"]["reason"] == "unknown_key"
    assert count(app, Certificate) == 0


def test_sync_refuses_another_departments_registered_key(app, runner, tmp_path, samr):
    theirs = register_external_key(runner, tmp_path, CIVIL_AFFAIRS)
    token, _, _ = externally_signed(theirs)

    assert error_of(samr.post({"sd_jwt": token}), 422, "invalid_sd_jwt")["details"]["reason"] == "foreign_key"
    assert count(app, Certificate) == 0


def test_sync_refuses_the_kid_of_another_departments_platform_key(app, samr, catalog):
    with app.app_context():
        kid = keystore().active_key("certificate", get_department(db.session, CIVIL_AFFAIRS)).kid
    token, _, _ = externally_signed(ExternalSigner(ec.generate_private_key(ec.SECP256R1()), kid))

    assert error_of(samr.post({"sd_jwt": token}), 422, "invalid_sd_jwt")["details"]["reason"] == "foreign_key"


@pytest.mark.parametrize(("case", "reason"), [
    ("wrong_iss", "wrong_issuer"),
    ("tampered", "bad_signature"),
    ("no_disclosures", "missing_disclosures"),
    ("foreign_identifier", "identifier_mismatch"),
    ("version_mismatch", "identifier_mismatch"),
])
def test_sync_refuses_a_certificate_that_does_not_verify_with_a_reason(app, samr, own_system, case, reason):
    claims: dict[str, Any] = {}
    if case == "wrong_iss":
        claims["iss"] = f"http://localhost/issuers/{CIVIL_AFFAIRS}"
    if case == "foreign_identifier":
        claims["identifier"] = build_identifier(FOOD_LICENCE, CIVIL_AFFAIRS, serial(), 1)
    if case == "version_mismatch":
        claims["version"] = 2
    token, _, _ = externally_signed(own_system, claims=claims, disclose=case != "no_disclosures")
    if case == "tampered":
        token = tampered(token)

    response = samr.post({"sd_jwt": token})

    assert error_of(response, 422, "invalid_sd_jwt")["details"]["reason"] == reason
    assert count(app, Certificate) == 0


def test_sync_refuses_face_fields_that_break_the_types_schema(app, samr, own_system):
    token, _, _ = externally_signed(own_system, face={"online_operation": "是", "opening_hours": "9-21"})

    problems = field_errors(samr.post({"sd_jwt": token}))

    assert problems.get("fields.online_operation") == "invalid"
    assert problems.get("fields.opening_hours") == "unknown_field"
    assert count(app, Certificate) == 0


def test_sync_refuses_a_type_the_department_does_not_issue(app, samr, own_system):
    token, _, _ = externally_signed(own_system, type_code=MARRIAGE, department=SAMR)

    error_of(samr.post({"sd_jwt": token}), 403, "type_not_issuable")
    assert count(app, Certificate) == 0


def test_sync_takes_no_other_fields_besides_sd_jwt(samr, own_system):
    token, body, _ = externally_signed(own_system)

    response = samr.post({"sd_jwt": token, "type_code": body["type_code"]})

    assert response.status_code == 422


# -- dates: every date a department gives lies in 1900-01-01 … 2199-12-31 -----------------------------------------

@pytest.mark.parametrize("day", ["9999-12-31", "2200-01-01", "1899-12-31", "0001-01-01"])
@pytest.mark.parametrize("name", ["issued_on", "valid_from", "valid_until"])
def test_a_date_outside_1900_to_2199_is_a_422_naming_the_field_not_an_overflow(app, samr, name, day):
    response = samr.post(certificate_body(**{name: day}))

    assert name in {item["field"] for item in error_of(response, 422, "validation_failed")["details"]["fields"]}
    assert count(app, Certificate) == 0


def test_the_last_accepted_day_is_issued_with_exp_at_the_start_of_the_day_after(samr):
    issued = samr.issue(valid_until="2199-12-31")

    payload = jwt.decode(issued["sd_jwt"].split("~")[0], options={"verify_signature": False})
    assert payload["exp"] == china_midnight("2200-01-01")


def test_a_reissue_with_a_far_future_valid_until_is_a_422_naming_it(samr):
    identifier = samr.issued()

    response = samr.act(identifier, "reissue", {"valid_until": "9999-12-31"})

    assert "valid_until" in field_errors(response)
    assert samr.get(identifier).get_json()["status"] == "valid"


def test_a_face_date_outside_the_range_is_a_422_naming_the_face_field(samr):
    response = samr.post(certificate_body(fields={"established_on": "9999-12-31"}))

    assert field_errors(response) == {"fields.established_on": "date_out_of_range"}


def test_a_default_validity_ending_after_2199_is_a_422_on_valid_until(disability_federation):
    body = certificate_body(DISABILITY, issued_on="2026-01-01", valid_from="2195-06-01")  # + 10 years

    assert field_errors(disability_federation.post(body)) == {"valid_until": "date_out_of_range"}


@pytest.mark.parametrize(("claim", "value", "reason"), [
    ("exp", china_midnight("2500-01-01"), "date_out_of_range"),
    ("nbf", china_midnight("1800-01-01"), "date_out_of_range"),
    ("iat", 10**12, "invalid_time_claims"),  # the year 33658: no date at all
    ("iat", china_midnight("2300-01-01"), "date_out_of_range"),
])
def test_a_synced_certificate_with_a_time_claim_out_of_range_is_a_422_naming_the_claim(app, samr, own_system, claim,
                                                                                       value, reason):
    token, _, _ = externally_signed(own_system, claims={claim: value})

    error = error_of(samr.post({"sd_jwt": token}), 422, "invalid_sd_jwt")

    assert error["details"]["fields"] == [{"field": f"sd_jwt.{claim}", "reason": reason}]
    assert count(app, Certificate) == 0
