"""Adapters to systems outside the platform (identity providers' key sets, the WeChat mini-app API)."""

from __future__ import annotations

import http.client
import urllib.error
import urllib.request
from collections.abc import Mapping

DEFAULT_TIMEOUT = 5.0


class AdapterUnavailable(Exception):
    """The remote system could not be reached or answered something unusable; the message holds no URL."""


def http_get(url: str, *, timeout: float = DEFAULT_TIMEOUT, max_bytes: int,
             headers: Mapping[str, str] | None = None) -> bytes:
    """GET `url` (http or https only) and return the body; refuse non-200 answers and bodies over `max_bytes`."""
    if not url.startswith(("https://", "http://")):
        raise AdapterUnavailable("only http(s) URLs are fetched")
    request = urllib.request.Request(url, headers={"Accept": "application/json", **(headers or {})})
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            if response.status != 200:
                raise AdapterUnavailable(f"HTTP status {response.status}")
            body: bytes = response.read(max_bytes + 1)
    except urllib.error.HTTPError as exc:
        # HTTPError keeps the full URL in .url/.filename: only its status travels on.
        raise AdapterUnavailable(f"HTTP status {exc.code}") from None
    except (urllib.error.URLError, http.client.HTTPException, OSError, ValueError) as exc:
        reason = getattr(exc, "reason", None) or type(exc).__name__
        raise AdapterUnavailable(f"unreachable: {reason}") from None
    if len(body) > max_bytes:
        raise AdapterUnavailable(f"answer larger than {max_bytes} bytes")
    return body
