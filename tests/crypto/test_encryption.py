"""Field encryption of personal data (AES-GCM, versioned keys), the keyed blind index, and key wrapping."""

from __future__ import annotations

import hashlib
import re
import secrets

import pytest
from hypothesis import given
from hypothesis import strategies as st

from backend.crypto.encryption import DecryptionError, FieldCipher, unwrap_secret, wrap_secret

K1, K2 = secrets.token_bytes(32), secrets.token_bytes(32)
INDEX_KEY = secrets.token_bytes(32)
CONTEXT = "certificate.face_data:42"
FACE = '{"姓名": "张三", "住址": "河南省信阳市浉河区民主路１号", "备注": "长期有效 ✓"}'
ID_NUMBER = "41150219900101123X"


@pytest.fixture
def cipher() -> FieldCipher:
    return FieldCipher({1: K1}, INDEX_KEY)


def test_chinese_text_round_trips(cipher):
    assert cipher.decrypt(cipher.encrypt(FACE, CONTEXT), CONTEXT) == FACE


def test_empty_text_round_trips(cipher):
    assert cipher.decrypt(cipher.encrypt("", CONTEXT), CONTEXT) == ""


def test_ciphertext_differs_every_time_and_hides_the_plaintext(cipher):
    blobs = {cipher.encrypt(FACE, CONTEXT) for _ in range(20)}
    assert len(blobs) == 20  # a fresh random nonce per encryption
    assert len({blob[2:14] for blob in blobs}) == 20
    for blob in blobs:
        assert "张三".encode() not in blob


def test_blob_starts_with_the_key_version(cipher):
    assert cipher.encrypt(FACE, CONTEXT)[:2] == (1).to_bytes(2, "big")


def test_blob_decrypts_only_in_its_own_context(cipher):
    blob = cipher.encrypt(ID_NUMBER, "holder.code:1")
    with pytest.raises(DecryptionError):
        cipher.decrypt(blob, "holder.code:2")  # moved to another row
    with pytest.raises(DecryptionError):
        cipher.decrypt(blob, "holder.name:1")  # moved to another column
    assert cipher.decrypt(blob, "holder.code:1") == ID_NUMBER


def test_flipping_any_byte_is_detected(cipher):
    blob = cipher.encrypt(FACE, CONTEXT)
    for position in range(len(blob)):
        tampered = bytearray(blob)
        tampered[position] ^= 0x01
        with pytest.raises(DecryptionError):
            cipher.decrypt(bytes(tampered), CONTEXT)


@pytest.mark.parametrize("keep", [0, 1, 2, 14, 29, -1])
def test_truncated_blob_is_rejected(cipher, keep):
    blob = cipher.encrypt(FACE, CONTEXT)
    with pytest.raises(DecryptionError):
        cipher.decrypt(blob[:keep], CONTEXT)


def test_unknown_key_version_is_rejected(cipher):
    blob = cipher.encrypt(FACE, CONTEXT)
    with pytest.raises(DecryptionError, match="version 7"):
        cipher.decrypt((7).to_bytes(2, "big") + blob[2:], CONTEXT)


def test_a_different_key_cannot_decrypt(cipher):
    blob = cipher.encrypt(FACE, CONTEXT)
    with pytest.raises(DecryptionError):
        FieldCipher({1: K2}, INDEX_KEY).decrypt(blob, CONTEXT)


def test_a_cipher_needs_at_least_one_key():
    with pytest.raises(ValueError):
        FieldCipher({}, INDEX_KEY)


def test_key_rotation_keeps_old_blobs_readable_and_reencrypts_them_lazily():
    old_blob = FieldCipher({1: K1}, INDEX_KEY).encrypt(FACE, CONTEXT)
    rotated = FieldCipher({1: K1, 2: K2}, INDEX_KEY)

    assert rotated.current_version == 2
    assert rotated.decrypt(old_blob, CONTEXT) == FACE
    assert rotated.is_stale(old_blob)

    new_blob = rotated.reencrypt(old_blob, CONTEXT)
    assert new_blob[:2] == (2).to_bytes(2, "big")
    assert rotated.decrypt(new_blob, CONTEXT) == FACE
    assert not rotated.is_stale(new_blob)
    assert rotated.reencrypt(new_blob, CONTEXT) == new_blob  # a fresh blob is left alone

    retired = FieldCipher({2: K2}, INDEX_KEY)
    assert retired.decrypt(new_blob, CONTEXT) == FACE
    with pytest.raises(DecryptionError):
        retired.decrypt(old_blob, CONTEXT)


def test_reencrypting_keeps_the_context_binding():
    old_blob = FieldCipher({1: K1}, INDEX_KEY).encrypt(FACE, CONTEXT)
    rotated = FieldCipher({1: K1, 2: K2}, INDEX_KEY)
    with pytest.raises(DecryptionError):
        rotated.reencrypt(old_blob, "certificate.face_data:43")
    with pytest.raises(DecryptionError):
        rotated.decrypt(rotated.reencrypt(old_blob, CONTEXT), "certificate.face_data:43")


def test_blind_index_is_deterministic(cipher):
    assert cipher.blind_index(ID_NUMBER, "holder_code") == cipher.blind_index(ID_NUMBER, "holder_code")
    assert FieldCipher({2: K2}, INDEX_KEY).blind_index(ID_NUMBER, "holder_code") == cipher.blind_index(
        ID_NUMBER, "holder_code")  # independent of the data keys, so rotation keeps lookups working


@pytest.mark.parametrize(
    ("variant", "canonical"),
    [
        ("４１１５", "4115"),  # full-width digits (NFKC)
        ("41150219900101123x", "41150219900101123X"),  # lower-case check character
        ("  41150219900101123X\t", "41150219900101123X"),  # surrounding whitespace
        ("\u300041150219900101123X\u3000", "41150219900101123X"),  # ideographic spaces
        ("ｎｏ．12", "NO.12"),
    ],
)
def test_blind_index_normalises_what_people_type(cipher, variant, canonical):
    assert cipher.blind_index(variant, "holder_code") == cipher.blind_index(canonical, "holder_code")


def test_blind_index_differs_between_values(cipher):
    assert cipher.blind_index("41150219900101123X", "holder_code") != cipher.blind_index(
        "411502199001011234", "holder_code")


def test_blind_index_differs_between_domains(cipher):
    assert cipher.blind_index(ID_NUMBER, "holder_code") != cipher.blind_index(ID_NUMBER, "certificate_number")


def test_blind_index_differs_with_another_index_key(cipher):
    other = FieldCipher({1: K1}, secrets.token_bytes(32))
    assert other.blind_index(ID_NUMBER, "holder_code") != cipher.blind_index(ID_NUMBER, "holder_code")


def test_blind_index_is_opaque_hex(cipher):
    index = cipher.blind_index(ID_NUMBER, "holder_code")
    assert re.fullmatch(r"[0-9a-f]{64}", index)
    unkeyed = {
        hashlib.sha256(value.encode()).hexdigest()
        for value in (ID_NUMBER, ID_NUMBER.lower(), f"holder_code\x00{ID_NUMBER}", f"holder_code{ID_NUMBER}")
    }
    assert index not in unkeyed
    assert ID_NUMBER.lower() not in index


def test_wrapped_secret_round_trips():
    master, secret = secrets.token_bytes(32), secrets.token_bytes(121)
    assert unwrap_secret(master, wrap_secret(master, secret, "kid-1"), "kid-1") == secret


def test_wrapping_is_randomised():
    master, secret = secrets.token_bytes(32), b"private key der"
    assert wrap_secret(master, secret, "kid-1") != wrap_secret(master, secret, "kid-1")


def test_wrapped_secret_is_bound_to_its_label():
    master = secrets.token_bytes(32)
    blob = wrap_secret(master, b"private key der", "kid-1")
    with pytest.raises(DecryptionError):
        unwrap_secret(master, blob, "kid-2")


def test_wrapped_secret_needs_the_same_master_key():
    blob = wrap_secret(secrets.token_bytes(32), b"private key der", "kid-1")
    with pytest.raises(DecryptionError, match="master key"):
        unwrap_secret(secrets.token_bytes(32), blob, "kid-1")


@pytest.mark.parametrize("mangle", [
    lambda blob: b"",
    lambda blob: b"\x02" + blob[1:],  # unknown format
    lambda blob: blob[:-1],  # truncated tag
    lambda blob: blob[:5],  # truncated nonce
    lambda blob: blob[:20] + bytes([blob[20] ^ 1]) + blob[21:],  # flipped ciphertext bit
])
def test_damaged_wrapped_secret_is_rejected(mangle):
    master = secrets.token_bytes(32)
    blob = wrap_secret(master, b"private key der", "kid-1")
    with pytest.raises(DecryptionError):
        unwrap_secret(master, mangle(blob), "kid-1")


PROPERTY_CIPHER = FieldCipher({1: K1, 3: K2}, INDEX_KEY)


@given(text=st.text(), context=st.text(max_size=64))
def test_any_text_round_trips(text, context):
    blob = PROPERTY_CIPHER.encrypt(text, context)
    assert blob[:2] == (3).to_bytes(2, "big")
    assert PROPERTY_CIPHER.decrypt(blob, context) == text


@given(text=st.text(min_size=1), a=st.text(max_size=16), b=st.text(max_size=16))
def test_any_text_decrypts_only_in_its_own_context(text, a, b):
    blob = PROPERTY_CIPHER.encrypt(text, a)
    if a == b:
        assert PROPERTY_CIPHER.decrypt(blob, b) == text
    else:
        with pytest.raises(DecryptionError):
            PROPERTY_CIPHER.decrypt(blob, b)
