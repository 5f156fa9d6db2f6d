"""The in-process rate-limit storage of development and tests (production shares its counters through Redis)."""

from __future__ import annotations

import threading
import time
from typing import Any

from limits.storage import MemoryStorage

SCHEME = "swept-memory"


class SweptMemoryStorage(MemoryStorage):
    """`memory://` without its timer thread; selected by the URI `swept-memory://` (registered by subclassing)."""

    STORAGE_SCHEME = [SCHEME]  # noqa: RUF012 (limits' registry reads this class attribute)
    SWEEP_SECONDS = 10.0

    def __init__(self, uri: str | None = None, wrap_exceptions: bool = False, **options: Any) -> None:
        super().__init__(uri, wrap_exceptions=wrap_exceptions, **options)
        self.timer.cancel()  # the one timer MemoryStorage.__init__ started
        self._sweep_lock = threading.Lock()
        self._next_sweep = time.monotonic() + self.SWEEP_SECONDS

    # MemoryStorage calls its private `__schedule_expiry` on every write; this replaces it (name-mangled form).
    def _MemoryStorage__schedule_expiry(self) -> None:
        moment = time.monotonic()
        if moment < self._next_sweep or not self._sweep_lock.acquire(blocking=False):
            return
        try:
            self._next_sweep = moment + self.SWEEP_SECONDS
            self._MemoryStorage__expire_events()  # type: ignore[attr-defined]
        finally:
            self._sweep_lock.release()
