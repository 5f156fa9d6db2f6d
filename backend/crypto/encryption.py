"""AES-GCM encryption of personal data with key versions, a keyed blind index, and key wrapping."""

from __future__ import annotations

import hashlib
import hmac
import os
import unicodedata

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

_NONCE = 12


class DecryptionError(Exception):
    """Ciphertext is corrupt, was tampered with, or its key version is unknown."""


class FieldCipher:
    """Encrypts field values under the newest data key; decrypts under any configured version.

    Blob layout: 2-byte big-endian key version | 12-byte nonce | ciphertext+tag. The caller passes
    `context` (e.g. table/column/row) as associated data so a blob cannot be moved to another row.
    """

    def __init__(self, keys: dict[int, bytes], blind_index_key: bytes) -> None:
        if not keys:
            raise ValueError("at least one data key is required")
        self._keys = {version: AESGCM(material) for version, material in keys.items()}
        self.current_version = max(keys)
        self._index_key = blind_index_key

    def encrypt(self, plaintext: str, context: str) -> bytes:
        nonce = os.urandom(_NONCE)
        sealed = self._keys[self.current_version].encrypt(nonce, plaintext.encode(), context.encode())
        return self.current_version.to_bytes(2, "big") + nonce + sealed

    def decrypt(self, blob: bytes, context: str) -> str:
        if len(blob) < 2 + _NONCE + 16:
            raise DecryptionError("ciphertext too short")
        version = int.from_bytes(blob[:2], "big")
        aead = self._keys.get(version)
        if aead is None:
            raise DecryptionError(f"unknown data key version {version}")
        try:
            return aead.decrypt(blob[2 : 2 + _NONCE], blob[2 + _NONCE :], context.encode()).decode()
        except InvalidTag as exc:
            raise DecryptionError("ciphertext failed authentication") from exc

    def is_stale(self, blob: bytes) -> bool:
        """True when the blob was sealed under an older key: re-encrypt it on next write (lazy rotation)."""
        return int.from_bytes(blob[:2], "big") != self.current_version

    def reencrypt(self, blob: bytes, context: str) -> bytes:
        return blob if not self.is_stale(blob) else self.encrypt(self.decrypt(blob, context), context)

    def blind_index(self, value: str, domain: str) -> str:
        """Keyed HMAC-SHA256 of a normalised value, for exact-match lookups without decryption."""
        normalised = unicodedata.normalize("NFKC", value).strip().upper()
        message = domain.encode() + b"\x00" + normalised.encode()
        return hmac.new(self._index_key, message, hashlib.sha256).hexdigest()

    def keyed_digest(self, data: bytes, domain: str) -> str:
        """Keyed HMAC-SHA256 of exact bytes: compares contents without an offline-guessable plain hash."""
        return hmac.new(self._index_key, domain.encode() + b"\x00" + data, hashlib.sha256).hexdigest()


def wrap_secret(master_key: bytes, secret: bytes, label: str) -> bytes:
    """Encrypt key material with the master key (AES-GCM), bound to `label` (e.g. the kid)."""
    nonce = os.urandom(_NONCE)
    return b"\x01" + nonce + AESGCM(master_key).encrypt(nonce, secret, label.encode())


def unwrap_secret(master_key: bytes, blob: bytes, label: str) -> bytes:
    if not blob or blob[0] != 1:
        raise DecryptionError("unknown wrapped-key format")
    if len(blob) < 1 + _NONCE + 16:
        raise DecryptionError("wrapped key too short")
    try:
        return AESGCM(master_key).decrypt(blob[1 : 1 + _NONCE], blob[1 + _NONCE :], label.encode())
    except InvalidTag as exc:
        raise DecryptionError("wrapped key failed authentication (wrong master key?)") from exc
