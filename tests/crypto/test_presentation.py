"""backend.crypto.presentation against the independent RFC 9901 implementation (sd-jwt): SD-JWTs it issues, with
nested and array disclosures our own issuance does not use, cut down to the wanted claims and verified by it."""

from __future__ import annotations

from typing import Any

import jwt
import pytest
from cryptography.hazmat.primitives.asymmetric import ec
from jwcrypto.jwk import JWK
from sd_jwt.common import SDObj
from sd_jwt.issuer import SDJWTIssuer
from sd_jwt.verifier import SDJWTVerifier

from backend.crypto.jwk import public_jwk
from backend.crypto.presentation import disclosures_for, present

NONCE, AUDIENCE = "grant-0123456789abcdef", "dc_department_client"


@pytest.fixture(scope="module")
def keys() -> tuple[JWK, Any, dict[str, Any]]:
    """(issuer key, holder private key, holder public JWK)."""
    issuer = JWK.generate(kty="EC", crv="P-256")
    holder = ec.generate_private_key(ec.SECP256R1())
    return issuer, holder, public_jwk(holder.public_key())


@pytest.fixture(scope="module")
def issued(keys: Any) -> str:
    issuer, _, holder_jwk = keys
    claims = {
        "iss": "https://issuer.example", "vct": "urn:test",
        SDObj("holder"): {SDObj("name"): "张伟", SDObj("code"): "411502199001010011"},  # the object itself too
        "face": {
            SDObj("company_name"): "信阳毛尖茶业有限公司",
            SDObj("address"): {SDObj("street"): "茶韵路 18 号", SDObj("city"): "信阳"},
            SDObj("partners"): [SDObj("王建国"), SDObj("李红")],
            "public_note": "visible",
        },
    }
    return str(SDJWTIssuer(claims, JWK.from_json(issuer.export()), JWK(**holder_jwk),
                           add_decoy_claims=True).sd_jwt_issuance)


def presented(keys: Any, issued: str, wanted: list[tuple[str, ...]]) -> dict[str, Any]:
    """Present the wanted paths with our code; verify with the reference implementation; the disclosed payload."""
    issuer, holder, _ = keys

    def sign(payload: dict[str, Any], headers: dict[str, Any]) -> str:
        return jwt.encode(payload, holder, algorithm="ES256", headers=headers)

    token = present(issued, wanted, sign=sign, audience=AUDIENCE, nonce=NONCE, iat=1_800_000_000)
    public = JWK.from_json(issuer.export_public())
    return dict(SDJWTVerifier(token, lambda *_: public, AUDIENCE, NONCE).get_verified_payload())


def test_a_claim_inside_a_disclosable_object_brings_the_objects_disclosure_and_nothing_else(keys, issued):
    claims = presented(keys, issued, [("holder", "name")])
    assert claims["holder"] == {"name": "张伟"}
    assert "company_name" not in claims["face"] and "address" not in claims["face"]


def test_a_nested_claim_brings_its_parent_but_not_its_siblings(keys, issued):
    claims = presented(keys, issued, [("face", "address", "city")])
    assert claims["face"]["address"] == {"city": "信阳"}
    assert "holder" not in claims and "company_name" not in claims["face"]


def test_a_whole_object_or_array_brings_everything_inside(keys, issued):
    claims = presented(keys, issued, [("face", "address"), ("face", "partners")])
    assert claims["face"]["address"] == {"street": "茶韵路 18 号", "city": "信阳"}
    assert claims["face"]["partners"] == ["王建国", "李红"]


def test_nothing_wanted_discloses_nothing(keys, issued):
    claims = presented(keys, issued, [])
    assert "holder" not in claims and set(claims["face"]) == {"public_note"}
    assert disclosures_for(issued, []) == []


def test_a_path_the_token_does_not_have_is_not_revealed(keys, issued):
    assert disclosures_for(issued, [("face", "no_such_claim")]) == []
