"""Working days (工作日) in China for objection deadlines: weekends skipped, public holidays from a calendar file
added, and the weekend days worked instead (调休上班) counted as working days."""

from __future__ import annotations

import functools
from dataclasses import dataclass, field
from datetime import date, datetime, time, timedelta
from pathlib import Path
from typing import Any

import yaml

from backend.kernel.china_time import CHINA, china_today

MAX_WORKING_DAYS = 366  # a deadline beyond a year is a configuration error, not a loop to run


class CalendarError(ValueError):
    """The calendar file is unreadable or malformed; the message names the entry."""


@dataclass(frozen=True)
class WorkingCalendar:
    """Weekdays are working days unless listed as holidays; weekend days listed in `working_days` are worked."""

    holidays: frozenset[date] = field(default_factory=frozenset)
    working_days: frozenset[date] = field(default_factory=frozenset)

    def is_working_day(self, day: date) -> bool:
        if day in self.working_days:
            return True
        return day.weekday() < 5 and day not in self.holidays

    def add_working_days(self, start: date, count: int) -> date:
        """The `count`-th working day after `start` (`start` itself is not counted)."""
        if not 0 <= count <= MAX_WORKING_DAYS:
            raise ValueError(f"working-day count must be 0..{MAX_WORKING_DAYS}, got {count}")
        day, left = start, count
        while left > 0:
            day += timedelta(days=1)
            if self.is_working_day(day):
                left -= 1
        return day

    def deadline(self, moment: datetime, working_days: int) -> datetime:
        """When a time limit of `working_days` working days, started at `moment`, runs out (aware UTC datetime):
        midnight in China at the end of the last working day."""
        last = self.add_working_days(china_today(moment), working_days)
        return datetime.combine(last + timedelta(days=1), time.min, CHINA).astimezone(moment.tzinfo)


def _dates(entries: Any, key: str, where: Path) -> frozenset[date]:
    if entries is None:
        return frozenset()
    if not isinstance(entries, list):
        raise CalendarError(f"{where}: '{key}' must be a list of {{date, name}} entries")
    days = set()
    for n, entry in enumerate(entries, 1):
        value = entry.get("date") if isinstance(entry, dict) else entry
        if isinstance(value, str):
            try:
                value = date.fromisoformat(value)
            except ValueError as exc:
                raise CalendarError(f"{where}: {key}[{n}] is not a date: {value!r}") from exc
        if not isinstance(value, date) or isinstance(value, datetime):
            raise CalendarError(f"{where}: {key}[{n}] needs a date like 2026-10-01")
        days.add(value)
    return frozenset(days)


def load_calendar(path: Path | str) -> WorkingCalendar:
    """Read a calendar file: `holidays` (days off on weekdays) and `working_days` (weekend days worked)."""
    where = Path(path)
    try:
        document = yaml.safe_load(where.read_text(encoding="utf-8")) or {}
    except (OSError, yaml.YAMLError, ValueError) as exc:  # ValueError: PyYAML's own reading of a bad date
        raise CalendarError(f"cannot read the holiday calendar {where}: {exc}") from exc
    if not isinstance(document, dict) or set(document) - {"holidays", "working_days"}:
        raise CalendarError(f"{where}: expected a mapping with 'holidays' and 'working_days'")
    holidays = _dates(document.get("holidays"), "holidays", where)
    working = _dates(document.get("working_days"), "working_days", where)
    if both := sorted(holidays & working):
        raise CalendarError(f"{where}: {both[0]} is listed both as a holiday and as a working day")
    return WorkingCalendar(holidays, working)


@functools.cache
def cached_calendar(path: str) -> WorkingCalendar:
    """The calendar of a file, read once per process (the file changes with a deploy, not at run time)."""
    return load_calendar(path)
