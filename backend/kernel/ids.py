"""Shared ids: random public ids for rows, and the holder's blind index (持证主体 code type and code)."""

from __future__ import annotations

import secrets
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # only the type: kernel needs no crypto at run time
    from backend.crypto.encryption import FieldCipher


def new_public_id() -> str:
    """32 hex characters from `secrets`: the id a row shows outside (URLs, APIs), never its sequence number."""
    return secrets.token_hex(16)


def holder_index(cipher: FieldCipher, code_type: str, code: str) -> str:
    """The blind index of a holder code: finds a holder's certificates without storing the code in clear."""
    return cipher.blind_index(f"{code_type}:{code}", "holder")
