"""Signing keys: the published JWKS, rotation, encryption at rest, imported external keys, EdDSA."""

from __future__ import annotations

import json
import secrets
from pathlib import Path
from typing import Any

import jwt
import pytest
import yaml
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa
from jwcrypto.jwk import JWK as IndependentJWK
from jwt.algorithms import ECAlgorithm, OKPAlgorithm, RSAAlgorithm
from sqlalchemy import select

from backend.app import create_app
from backend.catalog.loader import get_department
from backend.core.context import app_caches, keystore
from backend.crypto.encryption import DecryptionError, unwrap_secret
from backend.crypto.jwk import private_key_from_der, private_key_to_der, public_jwk
from backend.errors import Conflict
from backend.extensions import db
from backend.keys.keystore import PURPOSE_CERTIFICATE, PURPOSE_PLATFORM, PURPOSE_WALLET
from backend.models import AuditEvent, SigningKey
from tests.conftest import CIVIL_AFFAIRS, DEMO_CATALOG, SAMR, TEST_SECRETS

JWKS_URL = "/.well-known/jwks.json"
PRIVATE_MEMBERS = {"d", "p", "q", "dp", "dq", "qi", "k"}


def demo_department_codes() -> list[str]:
    document = yaml.safe_load((DEMO_CATALOG / "departments.yaml").read_text(encoding="utf-8"))
    return [d["code"] for d in document["departments"]]


def published(client: Any) -> dict[str, dict[str, Any]]:
    """The JWKS as {kid: jwk}."""
    response = client.get(JWKS_URL)
    assert response.status_code == 200
    keys = response.get_json()["keys"]
    by_kid = {key["kid"]: key for key in keys}
    assert len(by_kid) == len(keys), "kids must be unique"
    return by_kid


def key_row(app: Any, kid: str) -> SigningKey:
    with app.app_context():
        key = db.session.scalars(select(SigningKey).where(SigningKey.kid == kid)).one()
        db.session.expunge(key)
        return key


def active_kid(app: Any, purpose: str, department_code: str | None = None) -> str:
    with app.app_context():
        department = get_department(db.session, department_code) if department_code else None
        return keystore().active_key(purpose, department).kid


def sign_with_active_key(app: Any, department_code: str, payload: dict[str, Any]) -> str:
    with app.app_context():
        store = keystore()
        return store.sign_jwt(store.active_key(PURPOSE_CERTIFICATE, get_department(db.session, department_code)),
                              payload)


def verify_with_jwks(client: Any, token: str) -> dict[str, Any]:
    """Verify a JWT as an outside party would: pick its key from the published JWKS by kid."""
    kid = jwt.get_unverified_header(token)["kid"]
    jwk = published(client)[kid]
    return jwt.decode(token, jwt.PyJWK(jwk).key, algorithms=[jwk["alg"]])


def write_jwk(tmp_path: Path, jwk: dict[str, Any] | str, name: str = "key.jwk.json") -> Path:
    path = tmp_path / name
    path.write_text(jwk if isinstance(jwk, str) else json.dumps(jwk))
    return path


# --- the published key set ----------------------------------------------------------------------------------------


def test_jwks_publishes_every_department_key_and_the_platform_keys(app, client, catalog):
    kids = set(published(client))

    departments = demo_department_codes()
    department_kids = {active_kid(app, PURPOSE_CERTIFICATE, code) for code in departments}
    platform_kids = {active_kid(app, PURPOSE_PLATFORM), active_kid(app, PURPOSE_WALLET)}
    assert len(department_kids) == len(departments)
    assert kids == department_kids | platform_kids


def test_every_department_has_exactly_one_active_signing_key(app, catalog):
    with app.app_context():
        for code in demo_department_codes():
            department = get_department(db.session, code)
            active = db.session.scalars(select(SigningKey).where(
                SigningKey.department_id == department.id, SigningKey.status == "active")).all()
            assert len(active) == 1, code
            assert active[0].purpose == PURPOSE_CERTIFICATE


def test_every_published_key_is_a_public_es256_signing_key(client, catalog):
    for kid, jwk in published(client).items():
        assert jwk["use"] == "sig"
        assert jwk["alg"] == "ES256"
        assert (jwk["kty"], jwk["crv"]) == ("EC", "P-256")
        assert not PRIVATE_MEMBERS & set(jwk), kid


def test_kid_is_the_rfc7638_thumbprint_of_the_key(client, catalog):
    for kid, jwk in published(client).items():
        assert kid == IndependentJWK(**jwk).thumbprint()


def test_jwks_is_cacheable_with_an_etag(client, catalog):
    response = client.get(JWKS_URL)

    assert response.headers["ETag"]
    assert "max-age" in response.headers["Cache-Control"]
    assert "public" in response.headers["Cache-Control"]


def test_jwks_answers_304_to_a_matching_if_none_match(client, catalog):
    etag = client.get(JWKS_URL).headers["ETag"]

    response = client.get(JWKS_URL, headers={"If-None-Match": etag})

    assert response.status_code == 304
    assert response.get_data() == b""
    assert response.headers["ETag"] == etag


def test_jwks_answers_200_to_a_stale_if_none_match(client, catalog):
    response = client.get(JWKS_URL, headers={"If-None-Match": '"stale"'})

    assert response.status_code == 200
    assert response.get_json()["keys"]


def test_jwks_etag_changes_when_a_key_is_rotated(client, runner, catalog):
    before = client.get(JWKS_URL).headers["ETag"]

    runner.invoke(args=["keys", "rotate", "--dept", SAMR])

    after = client.get(JWKS_URL)
    assert after.headers["ETag"] != before
    assert client.get(JWKS_URL, headers={"If-None-Match": before}).status_code == 200


# --- rotation -----------------------------------------------------------------------------------------------------


def test_keys_rotate_prints_the_new_active_kid_and_retires_the_old_key(app, client, runner, catalog):
    old_kid = active_kid(app, PURPOSE_CERTIFICATE, SAMR)

    result = runner.invoke(args=["keys", "rotate", "--dept", SAMR])

    assert result.exit_code == 0, result.output
    new_kid = result.stdout.strip()
    assert new_kid != old_kid
    assert active_kid(app, PURPOSE_CERTIFICATE, SAMR) == new_kid
    old = key_row(app, old_kid)
    assert old.status == "retired"
    assert old.retired_at is not None
    assert {old_kid, new_kid} <= set(published(client))


def test_rotation_touches_only_the_named_department(app, runner, catalog):
    other_before = active_kid(app, PURPOSE_CERTIFICATE, CIVIL_AFFAIRS)

    runner.invoke(args=["keys", "rotate", "--dept", SAMR])

    assert active_kid(app, PURPOSE_CERTIFICATE, CIVIL_AFFAIRS) == other_before
    assert key_row(app, other_before).status == "active"


def test_signature_made_before_rotation_still_verifies_with_the_published_jwks(app, client, runner, catalog):
    token = sign_with_active_key(app, SAMR, {"iss": SAMR, "sub": "certificate-1"})

    runner.invoke(args=["keys", "rotate", "--dept", SAMR])

    assert verify_with_jwks(client, token)["sub"] == "certificate-1"


def test_new_signatures_use_the_new_key_after_rotation(app, client, runner, catalog):
    new_kid = runner.invoke(args=["keys", "rotate", "--dept", SAMR]).stdout.strip()

    token = sign_with_active_key(app, SAMR, {"iss": SAMR})

    assert jwt.get_unverified_header(token)["kid"] == new_kid
    assert verify_with_jwks(client, token)["iss"] == SAMR


def test_retired_key_no_longer_signs(app, runner, catalog):
    old_kid = active_kid(app, PURPOSE_CERTIFICATE, SAMR)
    runner.invoke(args=["keys", "rotate", "--dept", SAMR])

    with app.app_context():
        store = keystore()
        old = db.session.scalars(select(SigningKey).where(SigningKey.kid == old_kid)).one()
        with pytest.raises(Conflict) as refused:
            store.sign_jwt(old, {"iss": SAMR})
    assert refused.value.code == "signing_key_retired"


def test_rotation_is_audited(app, runner, catalog):
    new_kid = runner.invoke(args=["keys", "rotate", "--dept", SAMR]).stdout.strip()

    with app.app_context():
        event = db.session.scalars(select(AuditEvent).where(AuditEvent.action == "keys.rotated")).one()
        assert event.object_id == new_kid
        assert event.details["department"] == SAMR


def test_access_token_issued_before_platform_rotation_keeps_working(app, runner, dept_client):
    token = dept_client.token("catalog")
    old_kid = jwt.get_unverified_header(token)["kid"]

    result = runner.invoke(args=["keys", "rotate", "--platform", PURPOSE_PLATFORM])

    assert result.exit_code == 0, result.output
    assert key_row(app, old_kid).status == "retired"
    headers = {"Authorization": f"Bearer {token}"}
    assert dept_client.http.get("/gov/v1/catalog/types", headers=headers).status_code == 200
    assert jwt.get_unverified_header(dept_client.token("catalog"))["kid"] == result.stdout.strip()


@pytest.mark.parametrize("args", [[], ["--dept", SAMR, "--platform", PURPOSE_PLATFORM]], ids=["neither", "both"])
def test_keys_rotate_needs_exactly_one_of_dept_or_platform(app, runner, catalog, args):
    kids_before = {active_kid(app, PURPOSE_CERTIFICATE, SAMR), active_kid(app, PURPOSE_PLATFORM)}

    result = runner.invoke(args=["keys", "rotate", *args])

    assert result.exit_code == 2  # click usage error
    assert "--dept" in result.output and "--platform" in result.output
    assert {active_kid(app, PURPOSE_CERTIFICATE, SAMR), active_kid(app, PURPOSE_PLATFORM)} == kids_before


def test_keys_rotate_for_an_unknown_department_fails(runner, catalog):
    result = runner.invoke(args=["keys", "rotate", "--dept", "91411500MA00000000"])

    assert result.exit_code != 0
    assert "department_not_found" in result.output


# --- private keys at rest -----------------------------------------------------------------------------------------


@pytest.fixture
def samr_key(app, catalog) -> SigningKey:
    """SAMR's active signing key as stored (detached from the session)."""
    return key_row(app, active_kid(app, PURPOSE_CERTIFICATE, SAMR))


def test_stored_private_key_is_not_the_plain_der(app, samr_key):
    blob = samr_key.private_key_enc
    private = private_key_from_der(unwrap_secret(app.config["ECERT_MASTER_KEY"], blob, samr_key.kid))

    der = private_key_to_der(private)
    assert der not in blob
    assert private.private_numbers().private_value.to_bytes(32, "big") not in blob


def test_stored_private_key_unwraps_to_the_published_public_key(app, samr_key):
    der = unwrap_secret(app.config["ECERT_MASTER_KEY"], samr_key.private_key_enc, samr_key.kid)

    private = private_key_from_der(der)

    jwk = public_jwk(private.public_key())
    assert (jwk["x"], jwk["y"]) == (samr_key.public_jwk["x"], samr_key.public_jwk["y"])


def test_stored_private_key_does_not_unwrap_under_another_kid(app, samr_key):
    other_kid = active_kid(app, PURPOSE_PLATFORM)

    with pytest.raises(DecryptionError):
        unwrap_secret(app.config["ECERT_MASTER_KEY"], samr_key.private_key_enc, other_kid)


def test_stored_private_key_does_not_unwrap_with_another_master_key(app, samr_key):
    with pytest.raises(DecryptionError):
        unwrap_secret(secrets.token_bytes(32), samr_key.private_key_enc, samr_key.kid)


def test_tampered_private_key_blob_does_not_unwrap(app, samr_key):
    blob = bytearray(samr_key.private_key_enc)
    blob[-1] ^= 0x01

    with pytest.raises(DecryptionError):
        unwrap_secret(app.config["ECERT_MASTER_KEY"], bytes(blob), samr_key.kid)


# --- externally held keys -----------------------------------------------------------------------------------------


@pytest.fixture
def external_jwk() -> dict[str, Any]:
    """The public JWK of a key held by a department's own signing system."""
    return public_jwk(ec.generate_private_key(ec.SECP256R1()).public_key())


def import_key(runner: Any, path: Path, department: str = SAMR) -> Any:
    return runner.invoke(args=["keys", "import", "--dept", department, "--jwk", str(path)])


def test_keys_import_registers_an_external_public_key(app, client, runner, catalog, tmp_path, external_jwk):
    result = import_key(runner, write_jwk(tmp_path, external_jwk))

    assert result.exit_code == 0, result.output
    kid = result.stdout.strip()
    assert kid == IndependentJWK(**external_jwk).thumbprint()
    key = key_row(app, kid)
    assert key.origin == "external"
    assert key.private_key_enc is None
    assert key.purpose == PURPOSE_CERTIFICATE
    assert key.alg == "ES256"
    assert published(client)[kid]["x"] == external_jwk["x"]


def test_keys_import_accepts_an_ed25519_key(app, runner, catalog, tmp_path):
    jwk = public_jwk(ed25519.Ed25519PrivateKey.generate().public_key())

    result = import_key(runner, write_jwk(tmp_path, jwk))

    assert result.exit_code == 0, result.output
    assert key_row(app, result.stdout.strip()).alg == "EdDSA"


def test_keys_import_refuses_the_same_key_twice(runner, catalog, tmp_path, external_jwk):
    path = write_jwk(tmp_path, external_jwk)
    assert import_key(runner, path).exit_code == 0

    result = import_key(runner, path, department=CIVIL_AFFAIRS)

    assert result.exit_code != 0
    assert "key_already_registered" in result.output


def test_keys_import_refuses_a_department_local_key(app, runner, catalog, tmp_path):
    """A key the platform already holds (here: another department's) cannot be re-registered as external."""
    with app.app_context():
        jwk = keystore().active_key(PURPOSE_CERTIFICATE, get_department(db.session, CIVIL_AFFAIRS)).public_jwk

    result = import_key(runner, write_jwk(tmp_path, {k: jwk[k] for k in ("kty", "crv", "x", "y")}))

    assert result.exit_code != 0
    assert "key_already_registered" in result.output


@pytest.mark.parametrize(("kind", "reason"), [("ec_private", "private members"), ("rsa_public", "only EC P-256"),
                                             ("oct", "private members")])
def test_keys_import_refuses_private_and_unsupported_keys(client, runner, catalog, tmp_path, kind, reason):
    jwk: dict[str, Any] | str
    if kind == "ec_private":
        jwk = ECAlgorithm.to_jwk(ec.generate_private_key(ec.SECP256R1()))
    elif kind == "rsa_public":
        jwk = RSAAlgorithm.to_jwk(rsa.generate_private_key(public_exponent=65537, key_size=2048).public_key())
    else:
        jwk = {"kty": "oct", "k": "c2VjcmV0LXNlY3JldC1zZWNyZXQtc2VjcmV0LXNlY3JldA"}
    keys_before = set(published(client))

    result = import_key(runner, write_jwk(tmp_path, jwk))

    assert result.exit_code != 0
    assert reason in result.output
    assert set(published(client)) == keys_before


def test_external_key_is_not_used_for_signing(app, runner, catalog, tmp_path, external_jwk):
    local_kid = active_kid(app, PURPOSE_CERTIFICATE, SAMR)

    external_kid = import_key(runner, write_jwk(tmp_path, external_jwk)).stdout.strip()

    assert active_kid(app, PURPOSE_CERTIFICATE, SAMR) == local_kid != external_kid


def test_rotation_does_not_retire_an_external_key(app, runner, catalog, tmp_path, external_jwk):
    external_kid = import_key(runner, write_jwk(tmp_path, external_jwk)).stdout.strip()

    runner.invoke(args=["keys", "rotate", "--dept", SAMR])

    assert key_row(app, external_kid).status == "active"


# --- EdDSA --------------------------------------------------------------------------------------------------------


def test_eddsa_key_is_an_ed25519_okp_jwk_that_signs_verifiable_jwts(app, client, clock, catalog):
    with app.app_context():
        store = keystore()
        key = store.create_key(PURPOSE_CERTIFICATE, get_department(db.session, CIVIL_AFFAIRS), "EdDSA", clock())
        jwk = dict(key.public_jwk)
        token = store.sign_jwt(key, {"iss": CIVIL_AFFAIRS})
        db.session.commit()

    assert (jwk["kty"], jwk["crv"], jwk["alg"], jwk["use"]) == ("OKP", "Ed25519", "EdDSA", "sig")
    assert "y" not in jwk and not PRIVATE_MEMBERS & set(jwk)
    assert jwk["kid"] == IndependentJWK(**jwk).thumbprint()
    assert jwt.get_unverified_header(token) == {"alg": "EdDSA", "kid": jwk["kid"], "typ": "JWT"}
    assert jwt.decode(token, jwt.PyJWK(jwk).key, algorithms=["EdDSA"]) == {"iss": CIVIL_AFFAIRS}
    assert verify_with_jwks(client, token) == {"iss": CIVIL_AFFAIRS}


def test_eddsa_signature_does_not_verify_under_another_ed25519_key(app, catalog, clock):
    with app.app_context():
        store = keystore()
        key = store.create_key(PURPOSE_CERTIFICATE, get_department(db.session, CIVIL_AFFAIRS), "EdDSA", clock())
        token = store.sign_jwt(key, {"iss": CIVIL_AFFAIRS})
    stranger = OKPAlgorithm.to_jwk(ed25519.Ed25519PrivateKey.generate().public_key(), as_dict=True)

    with pytest.raises(jwt.InvalidSignatureError):
        jwt.decode(token, jwt.PyJWK(stranger).key, algorithms=["EdDSA"])


def test_keys_rotate_can_switch_a_department_to_eddsa(client, runner, catalog):
    result = runner.invoke(args=["keys", "rotate", "--dept", SAMR, "--alg", "EdDSA"])

    assert result.exit_code == 0, result.output
    jwk = published(client)[result.stdout.strip()]
    assert (jwk["kty"], jwk["crv"], jwk["alg"]) == ("OKP", "Ed25519", "EdDSA")


def test_each_app_keeps_its_own_caches(app, catalog, tmp_path):
    """What an app remembers by kid or content hash (backend.core.caches) is its own: a second app in the same
    process, even on the same database, starts with nothing and never sees the first one's decrypted keys."""
    other = create_app({"ECERT_ENV": "testing", "ECERT_DATABASE_URL": app.config["SQLALCHEMY_DATABASE_URI"],
                        "ECERT_INSTANCE_PATH": str(tmp_path / "other"), "ECERT_PUBLIC_URL": "http://localhost",
                        **TEST_SECRETS, "RATELIMIT_ENABLED": False})
    with app.app_context():
        store = keystore()
        store.sign_bytes(store.active_platform_key(PURPOSE_PLATFORM), b"message")
        mine = app_caches()
        assert store.cache is mine.keys and mine.keys.private_keys
    with other.app_context():
        theirs = app_caches()
        assert keystore().cache is theirs.keys
        db.session.remove()
    assert theirs is not mine
    assert not theirs.keys.private_keys and not theirs.keys.verification_keys
