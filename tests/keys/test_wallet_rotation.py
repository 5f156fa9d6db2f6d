"""Rotating the wallet key (keys rotate --platform wallet): new certificates bind the new key, and every certificate
bound to an older one is still presented with a KB-JWT by the key its `cnf` names; no other retired key signs."""

from __future__ import annotations

from datetime import date
from typing import Any

import jwt
import pytest
import sqlalchemy as sa
from cryptography.hazmat.primitives.asymmetric import ec

from backend.catalog.loader import get_department
from backend.core.context import keystore
from backend.crypto.jwk import load_public_jwk, public_jwk, thumbprint
from backend.crypto.sdjwt import issue as issue_sd_jwt
from backend.errors import Conflict
from backend.extensions import db
from backend.issuance.issuer import day_start
from backend.kernel.identifiers import build_identifier
from backend.keys.keystore import PURPOSE_CERTIFICATE, PURPOSE_PLATFORM, PURPOSE_WALLET, HolderKeyNotHeld
from backend.models import SigningKey
from tests.conftest import SAMR
from tests.factories import BUSINESS_LICENCE, MARRIAGE, certificate_body
from tests.sharing.access_request_support import Asker, answer
from tests.sharing.grant_support import LICENCE_FIELDS, disclosed_paths, offered, redeem, reference_verify, stored_grant
from tests.support import Department, assert_documented, error_of, marriage_of, minted, public_id_of, verdict


def licence_of(app: Any, samr_system: Any, company: str) -> str:
    """A business licence issued here to the citizen's company: its wallet id."""
    return public_id_of(app, Department(samr_system).issue_to_company(company))


def wallet_kid(app: Any) -> str:
    with app.app_context():
        return keystore().active_key(PURPOSE_WALLET).kid


def rotate_wallet_key(app: Any, runner: Any) -> str:
    """`flask keys rotate --platform wallet`, as an operator runs it; answers the new wallet kid."""
    result = runner.invoke(args=["keys", "rotate", "--platform", PURPOSE_WALLET])
    assert result.exit_code == 0, result.output
    new_kid = result.stdout.strip()
    assert new_kid == wallet_kid(app)
    return str(new_kid)


def bound_kid(sd_jwt: str) -> str:
    """The kid of the wallet key a certificate (or a presentation of it) binds in `cnf`, from its key material."""
    payload = jwt.decode(sd_jwt.split("~", 1)[0], options={"verify_signature": False})
    return thumbprint(payload["cnf"]["jwk"])


def key_binding_kid(presentation: str) -> str:
    return str(jwt.get_unverified_header(presentation.rsplit("~", 1)[1])["kid"])


def redeemed_presentation(dept: Any, **body: Any) -> tuple[str, str]:
    """(grant id, the one presentation) of a successful redemption."""
    response = redeem(dept, **body)
    assert response.status_code == 200, response.get_json()
    result = response.get_json()
    [presentation] = result["presentations"]
    return result["grant_id"], presentation["sd_jwt"]


def verified_by_platform(dept: Any, presentation: str, nonce: str) -> dict[str, Any]:
    response = dept.http.post("/gov/v1/verify", json={"presentation": presentation, "nonce": nonce},
                              headers=dept.headers())
    assert response.status_code == 200, response.get_json()
    return dict(response.get_json())


def retired_key(purpose: str, department_code: str | None = None) -> SigningKey:
    """Rotate the key of `purpose` (inside an app context) and answer the retired one."""
    store = keystore()
    department = get_department(db.session, department_code) if department_code else None
    old = store.active_key(purpose, department)
    store.rotate(purpose, department, old.alg, old.created_at)
    assert old.status == "retired"
    return old


# -- certificates bound to the old wallet key keep working ---------------------------------------------------------

def test_an_old_certificate_is_redeemed_after_rotation_and_its_presentation_verifies(
        app, runner, representative, company, samr_system):
    licence = licence_of(app, samr_system, company)
    old_kid = wallet_kid(app)
    grant = offered(representative, licence, samr_system.client_id, LICENCE_FIELDS)
    new_kid = rotate_wallet_key(app, runner)

    grant_id, presentation = redeemed_presentation(samr_system, code=grant["code"])

    assert new_kid != old_kid
    assert bound_kid(presentation) == old_kid
    assert key_binding_kid(presentation) == old_kid  # signed by the key `cnf` names, not the active one
    claims = reference_verify(samr_system.http, presentation, aud=samr_system.client_id, nonce=grant_id)
    assert disclosed_paths(claims) == {"holder.name", "face.company_name", "face.legal_representative"}
    result = verified_by_platform(samr_system, presentation, grant_id)
    assert (result["valid"], result["reasons"]) == (True, [])
    assert result["certificate"]["disclosed"]["face"]["legal_representative"] == "王建国"
    assert stored_grant(app, grant_id).status == "used"


def test_a_certificate_is_presented_after_two_rotations_and_a_grant_made_after_them(
        app, runner, representative, company, samr_system):
    licence = licence_of(app, samr_system, company)
    first_kid = wallet_kid(app)
    rotate_wallet_key(app, runner)
    rotate_wallet_key(app, runner)
    grant = offered(representative, licence, samr_system.client_id, LICENCE_FIELDS)

    grant_id, presentation = redeemed_presentation(samr_system, code=grant["code"])

    assert key_binding_kid(presentation) == first_kid
    assert verified_by_platform(samr_system, presentation, grant_id)["valid"] is True


def test_an_old_certificate_is_redeemed_by_access_request_after_rotation(app, runner, representative, civil_requester):
    held = marriage_of(representative, app, civil_requester)
    old_kid = wallet_kid(app)
    rotate_wallet_key(app, runner)
    asked = Asker(civil_requester).ask(wanted=[{"type_code": MARRIAGE, "fields": ["holder.name", "party_b_name"]}])
    assert answer(representative, asked["id"], "approve", [held.id]).status_code == 200

    grant_id, presentation = redeemed_presentation(civil_requester, request_id=asked["id"])

    assert key_binding_kid(presentation) == old_kid
    claims = reference_verify(civil_requester.http, presentation, aud=civil_requester.client_id, nonce=grant_id)
    assert disclosed_paths(claims) == {"holder.name", "face.party_b_name"}
    assert verified_by_platform(civil_requester, presentation, grant_id)["valid"] is True


def test_an_old_certificate_is_shown_with_fields_after_rotation(app, runner, representative, civil_requester,
                                                                make_dept_client):
    held = marriage_of(representative, app, civil_requester)
    rotate_wallet_key(app, runner)
    scanner = make_dept_client(SAMR, scopes=("verify",))

    url = minted(representative, held.id, "full")["url"]

    response = scanner.http.post("/gov/v1/verify", json={"show_code": url}, headers=scanner.headers())
    result = response.get_json()
    assert response.status_code == 200 and result["valid"] is True, result
    assert result["certificate"]["identifier"] == held.identifier
    assert result["certificate"]["disclosed"]["face"]  # the fields the full profile shows
    assert verdict(representative.http, url.rsplit("/", 1)[1])["state"] == "valid"


# -- new certificates bind the new key ----------------------------------------------------------------------------

def test_a_certificate_issued_after_rotation_binds_the_new_wallet_key(app, runner, representative, company,
                                                                      samr_system):
    samr = Department(samr_system)
    licence = {"holder": {"name": "信阳毛尖茶业有限公司", "code_type": "001", "code": company},
               "fields": {"uscc": company}}
    old_kid = wallet_kid(app)
    before = samr.issue(BUSINESS_LICENCE, **licence)
    new_kid = rotate_wallet_key(app, runner)
    issued = samr.issue(BUSINESS_LICENCE, **licence)

    assert (bound_kid(before["sd_jwt"]), bound_kid(issued["sd_jwt"])) == (old_kid, new_kid)
    grant = offered(representative, public_id_of(app, issued["identifier"]), samr_system.client_id, LICENCE_FIELDS)
    grant_id, presentation = redeemed_presentation(samr_system, code=grant["code"])
    assert key_binding_kid(presentation) == new_kid
    assert verified_by_platform(samr_system, presentation, grant_id)["valid"] is True


# -- a holder key the platform does not hold -------------------------------------------------------------------------

def synced_licence(app: Any, dept: Any, company: str, holder_jwk: dict[str, Any]) -> str:
    """A business licence signed by SAMR's own system (its key registered here), bound to `holder_jwk`."""
    own_key = ec.generate_private_key(ec.SECP256R1())
    with app.app_context():
        kid = keystore().import_public_key(get_department(db.session, SAMR), public_jwk(own_key.public_key()),
                                           dept.clock()).kid
        db.session.commit()
    body = certificate_body(BUSINESS_LICENCE, holder={"code": company}, fields={"uscc": company})
    identifier = build_identifier(BUSINESS_LICENCE, SAMR, "OWNSYSTEM" + company[-6:], 1)
    token = issue_sd_jwt(
        lambda payload, headers: jwt.encode(payload, own_key, algorithm="ES256", headers={**headers, "kid": kid}),
        visible={"iss": f"http://localhost/issuers/{SAMR}", "vct": f"urn:ecert:{BUSINESS_LICENCE}",
                 "identifier": identifier, "type_code": BUSINESS_LICENCE, "version": 1,
                 "issued_on": body["issued_on"], "iat": int(dept.clock().timestamp()),
                 "nbf": day_start(date(2026, 3, 1)), "cnf": {"jwk": holder_jwk}},
        disclosable={"holder": body["holder"], "document": {"number": body["certificate_number"]},
                     "face": body["fields"]},
    ).token
    response = dept.http.post("/gov/v1/certificates", json={"sd_jwt": token}, headers=dept.headers())
    assert response.status_code == 201, response.get_json()
    return identifier


def test_a_certificate_bound_to_a_key_we_do_not_hold_is_refused_clearly_and_the_grant_stays_unused(
        app, representative, company, samr_system):
    foreign = public_jwk(ec.generate_private_key(ec.SECP256R1()).public_key())
    identifier = synced_licence(app, samr_system, company, foreign)
    grant = offered(representative, public_id_of(app, identifier), samr_system.client_id, LICENCE_FIELDS)

    response = redeem(samr_system, code=grant["code"])

    error = error_of(response, 409, "holder_key_not_held")
    assert error["details"] == {"identifier": identifier, "reason": "foreign_holder_key",
                                "thumbprint": thumbprint(foreign)}
    assert_documented(samr_system.http, "post", "/gov/v1/grants/redeem", response)
    assert stored_grant(app, grant["id"]).status == "active"


def test_a_foreign_key_wearing_our_wallet_kid_is_not_our_wallet_key(app, representative, company, samr_system):
    """`cnf` is matched by key material: a `kid` member naming our wallet key next to another key is refused."""
    foreign = {**public_jwk(ec.generate_private_key(ec.SECP256R1()).public_key()), "kid": wallet_kid(app)}
    identifier = synced_licence(app, samr_system, company, foreign)
    grant = offered(representative, public_id_of(app, identifier), samr_system.client_id, LICENCE_FIELDS)

    error_of(redeem(samr_system, code=grant["code"]), 409, "holder_key_not_held")
    assert stored_grant(app, grant["id"]).status == "active"


def test_the_redeem_operation_documents_holder_key_not_held(client):
    operation = client.get("/openapi.json").get_json()["paths"]["/gov/v1/grants/redeem"]["post"]
    assert "409" in operation["responses"]
    assert "holder_key_not_held" in operation["description"]


# -- the key store ----------------------------------------------------------------------------------------------------

def test_wallet_key_for_finds_the_retired_wallet_key_a_cnf_names(app, catalog):
    with app.app_context():
        store = keystore()
        old = retired_key(PURPOSE_WALLET)
        found = store.wallet_key_for({"jwk": dict(old.public_jwk)})
        assert (found.kid, found.status) == (old.kid, "retired")
        active = store.active_key(PURPOSE_WALLET)
        assert store.wallet_key_for({"jwk": dict(active.public_jwk)}).kid == active.kid


@pytest.mark.parametrize(("cnf", "reason"), [
    (None, "no_holder_key"),
    ({}, "no_holder_key"),
    ({"kid": "abc"}, "no_holder_key"),
    ({"jwk": "not an object"}, "no_holder_key"),
    ({"jwk": {"kty": "EC", "crv": "P-256"}}, "malformed_holder_key"),
    ("platform", "foreign_holder_key"),
    ("department", "foreign_holder_key"),
])
def test_wallet_key_for_refuses_what_is_not_a_wallet_key_we_hold(app, catalog, cnf, reason):
    with app.app_context():
        store = keystore()
        if cnf == "platform":
            cnf = {"jwk": dict(store.active_key(PURPOSE_PLATFORM).public_jwk)}
        elif cnf == "department":
            cnf = {"jwk": dict(store.active_key(PURPOSE_CERTIFICATE, get_department(db.session, SAMR)).public_jwk)}
        with pytest.raises(HolderKeyNotHeld) as refused:
            store.wallet_key_for(cnf)
    assert (refused.value.status, refused.value.code, refused.value.details["reason"]) == (409, "holder_key_not_held",
                                                                                           reason)


def test_a_retired_wallet_key_signs_key_binding_jwts_only_when_asked_to(app, catalog):
    with app.app_context():
        store = keystore()
        old = retired_key(PURPOSE_WALLET)
        with pytest.raises(Conflict) as refused:
            store.sign_jwt(old, {"nonce": "n"}, {"typ": "kb+jwt"})
        assert refused.value.code == "signing_key_retired"
        with pytest.raises(Conflict):
            store.sign_bytes(old, b"message")
        token = store.sign_jwt(old, {"nonce": "n"}, {"typ": "kb+jwt"}, allow_retired=True)
        public = load_public_jwk({k: v for k, v in old.public_jwk.items() if k not in {"kid", "use", "alg"}})
        assert jwt.decode(token, public, algorithms=[old.alg]) == {"nonce": "n"}
        assert jwt.get_unverified_header(token)["kid"] == old.kid


@pytest.mark.parametrize(("purpose", "department"), [(PURPOSE_CERTIFICATE, SAMR), (PURPOSE_PLATFORM, None)],
                         ids=["department", "platform"])
def test_other_retired_keys_never_sign_even_when_retired_keys_are_allowed(app, catalog, purpose, department):
    with app.app_context():
        store = keystore()
        old = retired_key(purpose, department)
        for sign in (lambda: store.sign_jwt(old, {"iss": "x"}),
                     lambda: store.sign_jwt(old, {"iss": "x"}, allow_retired=True),
                     lambda: store.sign_bytes(old, b"message")):
            with pytest.raises(Conflict) as refused:
                sign()
            assert refused.value.code == "signing_key_retired"
        assert db.session.scalar(sa.select(SigningKey.status).where(SigningKey.kid == old.kid)) == "retired"
