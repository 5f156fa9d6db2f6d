"""The SD-JWT format (RFC 9901) on hostile input: every malformed token, disclosure or payload is SdJwtFormatError."""

from __future__ import annotations

import json
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from backend.crypto.sdjwt import SdJwtFormatError, b64url, digest, make_disclosure, parse, reconstruct


def encoded(value: Any) -> str:
    """A disclosure-shaped text holding any JSON value (or any bytes)."""
    data = value if isinstance(value, bytes) else json.dumps(value, ensure_ascii=False).encode()
    return b64url(data)


def refused(payload: Any, disclosures: list[Any]) -> str:
    with pytest.raises(SdJwtFormatError) as raised:
        reconstruct(payload, disclosures)
    return raised.value.reason


# -- the cases the review named --------------------------------------------------------------------------------------

@pytest.mark.parametrize("digests", ["abc", 7, {"a": 1}, None, True])
def test_sd_that_is_not_an_array_is_a_malformed_payload(digests):
    assert refused({"face": {"_sd": digests}}, []) == "malformed_payload"
    assert refused({"_sd": digests}, []) == "malformed_payload"


@pytest.mark.parametrize("reference", [7, None, [1, 2], {"x": "y"}, 1.5])
def test_array_element_digest_that_is_not_a_string_is_a_malformed_payload(reference):
    assert refused({"nationalities": [{"...": reference}]}, []) == "malformed_payload"


@pytest.mark.parametrize("disclosure", ["é", "WyJzYWx0IiwibmFtZSIsIuW8oCJd€", "\udc80", "披露"])
def test_non_ascii_disclosure_is_malformed(disclosure):
    assert refused({"_sd": []}, [disclosure]) == "malformed_disclosure"
    with pytest.raises(SdJwtFormatError):
        digest(disclosure)


@pytest.mark.parametrize("disclosure", [7, None, b"abc", ["a"]])
def test_disclosure_that_is_not_text_is_malformed(disclosure):
    assert refused({"_sd": []}, [disclosure]) == "malformed_disclosure"


def test_payload_that_is_not_an_object_is_malformed():
    for payload in ([], "x", 3, None):
        assert refused(payload, []) == "malformed_payload"


def test_disclosure_of_impossible_base64_length_is_malformed():
    # 4n + 1 base64url characters hold no whole byte: the decoder would raise binascii.Error.
    five = "AAAAA"
    assert refused({"_sd": [digest(five)]}, [five]) == "malformed_disclosure"


def test_a_digest_referenced_twice_is_refused_even_in_arrays():
    element = encoded(["salt", "中国"])
    twice = {"nationalities": [{"...": digest(element)}, {"...": digest(element)}]}
    assert refused(twice, [element]) == "duplicate_digest"
    decoy = "x" * 43
    assert refused({"_sd": [decoy, decoy]}, []) == "duplicate_digest"


def test_absurdly_nested_payload_and_disclosure_are_malformed_not_a_recursion_error():
    deep: Any = {}
    for _ in range(5000):
        deep = {"a": deep}
    assert refused(deep, []) == "malformed_payload"
    nested = b64url(b"[" * 100_000 + b"]" * 100_000)
    assert refused({"_sd": [digest(nested)]}, [nested]) == "malformed_disclosure"


def test_well_formed_disclosures_still_reconstruct():
    name, element = make_disclosure("name", "张伟"), encoded(["salt", "CN"])
    payload = {"holder": {"_sd": [digest(name), "decoy" * 8]}, "list": [{"...": digest(element)}, 1], "_sd_alg":
               "sha-256"}
    assert reconstruct(payload, [name, element]) == {"holder": {"name": "张伟"}, "list": ["CN", 1]}


# -- properties: anything at all gives claims or SdJwtFormatError -----------------------------------------------------

json_scalars = st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=12)


def json_values(leaves: st.SearchStrategy[Any]) -> st.SearchStrategy[Any]:
    return st.recursive(leaves, lambda inner: st.lists(inner, max_size=4)
                        | st.dictionaries(st.sampled_from(["_sd", "...", "_sd_alg", "a", "b", "name"]) | st.text(
                            max_size=4), inner, max_size=4), max_leaves=12)


@st.composite
def disclosures_and_payloads(draw: st.DrawFn) -> tuple[Any, list[Any]]:
    """Disclosures of every shape, and payloads that reference some of them where RFC 9901 allows and elsewhere."""
    disclosures = draw(st.lists(st.one_of(
        st.builds(make_disclosure, st.text(max_size=6), json_values(json_scalars)),
        st.builds(encoded, json_values(json_scalars)),
        st.builds(encoded, st.binary(max_size=24)),
        st.text(max_size=20),
        st.from_regex(r"[A-Za-z0-9_-]{0,30}", fullmatch=True),
        json_scalars,
    ), max_size=5))
    references = [digest(d) for d in disclosures if isinstance(d, str) and d.isascii()]
    leaves = json_scalars | (st.sampled_from(references) if references else st.nothing())
    reference_shapes = leaves | st.builds(lambda ref: {"...": ref}, leaves) \
        | st.builds(lambda refs: {"_sd": refs}, st.lists(leaves, max_size=3) | leaves)
    payload = draw(st.one_of(
        json_values(reference_shapes),
        st.dictionaries(st.sampled_from(["holder", "face", "_sd", "_sd_alg"]), json_values(reference_shapes),
                        max_size=4),
    ))
    return payload, draw(st.permutations(disclosures))


@settings(max_examples=600, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(disclosures_and_payloads())
def test_reconstruct_answers_claims_or_a_format_error_for_any_input(case):
    payload, disclosures = case
    try:
        claims = reconstruct(payload, disclosures)
    except SdJwtFormatError as error:
        assert error.reason
    else:
        assert isinstance(claims, dict)
        assert "_sd" not in claims and "_sd_alg" not in claims


@settings(max_examples=400, deadline=None)
@given(st.one_of(
    st.text(max_size=80),
    st.from_regex(r"[A-Za-z0-9_.~-]{0,80}", fullmatch=True),
    st.lists(st.text(alphabet="ab.~é", max_size=6), max_size=6).map("~".join),
    json_scalars,
))
def test_parse_answers_a_parsed_token_or_a_format_error_for_any_input(token):
    try:
        parsed = parse(token)
    except SdJwtFormatError as error:
        assert error.reason == "not_sd_jwt"
    else:
        assert parsed.issuer_jwt.count(".") == 2
        assert token == parsed.without_kb + (parsed.kb_jwt or "")
