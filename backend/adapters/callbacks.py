"""Callbacks to a department's business system (回调): which URLs a client may name, how a callback is signed, and
the HTTP POST that delivers it."""

from __future__ import annotations

import base64
import hashlib
import http.client
import json
import secrets
import urllib.error
import urllib.request
from dataclasses import dataclass
from datetime import datetime
from typing import Any
from urllib.parse import SplitResult, urlsplit

from backend.keys.keystore import PURPOSE_PLATFORM, KeyStore

SIGNATURE_HEADER = "X-Ecert-Signature"
CALLBACK_TYP = "ecert-callback+jwt"
SIGNATURE_LIFETIME = 300
MAX_URL_LENGTH = 500
MAX_ANSWER_BYTES = 4096
DEFAULT_CALLBACK_TIMEOUT = 3.0
_DEFAULT_PORTS = {"https": 443, "http": 80}


class CallbackUrlRefused(ValueError):
    """The URL is malformed or outside the allow-list; `reason` is a stable code for the error details."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


@dataclass(frozen=True)
class _Parsed:
    scheme: str
    host: str
    port: int
    path: str


def _parse(url: str, *, allow_http: bool, entry: bool) -> _Parsed:
    if not isinstance(url, str) or not url or len(url) > MAX_URL_LENGTH or not url.isascii() \
            or any(ch.isspace() or not ch.isprintable() for ch in url):
        raise CallbackUrlRefused("malformed_url")
    try:
        parts: SplitResult = urlsplit(url)
        port = parts.port
    except ValueError:
        raise CallbackUrlRefused("malformed_url") from None
    scheme = parts.scheme.lower()
    if scheme not in ("https", "http"):
        raise CallbackUrlRefused("scheme_not_allowed")
    if scheme == "http" and not allow_http:
        raise CallbackUrlRefused("https_required")
    if not parts.hostname or parts.username is not None or parts.password is not None or parts.fragment:
        raise CallbackUrlRefused("malformed_url")
    if entry and parts.query:
        raise CallbackUrlRefused("malformed_url")
    path = parts.path or "/"
    lowered = path.lower()
    if "%2f" in lowered or "%2e" in lowered or "%5c" in lowered or "\\" in path \
            or any(segment in (".", "..") for segment in path.split("/")):
        raise CallbackUrlRefused("path_not_allowed")
    return _Parsed(scheme, parts.hostname.lower(), port or _DEFAULT_PORTS[scheme], path)


def normalise_allowlist_entry(entry: str, *, allow_http: bool) -> str:
    """The entry as stored, or CallbackUrlRefused. Entries are origins with an optional path prefix."""
    parsed = _parse(entry, allow_http=allow_http, entry=True)
    default = _DEFAULT_PORTS[parsed.scheme]
    netloc = parsed.host if parsed.port == default else f"{parsed.host}:{parsed.port}"
    return f"{parsed.scheme}://{netloc}{parsed.path}"


def _within(path: str, prefix: str) -> bool:
    if prefix.endswith("/"):
        return path.startswith(prefix)
    return path == prefix or path.startswith(prefix + "/")


def check_callback_url(url: str, allowlist: list[str], *, allow_http: bool) -> str:
    """The callback URL, if some allow-list entry allows it; else CallbackUrlRefused (reason `not_in_allowlist` or why
    the URL itself is unusable). Malformed entries in the list allow nothing."""
    wanted = _parse(url, allow_http=allow_http, entry=False)
    for entry in allowlist:
        try:
            allowed = _parse(entry, allow_http=allow_http, entry=True)
        except CallbackUrlRefused:
            continue
        if (allowed.scheme, allowed.host, allowed.port) == (wanted.scheme, wanted.host, wanted.port) \
                and _within(wanted.path, allowed.path):
            return url
    raise CallbackUrlRefused("not_in_allowlist")


# -- signing -----------------------------------------------------------------------------------------------------

def _b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).decode().rstrip("=")


@dataclass(frozen=True)
class SignedCallback:
    body: bytes
    headers: dict[str, str]


def callback_body(payload: dict[str, Any]) -> bytes:
    """The exact bytes posted: compact JSON with sorted keys, so every retry sends the same body."""
    return json.dumps(payload, ensure_ascii=False, sort_keys=True, separators=(",", ":")).encode("utf-8")


def sign_callback(keys: KeyStore, payload: dict[str, Any], *, issuer: str, audience: str,
                  now: datetime) -> SignedCallback:
    """The body and headers of one delivery attempt, signed with the active platform key."""
    body = callback_body(payload)
    issued = int(now.timestamp())
    claims = {**payload, "iss": issuer, "aud": audience, "iat": issued, "exp": issued + SIGNATURE_LIFETIME,
              "jti": secrets.token_urlsafe(16), "body_sha256": _b64url(hashlib.sha256(body).digest())}
    token = keys.sign_jwt(keys.active_key(PURPOSE_PLATFORM), claims, headers={"typ": CALLBACK_TYP})
    return SignedCallback(body, {"Content-Type": "application/json; charset=utf-8", SIGNATURE_HEADER: token})


# -- delivery ----------------------------------------------------------------------------------------------------

class _NoRedirects(urllib.request.HTTPRedirectHandler):
    """A redirect is an answer, never followed: the allow-list names where callbacks go, not the receiver."""

    def redirect_request(self, *args: Any, **kwargs: Any) -> None:
        return None


@dataclass(frozen=True)
class DeliveryResult:
    delivered: bool
    status: int | None  # the receiver's HTTP status, if it answered
    reason: str | None = None  # why not delivered, without the URL


class CallbackSender:
    """POSTs a signed callback. 2xx is delivered; redirects, other statuses and network errors are failures."""

    def __init__(self, timeout: float = DEFAULT_CALLBACK_TIMEOUT) -> None:
        self.timeout = timeout
        self._opener = urllib.request.build_opener(_NoRedirects())

    def send(self, url: str, callback: SignedCallback) -> DeliveryResult:
        if not url.startswith(("https://", "http://")):
            return DeliveryResult(False, None, "scheme_not_allowed")
        request = urllib.request.Request(url, data=callback.body, method="POST",
                                         headers={**callback.headers, "User-Agent": "ecert-callback/1"})
        try:
            with self._opener.open(request, timeout=self.timeout) as response:
                response.read(MAX_ANSWER_BYTES)
                status = int(response.status)
        except urllib.error.HTTPError as exc:
            return DeliveryResult(False, exc.code, f"http_{exc.code}")
        except (urllib.error.URLError, http.client.HTTPException, OSError, ValueError) as exc:
            return DeliveryResult(False, None, f"unreachable: {type(getattr(exc, 'reason', exc)).__name__}")
        if 200 <= status < 300:
            return DeliveryResult(True, status)
        return DeliveryResult(False, status, f"http_{status}")
