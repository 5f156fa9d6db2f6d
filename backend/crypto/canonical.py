"""Canonical JSON (sorted keys, no whitespace, UTF-8) for hashing and signing."""

from __future__ import annotations

import json
from typing import Any

# One encoder: json.dumps with these options would build a new one on every call.
_ENCODER = json.JSONEncoder(sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=False)


def canonical_json(value: Any) -> bytes:
    return _ENCODER.encode(value).encode()
