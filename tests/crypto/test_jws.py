"""Compact JWS read once (backend.crypto.jws): what PyJWT accepts it accepts, what it refuses is refused too."""

from __future__ import annotations

import base64
import json
from typing import Any

import jwt
import pytest
from cryptography.hazmat.primitives.asymmetric import ec, ed25519
from hypothesis import given, settings
from hypothesis import strategies as st

from backend.crypto import jws


def b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).decode().rstrip("=")


def segment(value: Any) -> str:
    return b64(json.dumps(value).encode())


P256 = ec.generate_private_key(ec.SECP256R1())
OTHER_P256 = ec.generate_private_key(ec.SECP256R1())
ED25519 = ed25519.Ed25519PrivateKey.generate()


def es256(payload: dict[str, Any], headers: dict[str, Any] | None = None, key: Any = P256) -> str:
    return jwt.encode(payload, key, algorithm="ES256", headers=headers)


def test_a_token_signed_by_pyjwt_parses_and_verifies():
    token = es256({"sub": "a", "n": 1}, {"typ": "kb+jwt", "kid": "k1"})
    parsed = jws.parse(token)
    assert parsed.header == {"alg": "ES256", "typ": "kb+jwt", "kid": "k1"}
    assert parsed.payload == {"sub": "a", "n": 1}
    parsed.verify(P256.public_key(), "ES256")


def test_eddsa_verifies():
    token = jwt.encode({"x": 1}, ED25519, algorithm="EdDSA")
    jws.parse(token).verify(ED25519.public_key(), "EdDSA")


def refused(token: str) -> str:
    with pytest.raises(jws.JWSError) as raised:
        jws.parse(token).verify(P256.public_key(), "ES256")
    return raised.value.reason


def test_another_key_or_a_changed_payload_is_a_bad_signature():
    token = es256({"sub": "a"})
    assert refused(es256({"sub": "a"}, key=OTHER_P256)) == "bad_signature"
    header, _, signature = token.split(".")
    assert refused(f"{header}.{segment({'sub': 'b'})}.{signature}") == "bad_signature"


def test_the_algorithm_must_be_the_keys_and_one_of_ours():
    token = es256({"sub": "a"})
    with pytest.raises(jws.JWSError, match="bad_signature"):
        jws.parse(token).verify(P256.public_key(), "EdDSA")  # header says ES256
    with pytest.raises(jws.JWSError, match="bad_signature"):
        jws.parse(token).verify(ED25519.public_key(), "ES256")  # a key of another type
    hs = jwt.encode({"sub": "a"}, "secret-secret-secret-secret-secret", algorithm="HS256")
    with pytest.raises(jws.JWSError, match="bad_signature"):
        jws.parse(hs).verify(P256.public_key(), "HS256")
    payload = token.split(".")[1]
    none = f"{segment({'alg': 'none'})}.{payload}."
    assert refused(none) == "bad_signature"


def test_a_key_on_another_curve_is_refused_for_es256():
    p384 = ec.generate_private_key(ec.SECP384R1())
    with pytest.raises(jws.JWSError, match="bad_signature"):
        jws.parse(es256({"sub": "a"})).verify(p384.public_key(), "ES256")


@pytest.mark.parametrize("mangle", [
    lambda h, p, s: f"{h}.{p}",  # two segments
    lambda h, p, s: f"{h}.{p}.{s}.{s}",  # four
    lambda h, p, s: f"{h}=.{p}.{s}",  # padding
    lambda h, p, s: f"{h}.{p}.{s}=",
    lambda h, p, s: f"{h}.{p}+.{s}",  # standard base64 alphabet
    lambda h, p, s: f"{h}.{p}.{s[:-1]}!",
    lambda h, p, s: f"{h}.{p} .{s}",
    lambda h, p, s: f"{h}.{p}.{s}AAA",  # 86 + 3 = 4n + 1 characters: no whole byte
    lambda h, p, s: f"{segment([1, 2])}.{p}.{s}",  # header not an object
    lambda h, p, s: f"{h}.{segment('text')}.{s}",  # payload not an object
    lambda h, p, s: f"{h}.{b64(b'not json')}.{s}",
    lambda h, p, s: f"{h}.{b64(bytes([0xff, 0xfe]))}.{s}",  # not UTF-8
    lambda h, p, s: f"{segment({'alg': 'ES256', 'kid': 7})}.{p}.{s}",  # kid not a string
    lambda h, p, s: f"{segment({'alg': 'ES256', 'kid': None})}.{p}.{s}",
    lambda h, p, s: f"{segment({'alg': 'ES256', 'crit': ['exp'], 'exp': 1})}.{p}.{s}",  # unknown critical extension
    lambda h, p, s: f"{segment({'alg': 'ES256', 'b64': False, 'crit': ['b64']})}..{s}",  # unencoded payload
])
def test_malformed_tokens_are_refused_before_any_signature_check(mangle):
    header, payload, signature = es256({"sub": "a"}).split(".")
    with pytest.raises(jws.JWSError) as raised:
        jws.parse(mangle(header, payload, signature))
    assert raised.value.reason == "malformed"


def test_a_segment_with_stray_bits_is_not_another_text_for_the_same_token():
    header, payload, signature = es256({"sub": "a"}).split(".")
    # 86 characters carry 64 bytes with 4 spare bits: set one, and the bytes are the same but the text is not.
    alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"
    last = alphabet[alphabet.index(signature[-1]) ^ 1]
    assert base64.urlsafe_b64decode(signature[:-1] + last + "==") == base64.urlsafe_b64decode(signature + "==")
    with pytest.raises(jws.JWSError, match="malformed"):
        jws.parse(f"{header}.{payload}.{signature[:-1]}{last}")


@settings(max_examples=200, deadline=None)
@given(st.text(alphabet=st.sampled_from("AZaz09-_.=+/ é~"), max_size=60))
def test_any_text_is_parsed_or_refused_like_pyjwt(text):
    try:
        ours: Any = jws.parse(text)
    except jws.JWSError:
        ours = None
    try:
        theirs: Any = jwt.api_jws.PyJWS()._load(text)
        header_ok = isinstance(json.loads(theirs[0]), dict)
    except (jwt.PyJWTError, ValueError):
        theirs, header_ok = None, False
    if ours is not None:  # whatever we accept, PyJWT reads the same way
        assert theirs is not None and header_ok
        assert theirs[2] == ours.header and json.loads(theirs[0]) == ours.payload and theirs[3] == ours.signature


GOOD = {"iss": "http://localhost", "aud": "api", "sub": "c1", "iat": 100, "exp": 700, "scope": "verify"}


def holds(**changes: Any) -> bool:
    payload = {**GOOD, **changes}
    payload = {k: v for k, v in payload.items() if v is not ...}
    return jws.claims_hold(payload, audience="api", issuer="http://localhost", required=("exp", "iat", "sub", "scope"))


def test_registered_claims_of_our_access_tokens():
    assert holds()
    assert holds(aud=["other", "api"])
    assert not holds(aud="other") and not holds(aud=["other"]) and not holds(aud=...) and not holds(aud=None)
    assert not holds(aud=["api", 7])
    assert not holds(iss="http://evil") and not holds(iss=...)
    for name in ("exp", "iat", "sub", "scope"):
        assert not holds(**{name: ...}), name
    assert not holds(sub=7) and not holds(jti=7) and holds(jti="x")
    assert not holds(iat="100") and not holds(exp=True) and holds(exp=700.5)
    assert not holds(nbf=100)  # never in our tokens
