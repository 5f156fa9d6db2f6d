"""Objection deadlines in working days (weekends skipped, holidays and 调休 from the calendar file) and the
escalation job: overdue objections reach the city administrators (牵头单位) once per level, however often and
however many nodes run it."""

from __future__ import annotations

from collections import Counter
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Any

import holidays
import pytest
import sqlalchemy as sa

from backend.config import PROJECT_ROOT
from backend.extensions import db
from backend.kernel.actors import Actor
from backend.kernel.working_days import CalendarError, WorkingCalendar, load_calendar
from backend.models import AuditEvent, CertificateType, Department, Notification, ObjectionEscalation
from backend.objections.checks import deadline_policy
from backend.objections.deadlines import escalate_overdue_objections
from tests.conftest import CIVIL_AFFAIRS, FakeClock
from tests.objections.objection_support import Queue, citizen_get, filed
from tests.support import error_of, marriage_of, run_together

CALENDAR_FILE = PROJECT_ROOT / "catalog" / "xinyang" / "holidays.yaml"
LEAD = "11411500005991632F"  # 信阳市人民政府办公室, the default 牵头单位


def china(text: str) -> datetime:
    """An ISO time in China (+08:00) as aware UTC."""
    return datetime.fromisoformat(text + "+08:00").astimezone(UTC)


# -- the calendar ---------------------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def calendar() -> WorkingCalendar:
    return load_calendar(CALENDAR_FILE)


def test_weekends_are_skipped(calendar):
    friday = china("2026-11-27T17:00")
    assert calendar.deadline(friday, 1) == china("2026-12-01T00:00")  # the end of Monday
    assert calendar.deadline(friday, 5) == china("2026-12-05T00:00")  # the end of next Friday
    saturday = china("2026-11-28T10:00")
    assert calendar.deadline(saturday, 1) == china("2026-12-01T00:00")


def test_national_day_is_skipped_and_its_make_up_saturday_counts(calendar):
    eve = china("2026-09-30T15:00")
    assert calendar.deadline(eve, 1) == china("2026-10-09T00:00")  # 1–7 October off: Thursday the 8th
    # 8 (Thu), 9 (Fri), 10 (Sat, 调休上班), 12 (Mon), 13 (Tue)
    assert calendar.deadline(eve, 5) == china("2026-10-14T00:00")
    assert calendar.is_working_day(date(2026, 10, 10)) and not calendar.is_working_day(date(2026, 10, 11))


def test_spring_festival(calendar):
    assert calendar.deadline(china("2026-02-13T12:00"), 1) == china("2026-02-15T00:00")  # Sat 14th is worked
    assert calendar.deadline(china("2026-02-14T12:00"), 1) == china("2026-02-25T00:00")  # 15–23 off


def test_the_calendar_file_agrees_with_an_independent_source_for_2026(calendar):
    official = holidays.China(years=2026)
    weekday_holidays = {day for day in official if day.weekday() < 5}
    assert {d for d in calendar.holidays if d.year == 2026} == weekday_holidays
    assert {d for d in calendar.working_days if d.year == 2026} == \
        {d for d in official.weekend_workdays if d.year == 2026}


def test_a_malformed_calendar_is_refused_with_the_entry_named(tmp_path):
    bad = tmp_path / "holidays.yaml"
    bad.write_text("holidays:\n  - {date: 2026-10-01}\n  - {date: '2026-13-01', name: x}\n")
    with pytest.raises(CalendarError, match=r"holidays\[2\]"):
        load_calendar(bad)
    bad.write_text("holidays:\n  - {date: 2026-13-01, name: x}\n")
    with pytest.raises(CalendarError):
        load_calendar(bad)
    bad.write_text("holidays:\n  - {date: 2026-10-10}\nworking_days:\n  - {date: 2026-10-10}\n")
    with pytest.raises(CalendarError, match="both"):
        load_calendar(bad)


def test_deadlines_are_configured_per_certificate_type(app, catalog):
    with app.app_context():
        types = {t.name: t for t in db.session.scalars(sa.select(CertificateType))}
        property_policy, marriage_policy = deadline_policy(types["不动产权证书"]), deadline_policy(types["结婚证"])
    assert (property_policy.acknowledge_days, property_policy.resolve_days) == (1, 10)
    assert (marriage_policy.acknowledge_days, marriage_policy.resolve_days) == (1, 5)


# -- the job with the injected clock --------------------------------------------------------------------------------

def move_to(clock: FakeClock, moment: datetime) -> None:
    assert moment >= clock.current
    clock.current = moment


def run_job(runner: Any) -> str:
    result = runner.invoke(args=["jobs", "objections"])
    assert result.exit_code == 0, result.output
    return str(result.output)


def escalations(app: Any) -> list[tuple[str, str]]:
    with app.app_context():
        rows = db.session.execute(sa.select(Notification.kind, Department.code).join(
            Department, Department.id == Notification.department_id)
            .where(Notification.kind.like("objection_overdue_%")).order_by(Notification.id)).all()
    return [(kind, code) for kind, code in rows]


def filed_on_friday(app: Any, clock: FakeClock, login: Any, civil: Queue) -> tuple[str, Any]:
    """An objection filed on Friday 27 November 2026 at 17:00 in China; with its filer (logged in then)."""
    move_to(clock, china("2026-11-27T17:00"))
    citizen = login("张伟")
    civil.api.refresh()
    held = marriage_of(citizen, app, civil.api.dept)
    return str(filed(citizen, held.id)["id"]), citizen


def later(clock: FakeClock, civil: Queue, moment: str) -> None:
    """Move the clock on; the department system fetches a new token (they live 10 minutes)."""
    move_to(clock, china(moment))
    civil.api.refresh()


def test_escalation_across_a_weekend_notifies_once_however_often_the_job_runs(app, clock, runner, login, civil_queue):
    oid, citizen = filed_on_friday(app, clock, login, civil_queue)
    body = citizen_get(citizen, oid).get_json()
    assert body["deadlines"]["acknowledge_by"] == "2026-11-30T16:00:00+00:00"  # end of Monday in China

    for moment in ("2026-11-28T12:00", "2026-11-29T23:00", "2026-11-30T23:59"):  # Saturday, Sunday, Monday night
        move_to(clock, china(moment))
        assert run_job(runner).startswith("0 ")
    assert escalations(app) == []

    move_to(clock, china("2026-12-01T00:00"))  # Tuesday: one working day has passed
    assert run_job(runner).startswith("1 ")
    assert run_job(runner).startswith("0 ")  # the second run finds nothing new
    later(clock, civil_queue, "2026-12-01T09:00")
    assert run_job(runner).startswith("0 ")
    assert escalations(app) == [("objection_overdue_acknowledge", LEAD),
                                ("objection_overdue_acknowledge", CIVIL_AFFAIRS)]
    view = civil_queue.get(oid).get_json()
    assert view["deadlines"]["acknowledge_overdue"] is True and view["escalations"] == ["acknowledge"]
    assert view["timeline"][-1]["event"] == "escalated"
    assert civil_queue.list().get_json()["items"][0]["escalated"] is True


def test_an_accepted_objection_is_escalated_only_when_the_resolve_deadline_passes(app, clock, runner, login,
                                                                                  civil_queue):
    oid, _ = filed_on_friday(app, clock, login, civil_queue)
    later(clock, civil_queue, "2026-11-30T10:00")
    civil_queue.done(oid, "accept")
    move_to(clock, china("2026-12-04T23:59"))  # Friday night: the fifth working day is not over
    assert run_job(runner).startswith("0 ")
    move_to(clock, china("2026-12-07T08:00"))  # Monday morning
    assert run_job(runner).startswith("1 ")
    run_job(runner)
    assert escalations(app) == [("objection_overdue_resolve", LEAD), ("objection_overdue_resolve", CIVIL_AFFAIRS)]
    with app.app_context():
        audited = db.session.scalars(sa.select(AuditEvent.details).where(
            AuditEvent.action == "objection.escalated")).all()
    assert [d["level"] for d in audited] == ["resolve"]


def test_both_levels_once_each_when_nothing_happens(app, clock, runner, login, civil_queue):
    filed_on_friday(app, clock, login, civil_queue)
    move_to(clock, china("2026-12-10T09:00"))
    assert run_job(runner).startswith("2 ")
    assert run_job(runner).startswith("0 ")
    assert Counter(kind for kind, _ in escalations(app)) == {"objection_overdue_acknowledge": 2,
                                                             "objection_overdue_resolve": 2}


def test_closed_objections_are_never_escalated(app, clock, runner, login, civil_queue):
    oid, _ = filed_on_friday(app, clock, login, civil_queue)
    civil_queue.done(oid, "reject", {"reason": "信息无误"})
    move_to(clock, china("2026-12-31T09:00"))
    assert run_job(runner).startswith("0 ")


def test_two_nodes_at_once_escalate_once(app, clock, login, civil_queue):
    ids = [filed(person, marriage_of(person, app, civil_queue.api.dept).id)["id"]
           for person in (login("张伟"), login("李强"), login("王芳"))]
    moment = clock.advance(days=14)

    def node(_: int) -> int:
        with app.app_context():
            report = escalate_overdue_objections(db.session, lead_department_code=LEAD,
                                                 actor=Actor.system("node"), now=moment, batch_size=1)
            db.session.commit()
            return report.total

    assert sum(run_together(node, 2)) == 2 * len(ids)
    with app.app_context():
        pairs = db.session.execute(sa.select(ObjectionEscalation.objection_id, ObjectionEscalation.level)).all()
    assert len(pairs) == len(set(pairs)) == 2 * len(ids)
    assert len(escalations(app)) == 2 * 2 * len(ids)


def test_an_unknown_lead_department_fails_the_job_clearly(app, runner):
    app.config["ECERT_OBJECTION_LEAD_DEPARTMENT"] = "91411502MA00000000"
    result = runner.invoke(args=["jobs", "objections"])
    assert result.exit_code == 1 and "lead_department_not_found" in result.output


# -- a holiday added through the calendar file ---------------------------------------------------------------------

class TestALocalHoliday:
    """The calendar file of this app has Monday 30 November 2026 as a day off."""

    @pytest.fixture
    def app_settings(self, tmp_path: Path) -> dict[str, Any]:
        calendar_file = tmp_path / "holidays.yaml"
        calendar_file.write_text(CALENDAR_FILE.read_text(encoding="utf-8").replace(
            "holidays:\n", "holidays:\n  - {date: 2026-11-30, name: 地方假日}\n", 1), encoding="utf-8")
        return {"ECERT_HOLIDAY_CALENDAR": str(calendar_file)}

    def test_a_holiday_from_the_calendar_file_moves_the_deadline(self, app, clock, runner, login, civil_queue):
        oid, citizen = filed_on_friday(app, clock, login, civil_queue)
        assert citizen_get(citizen, oid).get_json()["deadlines"]["acknowledge_by"] == "2026-12-01T16:00:00+00:00"
        move_to(clock, china("2026-12-01T12:00"))  # would be overdue without the holiday
        assert run_job(runner).startswith("0 ")
        move_to(clock, china("2026-12-02T00:00"))
        assert run_job(runner).startswith("1 ")


def test_a_wrong_transition_after_escalation_is_still_a_409(app, clock, runner, login, civil_queue):
    oid, _ = filed_on_friday(app, clock, login, civil_queue)
    later(clock, civil_queue, "2026-12-10T09:00")
    run_job(runner)
    civil_queue.done(oid, "reject", {"reason": "信息无误"})
    error_of(civil_queue.act(oid, "accept"), 409, "objection_invalid_transition")
