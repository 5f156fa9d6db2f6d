"""Production settings that pass every check, for tests that change one setting at a time and expect a refusal."""

from __future__ import annotations

import base64
from pathlib import Path

KEY = base64.urlsafe_b64encode(b"k" * 32).decode()
SAFE_PRODUCTION = {
    "ECERT_ENV": "production",
    "ECERT_DATABASE_URL": "postgresql://ecert@db.internal/ecert",
    "ECERT_REDIS_URL": "redis://cache.internal:6379/0",
    "ECERT_PUBLIC_URL": "https://ecert.xinyang.gov.cn",
    "ECERT_MASTER_KEY": KEY,
    "ECERT_SECRET_KEY": "s" * 40,
    "ECERT_DATA_KEYS": f"1:{KEY}",
    "ECERT_BLIND_INDEX_KEY": KEY,
    "ECERT_TRUSTED_PROXIES": "1",
}


def production(tmp_path: Path, **changes: str | None) -> dict[str, str]:
    """SAFE_PRODUCTION with its instance in `tmp_path` and `changes` applied; a change to None removes the setting."""
    env = {**SAFE_PRODUCTION, "ECERT_INSTANCE_PATH": str(tmp_path), **changes}
    return {k: v for k, v in env.items() if v is not None}
