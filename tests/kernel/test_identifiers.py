"""Tests for backend.kernel.identifiers (certificate identifiers, holder codes) and backend.crypto.masking."""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from stdnum.cn import ric, uscc
from stdnum.exceptions import InvalidChecksum
from stdnum.iso7064 import mod_37_36

from backend.crypto.masking import mask_holder_code, mask_name
from backend.errors import ValidationFailed
from backend.kernel.identifiers import (
    HOLDER_CODE_TYPE_LABELS,
    IDENTIFIER_PREFIX,
    CertificateIdentifier,
    HolderCodeType,
    build_identifier,
    identifier_check_character,
    parse_holder_code_type,
    parse_identifier,
    validate_holder_code,
    validate_type_code,
    validate_uscc,
)
from backend.kernel.org_codes import _uscc_problem  # the check behind validate_uscc, compared with stdnum

ALPHABET_36 = "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZ"
_CJK = re.compile(r"[\u4e00-\u9fff]")
FUZZ = settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])


# --------------------------------------------------------------------------------------------
# Helpers
# --------------------------------------------------------------------------------------------


def make_uscc(body17: str) -> str:
    """A valid USCC from its first 17 characters."""
    return body17 + uscc.calc_check_digit(body17)


def make_ric(body17: str) -> str:
    """A valid 18-digit resident ID from its first 17 digits."""
    return body17 + ric.calc_check_digit(body17 + "0")


def other_char(c: str, alphabet: str = ALPHABET_36) -> str:
    """Any character of `alphabet` other than `c`."""
    return next(x for x in alphabet if x != c)


AUTHORITY = make_uscc("11100000MB0123456")  # defines the certificate type
ISSUER = make_uscc("11110105MB0987654")  # issues the certificate
TYPE_CODE = AUTHORITY + "001"
VALID_RIC = make_ric("11010119900307123")


def valid_identifier(serial: str = "2024A000123", version: int = 1) -> str:
    return build_identifier(TYPE_CODE, ISSUER, serial, version)


def raw_identifier(
    type_code: str = TYPE_CODE,
    issuer: str = ISSUER,
    serial: str = "2024A000123",
    version: str = "001",
    check: str | None = None,
) -> str:
    """Assemble an identifier without validation; the check character is computed when possible."""
    if check is None:
        check = mod_37_36.calc_check_digit(type_code + issuer + serial + version)
    return f"{IDENTIFIER_PREFIX}{type_code}.{issuer}.{serial}.{version}.{check}"


def assert_rejected(call: Callable[[], Any], field: str, reason: str) -> ValidationFailed:
    with pytest.raises(ValidationFailed) as info:
        call()
    err = info.value
    assert err.status == 422
    assert err.details == {"fields": [{"field": field, "reason": reason}]}
    assert field in err.message
    assert _CJK.search(err.message), err.message
    return err


# --------------------------------------------------------------------------------------------
# USCC
# --------------------------------------------------------------------------------------------


def test_helpers_produce_valid_uscc() -> None:
    assert uscc.is_valid(AUTHORITY)
    assert uscc.is_valid(ISSUER)


def test_validate_uscc_returns_compact_upper_case_value() -> None:
    messy = f" {ISSUER[:6]}-{ISSUER[6:]} ".lower()
    assert validate_uscc(messy) == ISSUER
    assert validate_uscc(ISSUER, field="issuer.code") == ISSUER


def test_full_width_input_is_folded_to_ascii() -> None:
    full_width = "".join(chr(ord(c) + 0xFEE0) for c in ISSUER)
    assert validate_uscc(full_width) == ISSUER
    assert validate_holder_code("001", full_width) == ISSUER
    assert (
        validate_holder_code("111", "".join(chr(ord(c) + 0xFEE0) for c in VALID_RIC)) == VALID_RIC
    )
    assert validate_holder_code("414", "Ｅ１２３４５６７８") == "E12345678"


def test_uscc_with_wrong_check_character_is_rejected() -> None:
    bad = ISSUER[:-1] + other_char(ISSUER[-1], "0123456789ABCDEFGHJKLMNPQRTUWXY")
    err = assert_rejected(
        lambda: validate_uscc(bad, field="issuer.code"), "issuer.code", "bad_check_character"
    )
    assert "校验位" in err.message


@pytest.mark.parametrize("value", [ISSUER[:-1], ISSUER + "0", "1234"])
def test_uscc_with_wrong_length_is_rejected(value: str) -> None:
    assert_rejected(lambda: validate_uscc(value), "code", "bad_length")


@pytest.mark.parametrize(
    "value",
    [
        "A" + ISSUER[1:],  # first 8 characters must be digits
        ISSUER[:10] + "I" + ISSUER[11:],  # I is not in the USCC alphabet
        ISSUER[:10] + "Ö" + ISSUER[11:],
        "1234567\n" + "0" * 10,  # stdnum itself raises a bare ValueError on this one
    ],
)
def test_uscc_with_bad_characters_is_rejected(value: str) -> None:
    assert_rejected(lambda: validate_uscc(value), "code", "bad_characters")


def test_empty_uscc_is_rejected() -> None:
    assert_rejected(lambda: validate_uscc("  "), "code", "empty")


# --------------------------------------------------------------------------------------------
# Type code
# --------------------------------------------------------------------------------------------


def test_validate_type_code_accepts_uscc_plus_sequence() -> None:
    assert validate_type_code(TYPE_CODE) == TYPE_CODE
    assert validate_type_code(f" {AUTHORITY.lower()}999 ") == AUTHORITY + "999"


@pytest.mark.parametrize("value", [TYPE_CODE[:-1], TYPE_CODE + "1", AUTHORITY])
def test_type_code_with_wrong_length_is_rejected(value: str) -> None:
    assert_rejected(lambda: validate_type_code(value), "type_code", "bad_length")


def test_type_code_with_sequence_000_is_rejected() -> None:
    assert_rejected(lambda: validate_type_code(AUTHORITY + "000"), "type_code", "bad_sequence")


def test_type_code_with_non_digit_sequence_is_rejected() -> None:
    assert_rejected(lambda: validate_type_code(AUTHORITY + "00A"), "type_code", "bad_characters")


def test_type_code_with_invalid_authority_uscc_is_rejected() -> None:
    bad = AUTHORITY[:-1] + other_char(AUTHORITY[-1], "0123456789ABCDEFGHJKLMNPQRTUWXY") + "001"
    assert_rejected(
        lambda: validate_type_code(bad, field="cert.type"), "cert.type", "bad_check_character"
    )


# --------------------------------------------------------------------------------------------
# Building and parsing identifiers
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("serial", "version"),
    [("1", 1), ("2024A000123", 1), ("0000000001", 42), ("Z" * 32, 999), ("ABC123XYZ", 100)],
)
def test_identifier_build_parse_round_trip(serial: str, version: int) -> None:
    value = build_identifier(TYPE_CODE, ISSUER, serial, version)
    assert value.startswith(IDENTIFIER_PREFIX)
    parsed = parse_identifier(value)
    assert parsed == CertificateIdentifier(TYPE_CODE, ISSUER, serial, version)
    assert parsed.value == value
    assert str(parsed) == value
    assert value.split(".")[-2] == f"{version:03d}"
    assert value[-1] == parsed.check_character


def test_identifier_layout_matches_design() -> None:
    value = valid_identifier("SERIAL9", 7)
    type_code, issuer, serial, version, check = value[len(IDENTIFIER_PREFIX) :].split(".")
    assert (type_code, issuer, serial, version) == (TYPE_CODE, ISSUER, "SERIAL9", "007")
    assert check == mod_37_36.calc_check_digit(TYPE_CODE + ISSUER + "SERIAL9007")
    assert mod_37_36.is_valid(TYPE_CODE + ISSUER + "SERIAL9007" + check)


def test_check_character_changes_with_version() -> None:
    checks = {identifier_check_character(TYPE_CODE, ISSUER, "2024A000123", v) for v in range(1, 11)}
    # MOD 37,36 detects every single-character substitution, so consecutive versions differ.
    assert len(checks) > 1
    for v in range(1, 999):
        assert identifier_check_character(TYPE_CODE, ISSUER, "X1", v) != identifier_check_character(
            TYPE_CODE, ISSUER, "X1", v + 1
        )


def test_build_identifier_normalises_type_and_issuer_codes() -> None:
    value = build_identifier(TYPE_CODE.lower(), f"{ISSUER[:9]} {ISSUER[9:]}".lower(), "S1", 3)
    assert value == valid_identifier("S1", 3)


@pytest.mark.parametrize(
    ("serial", "reason"),
    [
        ("abc", "bad_characters"),
        ("AB-1", "bad_characters"),
        ("", "bad_length"),
        ("1" * 33, "bad_length"),
    ],
)
def test_build_identifier_rejects_bad_serial(serial: str, reason: str) -> None:
    assert_rejected(lambda: build_identifier(TYPE_CODE, ISSUER, serial, 1), "serial", reason)


@pytest.mark.parametrize("version", [0, -1, 1000])
def test_build_identifier_rejects_version_out_of_range(version: int) -> None:
    assert_rejected(
        lambda: build_identifier(TYPE_CODE, ISSUER, "S1", version), "version", "bad_range"
    )


def test_build_identifier_rejects_non_integer_version() -> None:
    assert_rejected(
        lambda: build_identifier(TYPE_CODE, ISSUER, "S1", True), "version", "bad_format"
    )
    assert_rejected(
        lambda: build_identifier(TYPE_CODE, ISSUER, "S1", "1"),  # type: ignore[arg-type]
        "version",
        "bad_format",
    )


def test_build_identifier_errors_name_the_argument() -> None:
    assert_rejected(lambda: build_identifier(AUTHORITY, ISSUER, "S1", 1), "type_code", "bad_length")
    assert_rejected(
        lambda: build_identifier(TYPE_CODE, ISSUER[:-1], "S1", 1), "issuer_code", "bad_length"
    )


def test_certificate_identifier_validates_on_construction() -> None:
    assert_rejected(
        lambda: CertificateIdentifier(TYPE_CODE, ISSUER, "abc", 1), "serial", "bad_characters"
    )
    assert_rejected(
        lambda: CertificateIdentifier(TYPE_CODE.lower(), ISSUER, "A", 1),
        "type_code",
        "bad_characters",
    )
    with pytest.raises(AttributeError):
        CertificateIdentifier(TYPE_CODE, ISSUER, "A", 1).serial = "B"  # type: ignore[misc]


def test_identifier_check_character_validates_segments() -> None:
    assert_rejected(
        lambda: identifier_check_character(TYPE_CODE, ISSUER, "a", 1), "serial", "bad_characters"
    )
    assert_rejected(
        lambda: identifier_check_character(TYPE_CODE, ISSUER, "A", 0), "version", "bad_range"
    )


def test_parse_identifier_ignores_surrounding_whitespace() -> None:
    value = valid_identifier()
    assert parse_identifier(f"  {value}\n").value == value


def test_identifier_with_wrong_check_character_is_rejected() -> None:
    value = valid_identifier()
    bad = value[:-1] + other_char(value[-1])
    err = assert_rejected(lambda: parse_identifier(bad), "identifier", "bad_check_character")
    assert err.message == "证照标识 identifier 校验位错误"


def test_identifier_error_names_the_caller_supplied_field() -> None:
    value = valid_identifier()
    bad = value[:-1] + other_char(value[-1])
    err = assert_rejected(
        lambda: parse_identifier(bad, field="items[3].identifier"),
        "items[3].identifier",
        "bad_check_character",
    )
    assert "items[3].identifier" in err.message


@pytest.mark.parametrize("check", ["", "AB", "a", "*", "é"])
def test_identifier_with_malformed_check_character_is_rejected(check: str) -> None:
    assert_rejected(
        lambda: parse_identifier(raw_identifier(check=check)),
        "identifier",
        "bad_check_character_format",
    )


@pytest.mark.parametrize("type_code", [TYPE_CODE[:-1], TYPE_CODE + "1", ""])
def test_identifier_with_wrong_type_code_length_is_rejected(type_code: str) -> None:
    assert_rejected(
        lambda: parse_identifier(raw_identifier(type_code=type_code)),
        "identifier",
        "bad_type_code_length",
    )


def test_identifier_with_lower_case_type_code_is_rejected() -> None:
    assert_rejected(
        lambda: parse_identifier(raw_identifier(type_code=TYPE_CODE.lower(), check="0")),
        "identifier",
        "bad_type_code_characters",
    )


def test_identifier_with_invalid_type_code_authority_is_rejected() -> None:
    bad_authority = AUTHORITY[:-1] + other_char(AUTHORITY[-1], "0123456789ABCDEFGHJKLMNPQRTUWXY")
    assert_rejected(
        lambda: parse_identifier(raw_identifier(type_code=bad_authority + "001")),
        "identifier",
        "bad_type_code_check_character",
    )


def test_identifier_with_type_code_sequence_000_is_rejected() -> None:
    assert_rejected(
        lambda: parse_identifier(raw_identifier(type_code=AUTHORITY + "000")),
        "identifier",
        "bad_type_code_sequence",
    )


@pytest.mark.parametrize("issuer", [ISSUER[:-1], ISSUER + "0"])
def test_identifier_with_wrong_issuer_code_length_is_rejected(issuer: str) -> None:
    assert_rejected(
        lambda: parse_identifier(raw_identifier(issuer=issuer)),
        "identifier",
        "bad_issuer_code_length",
    )


def test_identifier_with_invalid_issuer_uscc_is_rejected() -> None:
    bad = ISSUER[:-1] + other_char(ISSUER[-1], "0123456789ABCDEFGHJKLMNPQRTUWXY")
    assert_rejected(
        lambda: parse_identifier(raw_identifier(issuer=bad)),
        "identifier",
        "bad_issuer_code_check_character",
    )
    assert_rejected(
        lambda: parse_identifier(raw_identifier(issuer=ISSUER.lower(), check="0")),
        "identifier",
        "bad_issuer_code_characters",
    )


@pytest.mark.parametrize("serial", ["abc123", "A-1", "A_1", "A 1", "Ａ1", "序号1", "A\n1"])
def test_identifier_with_bad_serial_characters_is_rejected(serial: str) -> None:
    assert_rejected(
        lambda: parse_identifier(raw_identifier(serial=serial, check="0")),
        "identifier",
        "bad_serial_characters",
    )


@pytest.mark.parametrize("serial", ["", "1" * 33])
def test_identifier_with_bad_serial_length_is_rejected(serial: str) -> None:
    assert_rejected(
        lambda: parse_identifier(raw_identifier(serial=serial)), "identifier", "bad_serial_length"
    )


def test_identifier_with_version_000_is_rejected() -> None:
    assert_rejected(
        lambda: parse_identifier(raw_identifier(version="000")), "identifier", "bad_version_range"
    )


@pytest.mark.parametrize("version", ["1000", "01", "1", "", "0A1", "١٢٣", "+01", " 01"])
def test_identifier_with_malformed_version_is_rejected(version: str) -> None:
    assert_rejected(
        lambda: parse_identifier(raw_identifier(version=version, check="0")),
        "identifier",
        "bad_version_format",
    )


@pytest.mark.parametrize(
    "prefix",
    [
        "1.2.156.3005.1.",
        "1.2.156.3005.",
        "2.1.156.3005.2.",
        "urn:1.2.156.3005.2.",
        "1.2.156.3005.2:",
    ],
)
def test_identifier_with_bad_prefix_is_rejected(prefix: str) -> None:
    value = valid_identifier()
    assert_rejected(
        lambda: parse_identifier(prefix + value[len(IDENTIFIER_PREFIX) :]),
        "identifier",
        "bad_prefix",
    )


def test_identifier_with_wrong_segment_count_is_rejected() -> None:
    value = valid_identifier()
    assert_rejected(lambda: parse_identifier(value + ".0"), "identifier", "bad_segment_count")
    assert_rejected(
        lambda: parse_identifier(value.rsplit(".", 1)[0]), "identifier", "bad_segment_count"
    )
    assert_rejected(lambda: parse_identifier(IDENTIFIER_PREFIX), "identifier", "bad_segment_count")


def test_empty_huge_and_non_string_identifiers_are_rejected() -> None:
    assert_rejected(lambda: parse_identifier(""), "identifier", "empty")
    assert_rejected(lambda: parse_identifier(" \t\n"), "identifier", "empty")
    assert_rejected(
        lambda: parse_identifier(valid_identifier() * 10_000), "identifier", "bad_length"
    )
    assert_rejected(lambda: parse_identifier(None), "identifier", "bad_format")  # type: ignore[arg-type]
    assert_rejected(lambda: parse_identifier(b"1.2"), "identifier", "bad_format")  # type: ignore[arg-type]


def _only_validation_failed(call: Callable[[], object]) -> None:
    failure: ValidationFailed | None = None
    try:
        call()
    except ValidationFailed as err:
        failure = err
    if failure is not None:
        assert failure.status == 422
        assert len(failure.details["fields"]) == 1


@FUZZ
@given(st.text())
def test_parse_identifier_never_raises_anything_but_validation_failed(text: str) -> None:
    _only_validation_failed(lambda: parse_identifier(text))


@FUZZ
@given(st.lists(st.text(alphabet=ALPHABET_36 + "abz.-é\n ", max_size=40), min_size=0, max_size=7))
def test_parse_identifier_survives_prefixed_garbage(segments: list[str]) -> None:
    _only_validation_failed(lambda: parse_identifier(IDENTIFIER_PREFIX + ".".join(segments)))


@FUZZ
@given(st.text(), st.text())
def test_uscc_and_type_code_validators_never_raise_anything_else(a: str, b: str) -> None:
    _only_validation_failed(lambda: validate_uscc(a))
    _only_validation_failed(lambda: validate_type_code(a + b))


@FUZZ
@given(st.text(alphabet="0123456789X", min_size=17, max_size=19))
def test_ric_validation_survives_digit_strings(text: str) -> None:
    _only_validation_failed(lambda: validate_holder_code("111", text))


@FUZZ
@given(st.sampled_from([*(t.value for t in HolderCodeType), "", "000", "1111"]), st.text())
def test_holder_code_validation_never_raises_anything_else(code_type: str, code: str) -> None:
    _only_validation_failed(lambda: validate_holder_code(code_type, code))


@FUZZ
@given(st.text(), st.text())
def test_masking_never_raises(code_type: str, text: str) -> None:
    assert isinstance(mask_holder_code(code_type, text), str)
    assert isinstance(mask_name(text), str)


# --------------------------------------------------------------------------------------------
# Holder codes
# --------------------------------------------------------------------------------------------


def test_holder_code_types_and_labels() -> None:
    assert {t.value for t in HolderCodeType} == {"001", "111", "414", "516", "511", "999"}
    assert set(HOLDER_CODE_TYPE_LABELS) == set(HolderCodeType)
    assert HOLDER_CODE_TYPE_LABELS[HolderCodeType("111")] == "公民身份号码"
    assert HOLDER_CODE_TYPE_LABELS[HolderCodeType.USCC] == "统一社会信用代码"
    assert HolderCodeType("414") is HolderCodeType.PASSPORT
    assert HolderCodeType.PASSPORT.value == "414"
    assert parse_holder_code_type(" 516 ") is HolderCodeType.HK_MACAO_PERMIT


def _ric_with_check(check: str) -> str:
    """A valid resident ID whose check character is `check`."""
    for seq in range(1000):
        candidate = make_ric(f"11010119900307{seq:03d}")
        if candidate[-1] == check:
            return candidate
    raise AssertionError(check)


@pytest.mark.parametrize(
    ("code_type", "code", "expected"),
    [
        ("001", ISSUER, ISSUER),
        ("001", ISSUER.lower(), ISSUER),
        ("111", VALID_RIC, VALID_RIC),
        ("111", _ric_with_check("X").lower(), _ric_with_check("X")),
        ("111", make_ric("44030519951231002"), make_ric("44030519951231002")),
        ("414", "E12345678", "E12345678"),
        ("414", "g12345678", "G12345678"),
        ("414", "EA1234567", "EA1234567"),
        ("414", " EZ1234567 ", "EZ1234567"),
        ("516", "H12345678", "H12345678"),
        ("516", "m1234567890", "M1234567890"),
        ("511", "12345678", "12345678"),
        ("999", "  Foreign ID No. 12/AB-7  ", "Foreign ID No. 12/AB-7"),
        ("999", "军官证字第123号", "军官证字第123号"),
        ("999", "x" * 64, "x" * 64),
    ],
)
def test_valid_holder_codes_are_accepted_and_normalised(
    code_type: str, code: str, expected: str
) -> None:
    assert validate_holder_code(code_type, code) == expected
    assert validate_holder_code(HolderCodeType(code_type), code) == expected


@pytest.mark.parametrize(
    ("code_type", "code", "reason"),
    [
        ("001", ISSUER[:-1], "bad_length"),
        (
            "001",
            ISSUER[:-1] + other_char(ISSUER[-1], "0123456789ABCDEFGHJKLMNPQRTUWXY"),
            "bad_check_character",
        ),
        ("111", VALID_RIC[:-1] + other_char(VALID_RIC[-1], "0123456789X"), "bad_check_character"),
        ("111", "110101900307123", "bad_length"),  # 15-digit first-generation ID
        ("111", VALID_RIC[:-1], "bad_length"),
        ("111", "11010119900307123A", "bad_characters"),
        ("111", "X10101199003071233", "bad_characters"),
        ("111", make_ric("11010119901307123"), "bad_birth_date"),  # month 13
        ("111", make_ric("11010120991231123"), "bad_birth_date"),  # in the future
        ("111", make_ric("99999919900307123"), "bad_region_code"),
        ("414", "E1234567", "bad_length"),
        ("414", "P12345678", "bad_format"),
        ("414", "EI1234567", "bad_format"),
        ("414", "EO1234567", "bad_format"),
        ("414", "G1234567A", "bad_format"),
        ("516", "H1234567", "bad_length"),
        ("516", "H123456789", "bad_length"),
        ("516", "C12345678", "bad_format"),
        ("516", "H1234567A9", "bad_length"),
        ("516", "H123456789A", "bad_format"),
        ("511", "1234567", "bad_length"),
        ("511", "T1234567", "bad_format"),
        ("511", "1234567890", "bad_length"),
        ("999", "x" * 65, "bad_length"),
        ("999", "abc\x00def", "bad_characters"),
        ("999", "abc\ndef", "bad_characters"),
    ],
)
def test_invalid_holder_codes_are_rejected(code_type: str, code: str, reason: str) -> None:
    err = assert_rejected(lambda: validate_holder_code(code_type, code), "holder.code", reason)
    assert code.strip() not in err.message  # never echo personal data


@pytest.mark.parametrize("code_type", [t.value for t in HolderCodeType])
def test_empty_holder_code_is_rejected_for_every_type(code_type: str) -> None:
    assert_rejected(lambda: validate_holder_code(code_type, "   "), "holder.code", "empty")


@pytest.mark.parametrize(
    ("field", "type_field"),
    [
        ("holder.code", "holder.code_type"),
        ("code", "code_type"),
        ("applicant.holder.code", "applicant.holder.code_type"),
        ("holder_code", "holder_code_type"),
    ],
)
@pytest.mark.parametrize("code_type", ["", "1", "000", "112", "00１", "passport", "001 111"])
def test_unknown_holder_code_type_is_reported_on_the_type_field(
    code_type: str, field: str, type_field: str
) -> None:
    assert_rejected(
        lambda: validate_holder_code(code_type, VALID_RIC, field=field),
        type_field,
        "unknown_code_type",
    )


def test_holder_code_type_is_checked_before_the_code() -> None:
    assert_rejected(
        lambda: validate_holder_code("123", ""), "holder.code_type", "unknown_code_type"
    )


def test_holder_code_error_names_the_field_and_type() -> None:
    bad = VALID_RIC[:-1] + other_char(VALID_RIC[-1], "0123456789X")
    err = assert_rejected(
        lambda: validate_holder_code("111", bad), "holder.code", "bad_check_character"
    )
    assert err.message == "公民身份号码 holder.code 校验位错误"


# --------------------------------------------------------------------------------------------
# Masking
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("code_type", "code", "masked"),
    [
        ("111", "411102199001011212", "411*************12"),
        ("111", VALID_RIC, VALID_RIC[:3] + "*" * 13 + VALID_RIC[-2:]),
        ("414", "E12345678", "E12****78"),
        ("516", "H1234567890", "H12******90"),
        ("511", "12345678", "123***78"),
        ("999", "ABCDE", "*****"),
        ("999", "AB", "**"),
        ("999", "", ""),
        ("123", "SECRET-CODE", "SEC******DE"),  # unknown type: still masked
    ],
)
def test_mask_holder_code(code_type: str, code: str, masked: str) -> None:
    assert mask_holder_code(code_type, code) == masked


def test_uscc_is_not_masked() -> None:
    assert mask_holder_code("001", ISSUER) == ISSUER
    assert mask_holder_code(HolderCodeType.USCC, ISSUER) == ISSUER


def test_masked_holder_code_keeps_length_and_hides_the_middle() -> None:
    masked = mask_holder_code("111", VALID_RIC)
    assert len(masked) == len(VALID_RIC)
    assert VALID_RIC[3:-2] not in masked


@pytest.mark.parametrize(
    ("name", "masked"),
    [
        ("张三", "张*"),
        ("欧阳娜娜", "欧***"),
        ("李", "*"),
        (" 王小明 ", "王**"),
        ("阿依古丽·买买提", "阿*******"),
        ("John Smith", "J*** S****"),
        ("Mary Jane Watson", "M*** J*** W*****"),
        ("Li", "L*"),
        ("X", "*"),
        ("", ""),
    ],
)
def test_mask_name(name: str, masked: str) -> None:
    assert mask_name(name) == masked


def stdnum_verdict(code: str) -> str | None:
    try:
        uscc.validate(code)
    except InvalidChecksum:
        return "check_character"
    except ValueError:
        return "characters"
    return None


_VALID_USCC = st.builds(make_uscc, st.from_regex(r"[0-9]{8}[0-9A-HJ-NP-RTUW-Y]{9}", fullmatch=True))
_ANY_CHARACTER = st.sampled_from("0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZ")


@FUZZ
@given(st.text(alphabet="0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZ", min_size=18, max_size=18)
       | _VALID_USCC
       | st.builds(lambda code, n, c: code[:n] + c + code[n + 1:], _VALID_USCC, st.integers(0, 17), _ANY_CHARACTER))
def test_uscc_verdicts_agree_with_stdnum(code: str) -> None:
    """The USCC check takes stdnum's format rules as one regular expression: its verdicts must be stdnum's own."""
    assert _uscc_problem.__wrapped__(code) == stdnum_verdict(code)
