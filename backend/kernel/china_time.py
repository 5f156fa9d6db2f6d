"""China time (Asia/Shanghai, UTC+8, no daylight saving): the calendar day and the clock shown to people."""

from __future__ import annotations

from datetime import date, datetime, timedelta, timezone

CHINA = timezone(timedelta(hours=8), "Asia/Shanghai")


def china_today(now: datetime) -> date:
    """The calendar day in China at `now`: validity dates and deadlines are China dates."""
    return now.astimezone(CHINA).date()


def china_clock(moment: datetime, *, seconds: bool = False) -> str:
    """`moment` as a China wall-clock time, `2026-11-26 17:30` (or `17:30:05` with `seconds`)."""
    return moment.astimezone(CHINA).strftime("%Y-%m-%d %H:%M:%S" if seconds else "%Y-%m-%d %H:%M")
