"""The clock faces read `now` from; tests replace it through the app config (ECERT_CLOCK)."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime

from flask import current_app

Clock = Callable[[], datetime]


def system_clock() -> datetime:
    return datetime.now(UTC)


def now() -> datetime:
    """Current time as timezone-aware UTC, from the app's clock."""
    clock: Clock = current_app.config.get("ECERT_CLOCK") or system_clock
    return clock()
