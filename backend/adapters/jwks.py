"""An identity provider's JSON Web Key Set, read from a file or a URL, cached, refetched when a new `kid` appears."""

from __future__ import annotations

import json
import logging
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from backend.adapters import DEFAULT_TIMEOUT, AdapterUnavailable, http_get

log = logging.getLogger("ecert.adapters.jwks")

MAX_JWKS_BYTES = 64 * 1024
CACHE_TTL = 3600.0  # seconds a fetched set is trusted before it is fetched again
MIN_REFETCH_INTERVAL = 60.0  # at most one fetch per minute, however many unknown kids arrive

JwkDict = dict[str, Any]


def file_loader(path: str | Path, *, max_bytes: int = MAX_JWKS_BYTES) -> Callable[[], bytes]:
    """Read the set from a local file (offline deployments, tests)."""

    def load() -> bytes:
        try:
            with open(path, "rb") as handle:
                body = handle.read(max_bytes + 1)
        except OSError as exc:
            raise AdapterUnavailable(f"cannot read JWKS file: {exc.strerror}") from None
        if len(body) > max_bytes:
            raise AdapterUnavailable(f"JWKS file larger than {max_bytes} bytes")
        return body

    return load


def url_loader(url: str, *, timeout: float = DEFAULT_TIMEOUT, max_bytes: int = MAX_JWKS_BYTES) -> Callable[[], bytes]:
    """Fetch the set over HTTP(S) with a timeout and a size cap."""

    def load() -> bytes:
        return http_get(url, timeout=timeout, max_bytes=max_bytes)

    return load


def parse_jwks(body: bytes) -> list[JwkDict]:
    try:
        document = json.loads(body)
    except (ValueError, UnicodeDecodeError):
        raise AdapterUnavailable("JWKS is not valid JSON") from None
    keys = document.get("keys") if isinstance(document, dict) else None
    if not isinstance(keys, list):
        raise AdapterUnavailable("JWKS has no 'keys' list")
    return [key for key in keys if isinstance(key, dict)]


class JwksCache:
    """The cached key set of one IdP. Thread-safe; `monotonic` is injectable so tests move time by hand."""

    def __init__(self, load: Callable[[], bytes], *, source: str, ttl: float = CACHE_TTL,
                 min_refetch_interval: float = MIN_REFETCH_INTERVAL,
                 monotonic: Callable[[], float] = time.monotonic) -> None:
        self._load = load
        self.source = source  # for logs: the issuer, never a URL with a query
        self._ttl = ttl
        self._min_interval = min_refetch_interval
        self._monotonic = monotonic
        self._lock = threading.Lock()
        self._keys: list[JwkDict] | None = None
        self._fetched_at = 0.0
        self._attempted_at: float | None = None

    @classmethod
    def from_file(cls, path: str | Path, *, source: str, **options: Any) -> JwksCache:
        return cls(file_loader(path), source=source, **options)

    @classmethod
    def from_url(cls, url: str, *, source: str, timeout: float = DEFAULT_TIMEOUT, **options: Any) -> JwksCache:
        return cls(url_loader(url, timeout=timeout), source=source, **options)

    def keys_for(self, kid: str | None) -> list[JwkDict]:
        """The keys that may have signed a token with this `kid` (all keys when the token names none).

        Raises AdapterUnavailable only when no key set was ever obtained; a stale set is used while the IdP is down.
        """
        with self._lock:
            moment = self._monotonic()
            if self._keys is None or moment - self._fetched_at >= self._ttl:
                self._refresh(moment, must_succeed=self._keys is None)
            matches = self._matching(kid)
            if not matches and kid is not None and self._may_refetch(moment):
                self._refresh(moment, must_succeed=False)
                matches = self._matching(kid)
            return matches

    def _matching(self, kid: str | None) -> list[JwkDict]:
        keys = self._keys or []
        return [key for key in keys if kid is None or key.get("kid") == kid]

    def _may_refetch(self, moment: float) -> bool:
        return self._attempted_at is None or moment - self._attempted_at >= self._min_interval

    def _refresh(self, moment: float, *, must_succeed: bool) -> None:
        if not self._may_refetch(moment):
            if must_succeed:
                raise AdapterUnavailable("key set unavailable (retry later)")
            return
        self._attempted_at = moment
        try:
            self._keys = parse_jwks(self._load())
            self._fetched_at = moment
        except AdapterUnavailable as exc:
            log.warning("jwks fetch failed", extra={"fields": {"issuer": self.source, "reason": str(exc)}})
            if must_succeed:
                raise
