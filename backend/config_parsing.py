"""How ECERT_* values are read and checked: flags, numbers, keys, reminder days and the trusted identity providers
(backend.config, the import point for settings, builds the settings from them)."""

from __future__ import annotations

import base64
import binascii
import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any


class ConfigError(RuntimeError):
    """The configuration is unsafe or incomplete; the message names the setting."""


# Login providers: ID-token algorithms we accept (asymmetric only: never `none`, never HS*).
OIDC_ALGORITHMS = ("ES256", "ES384", "ES512", "RS256", "RS384", "RS512", "PS256", "PS384", "PS512", "EdDSA")
DEFAULT_OIDC_ALGORITHMS = ("ES256", "RS256", "EdDSA")
# Our name of a real-name claim -> the claim's name in the IdP's ID token (an entry's "claims" overrides).
DEFAULT_OIDC_CLAIMS = {"name": "name", "id_type": "id_type", "id_number": "id_number", "assurance_level": "acr",
                       "companies": "companies"}
_OIDC_ENTRY_KEYS = {"issuer", "client_id", "jwks_uri", "jwks_file", "algorithms", "claims"}


@dataclass(frozen=True)
class OidcIssuer:
    """One trusted identity provider (an entry of `ECERT_OIDC_PROVIDERS`)."""

    issuer: str
    client_id: str  # the `aud` our ID tokens must carry
    jwks_uri: str | None
    jwks_file: str | None
    algorithms: tuple[str, ...] = DEFAULT_OIDC_ALGORITHMS
    claims: Mapping[str, str] = field(default_factory=lambda: dict(DEFAULT_OIDC_CLAIMS))


def boolean(value: str | None, default: bool) -> bool:
    if value is None or value == "":
        return default
    return value.strip().lower() in {"1", "true", "yes", "on"}


def integer(env: Mapping[str, str], name: str, default: int) -> int:
    raw = env.get(name)
    if raw in (None, ""):
        return default
    try:
        return int(raw)
    except ValueError as exc:
        raise ConfigError(f"{name} must be an integer, got {raw!r}") from exc


def parse_reminder_days(value: str) -> tuple[int, ...]:
    """`ECERT_REMINDER_DAYS` = "90,30,7": days before expiry at which holders are reminded, widest first."""
    days: set[int] = set()
    for part in value.split(","):
        text = part.strip()
        if not text.isdigit() or not 1 <= int(text) <= 3650:
            raise ConfigError(f"ECERT_REMINDER_DAYS must list days from 1 to 3650 like '90,30,7', got {value!r}")
        days.add(int(text))
    return tuple(sorted(days, reverse=True))


def _oidc_entry(entry: Any, where: str, production: bool) -> OidcIssuer:
    if not isinstance(entry, dict):
        raise ConfigError(f"{where} must be a JSON object")
    issuer = entry.get("issuer")
    if not isinstance(issuer, str) or not issuer.startswith(("https://", "http://")) or len(issuer) > 190:
        raise ConfigError(f"{where}: 'issuer' must be an http(s) URL of at most 190 characters")
    where = f"{where} ({issuer})"
    if unknown := sorted(set(entry) - _OIDC_ENTRY_KEYS):
        raise ConfigError(f"{where}: unknown key {unknown[0]!r}")
    if production and not issuer.startswith("https://"):
        raise ConfigError(f"{where}: 'issuer' must be https:// in production")
    client_id = entry.get("client_id")
    if not isinstance(client_id, str) or not 1 <= len(client_id) <= 255:
        raise ConfigError(f"{where}: 'client_id' (the expected aud) must be a non-empty string")
    jwks_uri, jwks_file = entry.get("jwks_uri"), entry.get("jwks_file")
    if (jwks_uri is None) == (jwks_file is None):
        raise ConfigError(f"{where}: give exactly one of 'jwks_uri' and 'jwks_file'")
    if jwks_uri is not None and (not isinstance(jwks_uri, str) or not jwks_uri.startswith(
            "https://" if production else ("https://", "http://"))):
        raise ConfigError(f"{where}: 'jwks_uri' must be an {'https' if production else 'http(s)'}:// URL")
    if jwks_file is not None and (not isinstance(jwks_file, str) or not Path(jwks_file).is_file()):
        raise ConfigError(f"{where}: 'jwks_file' must name an existing file")
    algorithms = entry.get("algorithms", list(DEFAULT_OIDC_ALGORITHMS))
    if not isinstance(algorithms, list) or not algorithms or any(a not in OIDC_ALGORITHMS for a in algorithms):
        raise ConfigError(f"{where}: 'algorithms' must be a non-empty list drawn from {', '.join(OIDC_ALGORITHMS)}")
    claims = entry.get("claims", {})
    if not isinstance(claims, dict) or any(k not in DEFAULT_OIDC_CLAIMS or not isinstance(v, str) or not v
                                           for k, v in claims.items()):
        raise ConfigError(f"{where}: 'claims' maps {', '.join(DEFAULT_OIDC_CLAIMS)} to claim names")
    return OidcIssuer(issuer=issuer, client_id=client_id, jwks_uri=jwks_uri, jwks_file=jwks_file,
                      algorithms=tuple(algorithms), claims={**DEFAULT_OIDC_CLAIMS, **claims})


def parse_oidc_providers(value: str, *, production: bool) -> tuple[OidcIssuer, ...]:
    """`ECERT_OIDC_PROVIDERS` = JSON list of trusted IdPs: {"issuer", "client_id", "jwks_uri" | "jwks_file",
    "algorithms"?, "claims"?}. Errors name the entry (1-based) and the key at fault."""
    try:
        entries = json.loads(value)
    except ValueError as exc:
        raise ConfigError(f"ECERT_OIDC_PROVIDERS is not valid JSON: {exc}") from exc
    if not isinstance(entries, list):
        raise ConfigError("ECERT_OIDC_PROVIDERS must be a JSON list of identity providers")
    issuers = tuple(_oidc_entry(entry, f"ECERT_OIDC_PROVIDERS entry {number}", production)
                    for number, entry in enumerate(entries, 1))
    seen: set[str] = set()
    for number, configured in enumerate(issuers, 1):
        if configured.issuer in seen:
            raise ConfigError(f"ECERT_OIDC_PROVIDERS entry {number}: issuer {configured.issuer} is listed twice")
        seen.add(configured.issuer)
    return issuers


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


def choice(env: Mapping[str, str], name: str, allowed: tuple[str, ...], default: str) -> str:
    value = env.get(name) or default
    if value not in allowed:
        raise ConfigError(f"{name} must be one of {', '.join(allowed)}, got {value!r}")
    return value


def bounded(env: Mapping[str, str], name: str, default: int, low: int, high: int) -> int:
    value = integer(env, name, default)
    if not low <= value <= high:
        raise ConfigError(f"{name} must be between {low} and {high}, got {value}")
    return value
