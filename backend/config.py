"""Settings from ECERT_* environment variables; safe development defaults; production refuses unsafe ones."""

from __future__ import annotations

import base64
import binascii
import json
import os
import secrets
from collections.abc import Mapping
from pathlib import Path
from typing import Any

PROJECT_ROOT = Path(__file__).resolve().parent.parent

ENVIRONMENTS = ("development", "testing", "production")

# Secrets that production must receive from the environment and development may generate.
SECRET_SETTINGS = ("ECERT_MASTER_KEY", "ECERT_SECRET_KEY", "ECERT_DATA_KEYS", "ECERT_BLIND_INDEX_KEY")


class ConfigError(RuntimeError):
    """The configuration is unsafe or incomplete; the message names the setting."""


def _bool(value: str | None, default: bool) -> bool:
    if value is None or value == "":
        return default
    return value.strip().lower() in {"1", "true", "yes", "on"}


def _int(env: Mapping[str, str], name: str, default: int) -> int:
    raw = env.get(name)
    if raw in (None, ""):
        return default
    try:
        return int(raw)
    except ValueError as exc:
        raise ConfigError(f"{name} must be an integer, got {raw!r}") from exc


def decode_key(name: str, value: str, length: int = 32) -> bytes:
    """Decode a base64 (url-safe or standard) secret of exactly `length` bytes."""
    try:
        raw = base64.urlsafe_b64decode(value.strip().replace("+", "-").replace("/", "_") + "==")
    except (binascii.Error, ValueError) as exc:
        raise ConfigError(f"{name} is not valid base64") from exc
    if len(raw) != length:
        raise ConfigError(f"{name} must decode to {length} bytes, got {len(raw)}")
    return raw


def parse_data_keys(value: str) -> dict[int, bytes]:
    """`ECERT_DATA_KEYS` = "1:<base64>,2:<base64>": versioned personal-data keys; the highest encrypts."""
    keys: dict[int, bytes] = {}
    for part in value.split(","):
        version, sep, material = part.strip().partition(":")
        if not sep or not version.isdigit() or not 1 <= int(version) <= 65535:
            raise ConfigError("ECERT_DATA_KEYS must look like '1:<base64>,2:<base64>'")
        keys[int(version)] = decode_key(f"ECERT_DATA_KEYS version {version}", material)
    if not keys:
        raise ConfigError("ECERT_DATA_KEYS is empty")
    return keys


def _new_key() -> str:
    return base64.urlsafe_b64encode(secrets.token_bytes(32)).decode().rstrip("=")


def _dev_secrets(instance_path: Path) -> dict[str, str]:
    """Read (or create, mode 0600) the development secrets file under instance/."""
    path = instance_path / "secrets.json"
    if path.exists():
        stored: dict[str, str] = json.loads(path.read_text())
        return stored
    instance_path.mkdir(parents=True, exist_ok=True)
    generated = {
        "ECERT_MASTER_KEY": _new_key(),
        "ECERT_SECRET_KEY": secrets.token_urlsafe(32),
        "ECERT_DATA_KEYS": f"1:{_new_key()}",
        "ECERT_BLIND_INDEX_KEY": _new_key(),
    }
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as handle:
        json.dump(generated, handle, indent=2)
    return generated


def load_settings(env: Mapping[str, str] | None = None, overrides: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """Build the Flask config mapping. `overrides` (tests) win over the environment."""
    env = dict(os.environ if env is None else env)
    overrides = dict(overrides or {})
    for key, value in overrides.items():
        if key.startswith("ECERT_") and isinstance(value, str):
            env[key] = value

    environment = env.get("ECERT_ENV", "development")
    if environment not in ENVIRONMENTS:
        raise ConfigError(f"ECERT_ENV must be one of {', '.join(ENVIRONMENTS)}, got {environment!r}")
    production = environment == "production"

    instance_path = Path(env.get("ECERT_INSTANCE_PATH") or PROJECT_ROOT / "instance")
    generated: set[str] = set()
    missing = [name for name in SECRET_SETTINGS if not env.get(name)]
    if missing:
        if production:
            raise ConfigError(f"{missing[0]} is required when ECERT_ENV=production (generated secrets are refused)")
        dev = _dev_secrets(instance_path)
        for name in missing:
            env[name] = dev[name]
            generated.add(name)

    database_url = env.get("ECERT_DATABASE_URL") or f"sqlite:///{instance_path / 'ecert.db'}"
    if database_url.startswith("postgres://"):
        database_url = "postgresql+psycopg://" + database_url.removeprefix("postgres://")
    elif database_url.startswith("postgresql://"):
        database_url = "postgresql+psycopg://" + database_url.removeprefix("postgresql://")

    settings: dict[str, Any] = {
        "ECERT_ENV": environment,
        "ECERT_INSTANCE_PATH": str(instance_path),
        "SQLALCHEMY_DATABASE_URI": database_url,
        "ECERT_REDIS_URL": env.get("ECERT_REDIS_URL") or None,
        "SECRET_KEY": env["ECERT_SECRET_KEY"],
        "ECERT_MASTER_KEY": decode_key("ECERT_MASTER_KEY", env["ECERT_MASTER_KEY"]),
        "ECERT_DATA_KEYS": parse_data_keys(env["ECERT_DATA_KEYS"]),
        "ECERT_BLIND_INDEX_KEY": decode_key("ECERT_BLIND_INDEX_KEY", env["ECERT_BLIND_INDEX_KEY"]),
        "ECERT_GENERATED_SECRETS": sorted(generated),
        "ECERT_PUBLIC_URL": (env.get("ECERT_PUBLIC_URL") or "http://localhost:8000").rstrip("/"),
        "ECERT_DEV_LOGIN": _bool(env.get("ECERT_DEV_LOGIN"), default=not production),
        "ECERT_SIGNING_ALG": env.get("ECERT_SIGNING_ALG", "ES256"),
        "ECERT_ACCESS_TOKEN_TTL": _int(env, "ECERT_ACCESS_TOKEN_TTL", 600),
        "ECERT_MAX_ASSERTION_LIFETIME": 300,
        "MAX_CONTENT_LENGTH": _int(env, "ECERT_MAX_BODY_BYTES", 1024 * 1024),
        "ECERT_RATELIMIT_DEFAULT": env.get("ECERT_RATELIMIT_DEFAULT", "600 per minute"),
        "ECERT_RATELIMIT_TOKEN": env.get("ECERT_RATELIMIT_TOKEN", "60 per minute"),
        "ECERT_TRUSTED_PROXIES": _int(env, "ECERT_TRUSTED_PROXIES", 0),
        "ECERT_LOG_LEVEL": env.get("ECERT_LOG_LEVEL", "INFO"),
        "ECERT_CLOCK": None,
        "SQLALCHEMY_ENGINE_OPTIONS": {"pool_pre_ping": True},
        "JSON_AS_ASCII": False,
    }
    redis_url = settings["ECERT_REDIS_URL"]
    settings["RATELIMIT_STORAGE_URI"] = redis_url or "memory://"
    settings["RATELIMIT_HEADERS_ENABLED"] = True
    settings["RATELIMIT_DEFAULT"] = settings["ECERT_RATELIMIT_DEFAULT"]
    settings.update({k: v for k, v in overrides.items() if not (k.startswith("ECERT_") and isinstance(v, str))})
    if production:
        check_production(settings)
    return settings


def check_production(settings: Mapping[str, Any]) -> None:
    """Refuse to start production on settings that are only fit for development."""
    if settings["ECERT_GENERATED_SECRETS"]:
        raise ConfigError(f"{settings['ECERT_GENERATED_SECRETS'][0]} must come from the environment in production")
    if str(settings["SQLALCHEMY_DATABASE_URI"]).startswith("sqlite"):
        raise ConfigError("ECERT_DATABASE_URL must point to PostgreSQL in production, not SQLite")
    if settings["ECERT_DEV_LOGIN"]:
        raise ConfigError("ECERT_DEV_LOGIN must be off in production")
    if not str(settings["ECERT_PUBLIC_URL"]).startswith("https://"):
        raise ConfigError("ECERT_PUBLIC_URL must be an https:// URL in production")
    if not settings["ECERT_REDIS_URL"]:
        raise ConfigError("ECERT_REDIS_URL is required in production (rate limits shared across servers)")
