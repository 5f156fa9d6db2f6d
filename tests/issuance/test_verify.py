"""Verification for departments: POST /gov/v1/verify and the independent RFC 9901 reference verifier."""

from __future__ import annotations

import base64
import json
from datetime import date
from typing import Any

import jwt
import pytest
from cryptography.hazmat.primitives.asymmetric import ec
from flask_openapi3 import OpenAPI
from jwcrypto.jwk import JWK
from sd_jwt.verifier import SDJWTVerifier
from sqlalchemy import select

from backend.catalog.loader import get_department
from backend.crypto.jwk import public_jwk
from backend.crypto.sdjwt import b64url, b64url_decode, make_disclosure, select_disclosures
from backend.crypto.sdjwt import issue as issue_sd_jwt
from backend.extensions import db
from backend.identity.clients import purge_used_assertions
from backend.issuance.issuer import day_start
from backend.kernel.identifiers import build_identifier
from backend.keys.keystore import PURPOSE_CERTIFICATE, PURPOSE_PLATFORM, PURPOSE_WALLET, LocalKeyStore
from backend.models import AuditEvent, Certificate, ClientAssertionUse
from tests.conftest import CIVIL_AFFAIRS, SAMR, DeptClient, FakeClock
from tests.factories import BUSINESS_LICENCE, FOOD_LICENCE, certificate_body
from tests.presentation_support import presented_to, with_key_binding
from tests.support import change, detached_all, issue

OBJECTS = ("holder", "document", "face")
P256_ORDER = 0xFFFFFFFF00000000FFFFFFFFFFFFFFFFBCE6FAADA7179E84F3B9CAC2FC632551
SOME = {("holder", "name"), ("face", "company_name")}


# -- helpers ---------------------------------------------------------------------------------------------------

def verify(dept: DeptClient, **body: Any) -> Any:
    return dept.http.post("/gov/v1/verify", json=body, headers=dept.headers())


def verified(dept: DeptClient, **body: Any) -> dict[str, Any]:
    response = verify(dept, **body)
    assert response.status_code == 200, response.get_json()
    return dict(response.get_json())


def reference_verify(http: Any, presentation: str, *, aud: str | None = None, nonce: str | None = None) -> Any:
    """The OpenWallet Foundation reference implementation, given only our published JWKS."""
    keys = http.get("/.well-known/jwks.json").get_json()["keys"]

    def issuer_key(_issuer: str, header: dict[str, Any]) -> JWK:
        return JWK(**next(key for key in keys if key["kid"] == header["kid"]))

    return SDJWTVerifier(presentation, issuer_key, aud, nonce).get_verified_payload()


def split(sd_jwt: str) -> tuple[dict[str, Any], dict[str, Any], str]:
    """(header, payload, "~disclosures~") of an issued SD-JWT."""
    issuer_jwt, rest = sd_jwt.split("~", 1)
    header, payload, _ = issuer_jwt.split(".")
    return json_part(header), json_part(payload), "~" + rest


def json_part(part: str) -> dict[str, Any]:
    return dict(json.loads(base64.urlsafe_b64decode(part + "=" * (-len(part) % 4))))


def store(app: OpenAPI) -> LocalKeyStore:
    return LocalKeyStore(db.session(), app.config["ECERT_MASTER_KEY"])


@pytest.fixture
def present(app: OpenAPI, clock: FakeClock) -> Any:
    """The holder's wallet presenting to a department now: the presentation with a fresh KB-JWT for that client."""
    def bind(dept: DeptClient, presentation: str, nonce: str | None = None) -> str:
        return presented_to(app, dept, clock, presentation, nonce)
    return bind


def personal_values(body: dict[str, Any]) -> list[str]:
    """What a certificate body holds about its holder: never in a failed verdict."""
    return [body["holder"]["name"], body["holder"]["code"], body["certificate_number"],
            body["fields"]["company_name"], body["fields"]["legal_representative"]]


def now_ts(clock: FakeClock) -> int:
    return int(clock().timestamp())


def audit_events(app: OpenAPI) -> list[AuditEvent]:
    return detached_all(app, select(AuditEvent).where(AuditEvent.action == "certificate.verified")
                        .order_by(AuditEvent.seq))


# -- an issued certificate verifies, independently and with our endpoint ------------------------------------------

def test_issued_sd_jwt_with_all_disclosures_verifies_with_the_reference_implementation(dept_client):
    body = certificate_body()
    response = dept_client.http.post("/gov/v1/certificates", json=body, headers=dept_client.headers())
    claims = reference_verify(dept_client.http, response.get_json()["sd_jwt"])
    assert claims["holder"] == body["holder"]
    assert claims["document"] == {"number": body["certificate_number"]}
    assert claims["face"] == body["fields"]
    assert claims["vct"] == f"urn:ecert:{BUSINESS_LICENCE}"


def test_issued_sd_jwt_with_some_disclosures_verifies_with_the_reference_implementation(dept_client):
    issued = issue(dept_client)
    partial = select_disclosures(issued["sd_jwt"], SOME, OBJECTS)
    claims = reference_verify(dept_client.http, partial)
    assert set(claims["holder"]) == {"name"}
    assert set(claims["face"]) == {"company_name"}
    assert claims["document"] == {}


def test_issued_sd_jwt_presented_with_key_binding_verifies_with_our_endpoint(dept_client, present):
    body = certificate_body()
    issued = dept_client.http.post("/gov/v1/certificates", json=body, headers=dept_client.headers()).get_json()
    result = verified(dept_client, presentation=present(dept_client, issued["sd_jwt"]))
    assert result["valid"] is True and result["status"] == "valid" and result["reasons"] == []
    certificate = result["certificate"]
    assert certificate["identifier"] == issued["identifier"]
    assert certificate["type_code"] == BUSINESS_LICENCE and certificate["type_name"]
    assert certificate["issuer"]["code"] == SAMR and certificate["issuer"]["name"]
    assert certificate["version"] == 1
    assert certificate["valid_from"] == body["valid_from"] and certificate["valid_until"] is None
    assert certificate["disclosed"] == {"holder": body["holder"], "document": {"number": body["certificate_number"]},
                                        "face": body["fields"]}


def test_partial_presentation_shows_only_what_was_disclosed(dept_client, present):
    body = certificate_body()
    issued = dept_client.http.post("/gov/v1/certificates", json=body, headers=dept_client.headers()).get_json()
    result = verified(dept_client, presentation=present(dept_client, select_disclosures(issued["sd_jwt"], SOME,
                                                                                         OBJECTS)))
    assert result["valid"] is True
    assert result["certificate"]["disclosed"] == {"holder": {"name": body["holder"]["name"]},
                                                  "face": {"company_name": body["fields"]["company_name"]}}


def test_another_department_verifies_a_presentation_made_to_it(dept_client, make_dept_client, present):
    issued = issue(dept_client)
    other = make_dept_client(department=CIVIL_AFFAIRS, scopes=("verify",))
    partial = select_disclosures(issued["sd_jwt"], SOME, OBJECTS)
    assert verified(other, presentation=present(other, partial))["valid"] is True


# -- tampering and foreign keys ------------------------------------------------------------------------------------

def test_tampered_payload_is_a_bad_signature(dept_client):
    issued = issue(dept_client)
    _, payload, rest = split(issued["sd_jwt"])
    signature = issued["sd_jwt"].split("~")[0].split(".")[2]
    payload["exp"] = day_start(date(2099, 1, 1))  # a longer validity, same signature
    tampered = ".".join([issued["sd_jwt"].split(".")[0], b64url(json.dumps(payload).encode()), signature]) + rest
    result = verified(dept_client, presentation=tampered)
    assert result == {"valid": False, "status": "unknown", "reasons": ["bad_signature"], "certificate": None}
    with pytest.raises(Exception):  # noqa: B017 - the reference implementation agrees, whatever it raises
        reference_verify(dept_client.http, tampered)


def resign(sd_jwt: str, private_key: Any, kid: str) -> str:
    _, payload, rest = split(sd_jwt)
    return jwt.encode(payload, private_key, algorithm="ES256", headers={"typ": "dc+sd-jwt", "kid": kid}) + rest


def test_payload_signed_by_a_foreign_key_is_refused(dept_client):
    issued = issue(dept_client)
    fresh = ec.generate_private_key(ec.SECP256R1())
    unknown = resign(issued["sd_jwt"], fresh, "a-key-we-never-registered")
    assert verified(dept_client, presentation=unknown)["reasons"] == ["unknown_key"]
    kid = split(issued["sd_jwt"])[0]["kid"]
    impostor = resign(issued["sd_jwt"], fresh, kid)  # claims to be the department's key
    assert verified(dept_client, presentation=impostor)["reasons"] == ["bad_signature"]


def test_payload_signed_by_another_departments_key_is_a_wrong_issuer(app, dept_client):
    issued = issue(dept_client)
    _, payload, rest = split(issued["sd_jwt"])
    with app.app_context():
        keys = store(app)
        other = keys.active_key(PURPOSE_CERTIFICATE, get_department(db.session, CIVIL_AFFAIRS))
        forged = keys.sign_jwt(other, payload, {"typ": "dc+sd-jwt"}) + rest
        platform = keys.sign_jwt(keys.active_key(PURPOSE_PLATFORM), payload, {"typ": "dc+sd-jwt"}) + rest
    assert verified(dept_client, presentation=forged)["reasons"] == ["wrong_issuer"]
    assert verified(dept_client, presentation=platform)["reasons"] == ["unknown_key"]


def test_wrong_typ_and_unsupported_algorithms_are_refused(dept_client):
    issued = issue(dept_client)
    _, payload, rest = split(issued["sd_jwt"])
    hmac = jwt.encode(payload, "secret-secret-secret-secret-secret", algorithm="HS256",
                      headers={"typ": "dc+sd-jwt", "kid": split(issued["sd_jwt"])[0]["kid"]}) + rest
    assert verified(dept_client, presentation=hmac)["reasons"] == ["unsupported_alg"]
    plain = jwt.encode(payload, ec.generate_private_key(ec.SECP256R1()), algorithm="ES256",
                       headers={"typ": "JWT"}) + rest
    assert verified(dept_client, presentation=plain)["reasons"] == ["wrong_typ"]


@pytest.mark.parametrize("presentation", ["not an sd-jwt", "a.b.c", "abc~", "a.b.c~d~", "é~", "~~~", "a" * 5000])
def test_garbage_is_judged_malformed_not_an_error(dept_client, presentation):
    result = verified(dept_client, presentation=presentation)
    assert result["valid"] is False and result["reasons"] == ["malformed"]


# -- disclosures ---------------------------------------------------------------------------------------------------

def test_unreferenced_disclosure_is_refused(dept_client, present):
    issued = issue(dept_client)
    smuggled = issued["sd_jwt"] + make_disclosure("name", "冒名顶替有限公司") + "~"
    result = verified(dept_client, presentation=present(dept_client, smuggled))
    assert result["valid"] is False and result["reasons"] == ["unreferenced_disclosure"]
    assert result["certificate"]["disclosed"] == {}


def test_duplicate_disclosure_is_refused(dept_client, present):
    issued = issue(dept_client)
    first = issued["sd_jwt"].split("~")[1]
    result = verified(dept_client, presentation=present(dept_client, issued["sd_jwt"] + first + "~"))
    assert result["valid"] is False and result["reasons"] == ["duplicate_disclosure"]
    with pytest.raises(ValueError):
        reference_verify(dept_client.http, issued["sd_jwt"] + first + "~")


# -- status and validity period ------------------------------------------------------------------------------------

def test_revoked_certificate_is_invalid_and_discloses_nothing(dept_client, present):
    issued = issue(dept_client)
    change(dept_client, issued["identifier"], "revoke", {"reason": "吊销", "note": "违法经营"})
    result = verified(dept_client, presentation=present(dept_client, issued["sd_jwt"]))
    assert (result["valid"], result["status"], result["reasons"]) == (False, "revoked", ["revoked"])
    assert result["certificate"]["status"] == "revoked"
    assert result["certificate"]["disclosed"] == {}


def test_suspended_certificate_is_invalid_until_resumed(dept_client, present):
    issued = issue(dept_client)
    change(dept_client, issued["identifier"], "suspend", {"reason": "核查中"})
    result = verified(dept_client, presentation=present(dept_client, issued["sd_jwt"]))
    assert (result["valid"], result["status"], result["reasons"]) == (False, "suspended", ["suspended"])
    change(dept_client, issued["identifier"], "resume")
    assert verified(dept_client, presentation=present(dept_client, issued["sd_jwt"]))["valid"] is True


def test_superseded_version_is_invalid_and_its_successor_valid(dept_client, present):
    issued = issue(dept_client)
    raised = {"fields": {"registered_capital": "800万元人民币"}}
    successor = change(dept_client, issued["identifier"], "reissue", raised)
    old = verified(dept_client, presentation=present(dept_client, issued["sd_jwt"]))
    assert (old["valid"], old["status"], old["reasons"]) == (False, "superseded", ["superseded"])
    new = verified(dept_client, presentation=present(dept_client, successor["sd_jwt"]))
    assert new["valid"] is True and new["certificate"]["version"] == 2
    assert new["certificate"]["disclosed"]["face"]["registered_capital"] == "800万元人民币"


def test_certificate_past_its_validity_is_expired(dept_client, clock, present):
    issued = issue(dept_client, FOOD_LICENCE)  # five years from 2026-01-10
    assert verified(dept_client, presentation=present(dept_client, issued["sd_jwt"]))["valid"] is True
    clock.advance(days=5 * 366)
    result = verified(dept_client, presentation=present(dept_client, issued["sd_jwt"]))
    assert (result["valid"], result["status"], result["reasons"]) == (False, "expired", ["expired"])
    assert result["certificate"]["valid_until"] == "2031-01-09"


def test_certificate_marked_expired_is_expired(app, dept_client):
    issued = issue(dept_client, FOOD_LICENCE)
    with app.app_context():  # what `flask jobs expire` leaves behind
        certificate = db.session.scalars(select(Certificate)
                                         .where(Certificate.identifier == issued["identifier"])).one()
        certificate.status = "expired"
        db.session.commit()
    result = verified(dept_client, identifier=issued["identifier"])
    assert (result["valid"], result["status"], result["reasons"]) == (False, "expired", ["expired"])


def test_certificate_before_its_validity_is_not_yet_valid(dept_client, present):
    issued = issue(dept_client, valid_from="2027-03-01")
    result = verified(dept_client, presentation=present(dept_client, issued["sd_jwt"]))
    assert (result["valid"], result["status"], result["reasons"]) == (False, "valid", ["not_yet_valid"])


# -- key binding ---------------------------------------------------------------------------------------------------

def test_key_bound_presentation_verifies_here_and_with_the_reference_implementation(app, dept_client, clock):
    partial = select_disclosures(issue(dept_client)["sd_jwt"], SOME, OBJECTS)
    bound = with_key_binding(app, partial, aud=dept_client.client_id, nonce="req-42", iat=now_ts(clock))
    result = verified(dept_client, presentation=bound, nonce="req-42")
    assert result["valid"] is True, result["reasons"]
    claims = reference_verify(dept_client.http, bound, aud=dept_client.client_id, nonce="req-42")
    assert set(claims["holder"]) == {"name"}


@pytest.mark.parametrize(("case", "reason"), [
    ("wrong_audience", "kb_wrong_audience"),
    ("wrong_nonce", "kb_wrong_nonce"),
    ("other_presentation", "kb_sd_hash_mismatch"),
    ("stale", "kb_iat_out_of_range"),
    ("future", "kb_iat_out_of_range"),
    ("not_the_wallet_key", "kb_bad_signature"),
    ("wrong_typ", "kb_wrong_typ"),
])
def test_key_binding_failures_are_named(app, dept_client, clock, case, reason):
    issued = issue(dept_client)["sd_jwt"]
    partial = select_disclosures(issued, SOME, OBJECTS)
    options: dict[str, Any] = {"aud": dept_client.client_id, "nonce": "req-42", "iat": now_ts(clock)}
    if case == "wrong_audience":
        options["aud"] = "some-other-department"
    elif case == "wrong_nonce":
        options["nonce"] = "req-41"
    elif case == "other_presentation":
        options["hashed"] = issued  # bound to the full presentation, presented with fewer disclosures
    elif case == "stale":
        options["iat"] -= 6 * 60
    elif case == "future":
        options["iat"] += 6 * 60
    elif case == "not_the_wallet_key":
        options["purpose"] = PURPOSE_PLATFORM
    elif case == "wrong_typ":
        options["typ"] = "JWT"
    bound = with_key_binding(app, partial, **options)
    result = verified(dept_client, presentation=bound, nonce="req-42")
    assert result["valid"] is False
    assert result["reasons"] == [reason]
    assert result["status"] == "valid"  # the certificate is fine; this presentation is not


def test_a_presentation_without_key_binding_is_kb_missing_and_discloses_nothing(dept_client):
    body = certificate_body()
    issued = dept_client.http.post("/gov/v1/certificates", json=body, headers=dept_client.headers()).get_json()
    partial = select_disclosures(issued["sd_jwt"], SOME, OBJECTS)
    for extra in ({}, {"nonce": "req-42"}):
        response = verify(dept_client, presentation=partial, **extra)
        result = response.get_json()
        assert (result["valid"], result["status"], result["reasons"]) == (False, "valid", ["kb_missing"])
        assert result["certificate"]["disclosed"] == {}
        for value in personal_values(body):
            assert value not in response.get_data(as_text=True)


def test_the_issued_sd_jwt_replayed_by_a_department_is_kb_missing_with_no_disclosed_data(dept_client,
                                                                                          make_dept_client):
    """The issuing department got the full SD-JWT back from POST /gov/v1/certificates: it proves no consent."""
    body = certificate_body()
    issued = dept_client.http.post("/gov/v1/certificates", json=body, headers=dept_client.headers()).get_json()
    other = make_dept_client(department=CIVIL_AFFAIRS, scopes=("verify",))
    for dept in (other, dept_client):
        response = verify(dept, presentation=issued["sd_jwt"])
        assert response.status_code == 200
        result = response.get_json()
        assert (result["valid"], result["reasons"]) == (False, ["kb_missing"])
        assert result["certificate"]["identifier"] == issued["identifier"]
        assert result["certificate"]["disclosed"] == {}
        for value in personal_values(body):
            assert value not in response.get_data(as_text=True)


def test_key_binding_audience_is_the_calling_client(app, dept_client, make_dept_client, clock):
    body = certificate_body()
    issued = dept_client.http.post("/gov/v1/certificates", json=body, headers=dept_client.headers()).get_json()
    bound = with_key_binding(app, issued["sd_jwt"], aud=dept_client.client_id, nonce="n", iat=now_ts(clock))
    other = make_dept_client(department=CIVIL_AFFAIRS, scopes=("verify",))
    response = verify(other, presentation=bound)
    assert response.get_json()["reasons"] == ["kb_wrong_audience"]
    assert response.get_json()["certificate"]["disclosed"] == {}
    for value in personal_values(body):
        assert value not in response.get_data(as_text=True)
    assert verified(dept_client, presentation=bound)["valid"] is True  # refused elsewhere, not spent


def test_the_same_key_binding_jwt_is_accepted_once(app, dept_client, present):
    body = certificate_body()
    issued = dept_client.http.post("/gov/v1/certificates", json=body, headers=dept_client.headers()).get_json()
    bound = present(dept_client, issued["sd_jwt"])
    assert verified(dept_client, presentation=bound)["valid"] is True
    response = verify(dept_client, presentation=bound)
    result = response.get_json()
    assert (result["valid"], result["status"], result["reasons"]) == (False, "valid", ["kb_replayed"])
    assert result["certificate"]["disclosed"] == {}
    for value in personal_values(body):
        assert value not in response.get_data(as_text=True)
    assert [e.details["reasons"] for e in audit_events(app)] == [[], ["kb_replayed"]]  # the replay is on record
    # A new presentation of the same certificate by the holder's wallet is fine.
    assert verified(dept_client, presentation=present(dept_client, issued["sd_jwt"]))["valid"] is True


def malleated(kb_jwt: str) -> str:
    """The same ES256 KB-JWT with s replaced by n − s: a different signature, just as valid (ECDSA malleability)."""
    signed, signature = kb_jwt.rsplit(".", 1)
    raw = b64url_decode(signature)
    s = int.from_bytes(raw[32:], "big")
    return f"{signed}.{b64url(raw[:32] + (P256_ORDER - s).to_bytes(32, 'big'))}"


def test_a_re_signed_copy_of_an_accepted_key_binding_jwt_is_a_replay_too(dept_client, present):
    bound = present(dept_client, issue(dept_client)["sd_jwt"])
    presentation, kb = bound.rsplit("~", 1)
    assert split(bound)[0]["alg"] == "ES256"
    assert json_part(kb.split(".")[0])["alg"] == "ES256"
    twin = f"{presentation}~{malleated(kb)}"
    assert twin != bound
    assert verified(dept_client, presentation=bound)["valid"] is True
    assert verified(dept_client, presentation=twin)["reasons"] == ["kb_replayed"]


def spent_key_bindings(app: OpenAPI, clock: FakeClock) -> int:
    """Run the purge job's clean-up now; how many spent KB-JWTs are still remembered."""
    with app.app_context():
        purge_used_assertions(db.session(), now=clock())
        db.session.commit()
        return sum(use.jti.startswith("kb:") for use in db.session.scalars(select(ClientAssertionUse)))


def test_a_spent_key_binding_jwt_is_forgotten_only_once_it_is_stale(app, dept_client, clock, present):
    bound = present(dept_client, issue(dept_client)["sd_jwt"])
    assert verified(dept_client, presentation=bound)["valid"] is True
    clock.advance(minutes=4, seconds=59)
    assert spent_key_bindings(app, clock) == 1
    assert verify(dept_client, presentation=bound).get_json()["reasons"] == ["kb_replayed"]
    clock.advance(minutes=4)
    assert spent_key_bindings(app, clock) == 1  # kept for 10 minutes: an iat 5 minutes ahead was acceptable
    clock.advance(minutes=7)
    assert spent_key_bindings(app, clock) == 0
    result = verify(dept_client, presentation=bound).get_json()
    assert (result["valid"], result["reasons"]) == (False, ["kb_iat_out_of_range"])


# -- identifiers ---------------------------------------------------------------------------------------------------

def test_identifier_gives_validity_and_status_but_no_personal_data(dept_client):
    body = certificate_body()
    issued = dept_client.http.post("/gov/v1/certificates", json=body, headers=dept_client.headers()).get_json()
    response = verify(dept_client, identifier=issued["identifier"])
    assert response.status_code == 200
    result = response.get_json()
    assert result["valid"] is True and result["status"] == "valid"
    assert result["certificate"]["identifier"] == issued["identifier"]
    assert result["certificate"]["disclosed"] == {}
    text = response.get_data(as_text=True)
    for secret in (body["holder"]["name"], body["holder"]["code"], body["certificate_number"],
                   body["fields"]["legal_representative"]):
        assert secret not in text


def test_identifier_of_a_revoked_certificate_is_invalid(dept_client):
    issued = issue(dept_client)
    change(dept_client, issued["identifier"], "revoke", {"reason": "注销"})
    result = verified(dept_client, identifier=issued["identifier"])
    assert (result["valid"], result["status"], result["reasons"]) == (False, "revoked", ["revoked"])


def test_unknown_well_formed_identifier_is_a_404(app, dept_client):
    unknown = build_identifier(BUSINESS_LICENCE, SAMR, "NEVERISSUED1", 1)
    response = verify(dept_client, identifier=unknown)
    assert response.status_code == 404
    assert response.get_json()["error"]["code"] == "certificate_not_found"
    [event] = audit_events(app)  # the refused lookup is still on record
    assert event.outcome == "failure" and event.object_id == unknown


@pytest.mark.parametrize("identifier", ["1.2.156.3005.2.nonsense", "1.2.156.3005.2." + "A" * 60, "not-an-identifier"])
def test_malformed_identifier_is_a_422_naming_the_field(dept_client, identifier):
    response = verify(dept_client, identifier=identifier)
    assert response.status_code == 422
    assert [f["field"] for f in response.get_json()["error"]["details"]["fields"]] == ["identifier"]


@pytest.mark.parametrize("body", [
    {},
    {"presentation": "a~", "identifier": "1.2.156.3005.2.x"},
    {"identifier": "1.2.156.3005.2.x", "nonce": "n"},
    {"presentation": "a~", "unexpected": True},
    {"presentation": ""},
])
def test_body_must_name_exactly_one_subject_and_nothing_unknown(dept_client, body):
    response = dept_client.http.post("/gov/v1/verify", json=body, headers=dept_client.headers())
    assert response.status_code == 422
    assert "error" in response.get_json()


# -- keys, scope, audit --------------------------------------------------------------------------------------------

def test_rotated_department_key_still_verifies_old_certificates(dept_client, runner, present):
    old = issue(dept_client)
    result = runner.invoke(args=["keys", "rotate", "--dept", SAMR, "--alg", "EdDSA"])
    assert result.exit_code == 0, result.output
    new = issue(dept_client)
    assert (split(old["sd_jwt"])[0]["alg"], split(new["sd_jwt"])[0]["alg"]) == ("ES256", "EdDSA")
    assert split(new["sd_jwt"])[0]["kid"] != split(old["sd_jwt"])[0]["kid"]
    for issued in (old, new):
        assert verified(dept_client, presentation=present(dept_client, issued["sd_jwt"]))["valid"] is True
        assert verified(dept_client, identifier=issued["identifier"])["valid"] is True
        reference_verify(dept_client.http, issued["sd_jwt"])


def test_verification_needs_the_verify_scope(dept_client, make_dept_client):
    issued = issue(dept_client)
    issuer_only = make_dept_client(scopes=("issue",))
    response = verify(issuer_only, presentation=issued["sd_jwt"])
    assert response.status_code == 403
    assert response.get_json()["error"]["code"] == "insufficient_scope"
    assert dept_client.http.post("/gov/v1/verify", json={"presentation": issued["sd_jwt"]}).status_code == 401


def test_every_verification_is_audited_without_personal_data(app, dept_client, present):
    body = certificate_body()
    issued = dept_client.http.post("/gov/v1/certificates", json=body, headers=dept_client.headers()).get_json()
    verified(dept_client, presentation=present(dept_client, select_disclosures(issued["sd_jwt"], SOME, OBJECTS)))
    verified(dept_client, identifier=issued["identifier"])
    verified(dept_client, presentation=present(dept_client, issued["sd_jwt"] + make_disclosure("x", "y") + "~"))
    events = audit_events(app)
    assert [e.outcome for e in events] == ["success", "success", "failure"]
    assert [e.details["mode"] for e in events] == ["presentation", "identifier", "presentation"]
    assert all(e.object_id == issued["identifier"] and e.actor_id == dept_client.client_id for e in events)
    assert events[0].details["disclosed"] == ["face.company_name", "holder.name"]
    assert [e.details["key_binding"] for e in events] == [True, False, True]
    assert events[2].details["reasons"] == ["unreferenced_disclosure"]
    assert events[2].details["disclosed"] == []
    recorded = json.dumps([e.details for e in events], ensure_ascii=False)
    for secret in (body["holder"]["name"], body["holder"]["code"], body["fields"]["company_name"]):
        assert secret not in recorded


# -- certificates synced from a department's own system -------------------------------------------------------------

def test_synced_certificate_is_verified_against_the_departments_registered_key(app, dept_client, clock, present):
    """Its status claim points to the department's own system; our record decides the status."""
    own_key = ec.generate_private_key(ec.SECP256R1())
    with app.app_context():
        keys = store(app)
        registered = keys.import_public_key(get_department(db.session, SAMR), public_jwk(own_key.public_key()), clock())
        kid = registered.kid
        wallet = dict(keys.active_key(PURPOSE_WALLET).public_jwk)
        db.session.commit()
    body = certificate_body()
    identifier = build_identifier(BUSINESS_LICENCE, SAMR, "OWNSYSTEM001", 1)
    synced = issue_sd_jwt(
        lambda payload, headers: jwt.encode(payload, own_key, algorithm="ES256", headers={**headers, "kid": kid}),
        visible={"iss": f"http://localhost/issuers/{SAMR}", "vct": f"urn:ecert:{BUSINESS_LICENCE}",
                 "identifier": identifier, "type_code": BUSINESS_LICENCE, "version": 1,
                 "issued_on": body["issued_on"], "iat": now_ts(clock),
                 "nbf": day_start(date(2026, 3, 1)),
                 "status": {"status_list": {"idx": 7, "uri": "https://samr.example.gov.cn/status/1"}},
                 "cnf": {"jwk": wallet}},
        disclosable={"holder": body["holder"], "document": {"number": body["certificate_number"]},
                     "face": body["fields"]},
    ).token
    response = dept_client.http.post("/gov/v1/certificates", json={"sd_jwt": synced}, headers=dept_client.headers())
    assert response.status_code == 201, response.get_json()
    assert verified(dept_client, presentation=present(dept_client, synced))["valid"] is True
    assert verified(dept_client, presentation=synced)["reasons"] == ["kb_missing"]  # it names the wallet key
    change(dept_client, identifier, "suspend", {"reason": "核查中"})
    result = verified(dept_client, presentation=present(dept_client, synced))
    assert (result["status"], result["reasons"]) == ("suspended", ["suspended"])
    assert verified(dept_client, identifier=identifier)["reasons"] == ["suspended"]


def test_signed_by_a_department_key_but_never_issued_here_is_not_found(app, dept_client):
    issued = issue(dept_client)
    _, payload, rest = split(issued["sd_jwt"])
    payload["identifier"] = build_identifier(BUSINESS_LICENCE, SAMR, "GHOST0001", 1)
    with app.app_context():
        keys = store(app)
        ghost = keys.sign_jwt(keys.active_key(PURPOSE_CERTIFICATE, get_department(db.session, SAMR)), payload,
                              {"typ": "dc+sd-jwt"}) + rest
    result = verified(dept_client, presentation=ghost)
    assert result["valid"] is False and result["status"] == "unknown"
    assert "certificate_not_found" in result["reasons"]
