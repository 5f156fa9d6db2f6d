"""What one app remembers between requests (keys, verified tokens, catalog definitions): made by `init_app`, reached
through backend.core.context, never shared by two apps in one process."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, ClassVar, Generic, TypeVar

from flask import Flask

from backend.keys.keystore import KeyCache
from backend.keys.platform_jws import VerifiedTokens

K = TypeVar("K")
V = TypeVar("V")


class Memo(Generic[K, V]):
    """Values a key names forever (a content hash): never stale, only bounded; emptied at once when full."""

    __slots__ = ("_items", "size")

    def __init__(self, size: int) -> None:
        self.size = size
        self._items: dict[K, V] = {}

    def get(self, key: K) -> V | None:
        return self._items.get(key)

    def put(self, key: K, value: V) -> None:
        if len(self._items) >= self.size:
            self._items.clear()
        self._items[key] = value


@dataclass(frozen=True)
class AppCaches:
    EXTENSION: ClassVar[str] = "ecert.caches"  # its key in app.extensions

    keys: KeyCache = field(default_factory=KeyCache)  # private, verification and show-code public keys by kid
    tokens: VerifiedTokens = field(default_factory=VerifiedTokens)  # access tokens whose signature held
    definitions: Memo[str, dict[str, Any]] = field(default_factory=lambda: Memo(256))  # catalog, by content hash


def init_app(app: Flask) -> None:
    app.extensions[AppCaches.EXTENSION] = AppCaches()
