"""Expiry (第八条 到期提醒): `jobs expire` and `jobs remind`, safe to repeat and to run on two nodes at once."""

from __future__ import annotations

import base64
import threading
import zlib
from collections import Counter
from collections.abc import Callable
from datetime import UTC, date, datetime, timedelta
from typing import Any

import jwt
import pytest
import sqlalchemy as sa

from backend.catalog.loader import get_department
from backend.config import ConfigError, load_settings
from backend.core.context import keystore
from backend.crypto.sdjwt import b64url_decode
from backend.extensions import db
from backend.issuance import expiry
from backend.issuance.expiry import expire_certificates, nearest_horizon, send_expiry_reminders
from backend.kernel.actors import Actor
from backend.kernel.china_time import china_today
from backend.keys.status_lists import decode_value, status_list_token
from backend.models import AuditEvent, CertificateEvent, ExpiryReminder, Notification, StatusList
from tests.conftest import DISABILITY_FEDERATION, SAMR, START, FakeClock
from tests.factories import BUSINESS_LICENCE, DISABILITY, FOOD_LICENCE
from tests.support import (
    FORGED_CURSORS,
    Department,
    assert_documented,
    count,
    error_of,
    field_errors,
    holder_notifications,
    list_revision,
    run_together,
    stored,
)

NOTIFICATIONS = "/gov/v1/notifications"
TODAY = china_today(START)  # 2026-11-26 in China (START is 17:00 there)


def expiring(api: Department, valid_until: date, type_code: str = FOOD_LICENCE) -> str:
    """A certificate whose last valid day is `valid_until`; returns its identifier."""
    return api.issued(type_code, valid_until=valid_until.isoformat())


def days_from_today(days: int) -> date:
    return TODAY + timedelta(days=days)


def run(runner: Any, job: str) -> int:
    """Run `flask jobs <job>`; returns the count it printed."""
    result = runner.invoke(args=["jobs", job])
    assert result.exit_code == 0, result.output
    return int(result.output.split()[0])


def move_to_china_day(clock: FakeClock, day: date, hour: int = 18) -> None:
    """Set the clock to `hour`:00 China time on `day` (time only moves forward)."""
    target = datetime(day.year, day.month, day.day, hour, tzinfo=UTC) - timedelta(hours=8)
    assert target >= clock.current
    clock.current = target


def reminders(app: Any, identifier: str) -> list[int]:
    certificate = stored(app, identifier)
    with app.app_context():
        return list(db.session.scalars(sa.select(ExpiryReminder.horizon_days)
                                       .where(ExpiryReminder.certificate_id == certificate.id)
                                       .order_by(ExpiryReminder.id)))


def notified_kinds(app: Any, identifier: str) -> list[str]:
    return [kind for kind, _ in holder_notifications(app, identifier)]


def holder_note(app: Any, identifier: str, kind: str) -> Notification:
    certificate = stored(app, identifier)
    with app.app_context():
        notes = list(db.session.scalars(sa.select(Notification).where(
            Notification.holder_index == certificate.holder_index, Notification.kind == kind,
            Notification.certificate_id == certificate.id)))
        assert len(notes) == 1
        db.session.expunge(notes[0])
        return notes[0]


def digests(app: Any, department: str | None = None) -> list[dict[str, Any]]:
    with app.app_context():
        stmt = sa.select(Notification).where(Notification.kind == "department_expiry_digest")
        if department is not None:
            stmt = stmt.where(Notification.department_id == get_department(db.session, department).id)
        return [dict(n.data) for n in db.session.scalars(stmt.order_by(Notification.id))]


def listed(app: Any, department: str | None = None) -> list[str]:
    return [item["identifier"] for digest in digests(app, department) for item in digest["certificates"]]


def status_bit(app: Any, clock: FakeClock, identifier: str) -> int:
    """The certificate's value in its freshly signed Token Status List."""
    certificate = stored(app, identifier)
    with app.app_context():
        status_list = db.session.get_one(StatusList, certificate.status_list_id)
        token = status_list_token(db.session, keystore(), status_list, public_url="http://localhost", now=clock())
        db.session.commit()
    packed = zlib.decompress(b64url_decode(jwt.decode(token, options={"verify_signature": False})
                                           ["status_list"]["lst"]))
    return decode_value(packed, certificate.status_index)


# -- expiry ----------------------------------------------------------------------------------------------

def test_a_certificate_past_valid_until_becomes_expired(app, runner, clock, samr):
    identifier = expiring(samr, days_from_today(4))
    revision = list_revision(app, identifier)
    move_to_china_day(clock, days_from_today(5))

    assert run(runner, "expire") == 1

    assert stored(app, identifier).status == "expired"
    assert samr.refresh().get(identifier).get_json()["status"] == "expired"
    assert list_revision(app, identifier) > revision
    assert status_bit(app, clock, identifier) == 1
    note = holder_note(app, identifier, "certificate_expired")
    assert note.data["identifier"] == identifier
    assert note.data["valid_until"] == days_from_today(4).isoformat()
    with app.app_context():
        event = db.session.scalars(sa.select(CertificateEvent).where(
            CertificateEvent.certificate_id == stored(app, identifier).id).order_by(CertificateEvent.id.desc())).first()
        assert event is not None
        assert (event.event, event.from_status, event.to_status) == ("expired", "valid", "expired")
        audit = db.session.scalars(sa.select(AuditEvent).where(AuditEvent.action == "certificate.expired")).one()
        assert audit.details["count"] == 1
        assert audit.actor_type == "system"


def test_a_certificate_is_valid_through_its_last_day_in_china_time(app, runner, clock, samr):
    identifier = expiring(samr, TODAY)
    move_to_china_day(clock, TODAY, hour=23)  # 15:00 UTC, still 26 November in China

    assert run(runner, "expire") == 0
    clock.advance(hours=1)  # midnight in China, still 26 November in UTC
    assert clock().date() == TODAY

    assert run(runner, "expire") == 1
    assert stored(app, identifier).status == "expired"


def test_expiring_twice_changes_nothing_the_second_time(app, runner, clock, samr):
    identifier = expiring(samr, days_from_today(1))
    move_to_china_day(clock, days_from_today(3))
    assert run(runner, "expire") == 1
    revision = list_revision(app, identifier)
    rows = {model: count(app, model) for model in (CertificateEvent, Notification, AuditEvent)}

    assert run(runner, "expire") == 0

    assert list_revision(app, identifier) == revision
    assert {model: count(app, model) for model in rows} == rows
    assert stored(app, identifier).status == "expired"


def test_a_suspended_certificate_expires_too_but_revoked_and_superseded_ones_keep_their_status(
        app, runner, clock, samr):
    suspended = expiring(samr, days_from_today(2))
    samr.act(suspended, "suspend", {"reason": "核查"})
    revoked = expiring(samr, days_from_today(2))
    samr.act(revoked, "revoke", {"reason": "注销"})
    superseded = expiring(samr, days_from_today(2))
    successor = samr.act(superseded, "reissue", {"valid_until": days_from_today(400).isoformat()}).get_json()
    long_term = samr.issued(BUSINESS_LICENCE)
    move_to_china_day(clock, days_from_today(10))

    assert run(runner, "expire") == 1

    assert stored(app, suspended).status == "expired"
    assert status_bit(app, clock, suspended) == 1
    assert [stored(app, i).status for i in (revoked, superseded, successor["identifier"], long_term)] == [
        "revoked", "superseded", "valid", "valid"]


def test_an_expired_certificate_can_no_longer_be_suspended_or_resumed(app, runner, clock, samr):
    identifier = expiring(samr, days_from_today(1))
    move_to_china_day(clock, days_from_today(2))
    run(runner, "expire")
    samr.refresh()

    error_of(samr.act(identifier, "suspend", {"reason": "核查"}), 409, "invalid_status_transition")
    error_of(samr.act(identifier, "resume"), 409, "invalid_status_transition")


def test_the_sweep_handles_more_certificates_than_one_batch(app, clock, samr):
    identifiers = [expiring(samr, days_from_today(1)) for _ in range(7)]
    move_to_china_day(clock, days_from_today(2))

    with app.app_context():
        expired = expire_certificates(db.session, actor=Actor.system("test"), now=clock(), batch_size=3)
        db.session.commit()

    assert expired == 7
    assert {stored(app, i).status for i in identifiers} == {"expired"}


# -- reminders -------------------------------------------------------------------------------------------

def test_reminders_come_once_at_90_30_and_7_days_as_time_passes(app, runner, clock, samr):
    valid_until = days_from_today(120)
    identifier = expiring(samr, valid_until)
    sent = []
    for days_left in (120, 100, 90, 60, 30, 29, 8, 7, 3, 0):
        move_to_china_day(clock, valid_until - timedelta(days=days_left))
        sent.append((days_left, run(runner, "remind"), run(runner, "remind")))

    assert sent == [(120, 0, 0), (100, 0, 0), (90, 1, 0), (60, 0, 0), (30, 1, 0), (29, 0, 0), (8, 0, 0), (7, 1, 0),
                    (3, 0, 0), (0, 0, 0)]
    assert reminders(app, identifier) == [90, 30, 7]
    assert notified_kinds(app, identifier).count("expiry_reminder") == 3


def test_a_certificate_first_seen_within_7_days_gets_only_the_7_day_reminder(app, runner, samr):
    identifier = expiring(samr, days_from_today(5))

    assert run(runner, "remind") == 1
    assert run(runner, "remind") == 0

    assert reminders(app, identifier) == [7]
    note = holder_note(app, identifier, "expiry_reminder")
    assert (note.data["days"], note.data["valid_until"], note.data["horizon_days"]) == (
        5, days_from_today(5).isoformat(), 7)
    assert days_from_today(5).isoformat() in note.body
    assert "5 天后" in note.body


def test_a_wider_horizon_is_not_sent_after_a_nearer_one(app, clock, samr):
    identifier = expiring(samr, days_from_today(20))
    with app.app_context():
        send_expiry_reminders(db.session, actor=Actor.system("test"), now=clock(), horizons=(30,))
        sent = send_expiry_reminders(db.session, actor=Actor.system("test"), now=clock(), horizons=(90, 30))
        db.session.commit()

    assert sent == 0
    assert reminders(app, identifier) == [30]


@pytest.mark.parametrize("change", ["suspend", "revoke", "long-term", "already-expired"])
def test_only_valid_certificates_with_an_end_date_ahead_are_reminded(app, runner, clock, samr, change):
    if change == "long-term":
        identifier = samr.issued(BUSINESS_LICENCE)
    elif change == "already-expired":
        identifier = expiring(samr, days_from_today(-1))
    else:
        identifier = expiring(samr, days_from_today(20))
        samr.act(identifier, change, {"reason": "注销" if change == "revoke" else "核查"})

    assert run(runner, "remind") == 0
    assert reminders(app, identifier) == []


def test_a_resumed_certificate_is_reminded_at_the_next_run(app, runner, samr):
    identifier = expiring(samr, days_from_today(20))
    samr.act(identifier, "suspend", {"reason": "核查"})
    assert run(runner, "remind") == 0

    samr.act(identifier, "resume")

    assert run(runner, "remind") == 1
    assert reminders(app, identifier) == [30]


@pytest.mark.parametrize("app_settings", [{"ECERT_REMINDER_DAYS": "60,14"}])
def test_reminder_horizons_come_from_ecert_reminder_days(app, runner, clock, samr, app_settings):
    identifier = expiring(samr, days_from_today(70))
    assert run(runner, "remind") == 0
    move_to_china_day(clock, days_from_today(10))  # 60 days left
    assert run(runner, "remind") == 1
    move_to_china_day(clock, days_from_today(56))  # 14 days left
    assert run(runner, "remind") == 1

    assert reminders(app, identifier) == [60, 14]


@pytest.mark.parametrize("value", ["90,thirty", "0,7", "", "90;30"])
def test_ecert_reminder_days_must_list_whole_days(value):
    env = {"ECERT_ENV": "testing", "ECERT_REMINDER_DAYS": value, "ECERT_MASTER_KEY": "A" * 43,
           "ECERT_SECRET_KEY": "s", "ECERT_DATA_KEYS": "1:" + "A" * 43, "ECERT_BLIND_INDEX_KEY": "A" * 43}
    if value == "":
        assert load_settings(env)["ECERT_REMINDER_DAYS"] == (90, 30, 7)
        return
    with pytest.raises(ConfigError, match="ECERT_REMINDER_DAYS"):
        load_settings(env)


@pytest.mark.parametrize(("days_left", "horizon"), [(91, None), (90, 90), (31, 90), (30, 30), (8, 30), (7, 7), (0, 7)])
def test_the_nearest_horizon_is_the_smallest_one_reached(days_left, horizon):
    assert nearest_horizon(days_left, (90, 30, 7)) == horizon


def test_each_issuing_department_gets_a_digest_of_its_certificates_expiring_soon(app, runner, samr,
                                                                                 disability_federation):
    food = [expiring(samr, days_from_today(d)) for d in (10, 40)]
    expiring(samr, days_from_today(200))  # not yet
    disability = expiring(disability_federation, days_from_today(60), DISABILITY)

    assert run(runner, "remind") == 3

    assert sorted(listed(app, SAMR)) == sorted(food)
    assert listed(app, DISABILITY_FEDERATION) == [disability]
    (digest,) = digests(app, SAMR)
    assert digest["count"] == 2
    assert [(item["identifier"], item["days_left"], item["horizon_days"]) for item in digest["certificates"]] == [
        (food[0], 10, 30), (food[1], 40, 90)]
    assert run(runner, "remind") == 0
    assert len(digests(app)) == 2  # no new reminders, no new digest


def test_reminders_write_one_audit_event_per_run(app, runner, samr):
    for days in (10, 20, 50):
        expiring(samr, days_from_today(days))

    run(runner, "remind")
    run(runner, "remind")

    with app.app_context():
        events = list(db.session.scalars(sa.select(AuditEvent)
                                         .where(AuditEvent.action == "certificate.expiry_reminded")))
    assert [e.details["count"] for e in events] == [3]


# -- two nodes at once -----------------------------------------------------------------------------------

def run_concurrently(app: Any, job: Callable[[], int], monkeypatch: pytest.MonkeyPatch, *, read_together: bool,
                     nodes: int = 2) -> list[int]:
    """Run `job` on `nodes` threads at once, each with its own app context (its own session and connection).

    read_together: every node reads its first batch of candidates before any node writes, the worst
    interleaving (on SQLite both read the same rows; on PostgreSQL SKIP LOCKED hands them different ones).
    """
    first_read = threading.Barrier(nodes)
    if read_together:
        read_batch = expiry._locked_batch
        seen = threading.local()

        def read_then_wait(*args: Any, **kwargs: Any) -> Any:
            batch = read_batch(*args, **kwargs)
            if not getattr(seen, "read", False):
                seen.read = True
                first_read.wait(timeout=30)
            return batch

        monkeypatch.setattr(expiry, "_locked_batch", read_then_wait)

    def node(_: int) -> int:
        with app.app_context():
            done = job()
            db.session.commit()
            return done

    return run_together(node, nodes)


@pytest.mark.parametrize("read_together", [False, True], ids=["free", "stale-reads"])
def test_two_nodes_reminding_at_once_send_one_reminder_per_certificate_and_horizon(
        app, clock, monkeypatch, samr, disability_federation, read_together):
    with app.app_context():
        postgres = db.engine.dialect.name == "postgresql"
    if read_together and postgres:
        pytest.skip("PostgreSQL runs one reminder run at a time (advisory lock): two nodes cannot read together")
    identifiers = [expiring(samr, days_from_today(d)) for d in range(3, 80, 4)]
    identifiers += [expiring(disability_federation, days_from_today(d), DISABILITY) for d in (5, 25, 85)]
    moment = clock()

    results = run_concurrently(app, lambda: send_expiry_reminders(
        db.session, actor=Actor.system("node"), now=moment, batch_size=4), monkeypatch, read_together=read_together)

    assert sum(results) == len(identifiers)
    with app.app_context():
        pairs = db.session.execute(sa.select(ExpiryReminder.certificate_id, ExpiryReminder.horizon_days)).all()
        kinds = Counter(db.session.scalars(sa.select(Notification.kind)))
    assert len(pairs) == len(set(pairs)) == len(identifiers)
    assert kinds["expiry_reminder"] == len(identifiers)
    assert Counter(listed(app)) == Counter(identifiers)  # every certificate in exactly one digest
    if postgres:  # and, with the run lock, one whole digest per department
        assert kinds["department_expiry_digest"] == 2


@pytest.mark.parametrize("read_together", [False, True], ids=["free", "stale-reads"])
def test_two_nodes_expiring_at_once_expire_each_certificate_once(app, clock, monkeypatch, samr, read_together):
    identifiers = [expiring(samr, days_from_today(1)) for _ in range(12)]
    move_to_china_day(clock, days_from_today(2))
    moment = clock()

    results = run_concurrently(app, lambda: expire_certificates(
        db.session, actor=Actor.system("node"), now=moment, batch_size=3), monkeypatch, read_together=read_together)

    assert sum(results) == len(identifiers)
    assert {stored(app, i).status for i in identifiers} == {"expired"}
    with app.app_context():
        expired_events = db.session.scalar(sa.select(sa.func.count()).select_from(CertificateEvent)
                                           .where(CertificateEvent.event == "expired"))
        notes = db.session.scalar(sa.select(sa.func.count()).select_from(Notification)
                                  .where(Notification.kind == "certificate_expired"))
    assert expired_events == notes == len(identifiers)


def test_a_reminder_another_node_inserted_meanwhile_is_not_inserted_again(app, clock, samr):
    identifier = expiring(samr, days_from_today(20))
    certificate = stored(app, identifier)
    due = [expiry.Reminder(certificate, 30, 20)]
    with app.app_context():
        first = expiry.insert_reminders(db.session, due, clock())
        second = expiry.insert_reminders(db.session, due, clock())
        db.session.commit()

    assert (first, second) == ({(certificate.id, 30)}, set())
    assert reminders(app, identifier) == [30]


# -- the department's notifications ----------------------------------------------------------------------

def notifications(api: Department, **query: Any) -> Any:
    return api.dept.http.get(NOTIFICATIONS, query_string=query, headers=api.headers)


def mark_read(api: Department, notification_id: str) -> Any:
    return api.dept.http.post(f"{NOTIFICATIONS}/{notification_id}/read", headers=api.headers)


def test_a_department_lists_its_digests_and_marks_them_read(app, runner, clock, samr, disability_federation):
    first = expiring(samr, days_from_today(10))
    expiring(disability_federation, days_from_today(10), DISABILITY)
    run(runner, "remind")
    clock.advance(minutes=5)
    second = expiring(samr, days_from_today(50))
    run(runner, "remind")

    page = notifications(samr).get_json()

    assert page["next_cursor"] is None
    assert [n["kind"] for n in page["items"]] == ["department_expiry_digest"] * 2
    newest, oldest = page["items"]
    assert [c["identifier"] for c in newest["data"]["certificates"]] == [second]
    assert [c["identifier"] for c in oldest["data"]["certificates"]] == [first]
    assert newest["created_at"] > oldest["created_at"]
    assert set(newest) == {"id", "kind", "title", "body", "data", "created_at", "read_at"}
    assert_documented(samr.dept.http, "get", NOTIFICATIONS, notifications(samr))
    assert newest["read_at"] is None

    read = mark_read(samr, oldest["id"])
    again = mark_read(samr, oldest["id"])

    assert read.status_code == again.status_code == 200
    assert_documented(samr.dept.http, "post", NOTIFICATIONS + "/{notification_id}/read", again)
    assert read.get_json()["read_at"] == again.get_json()["read_at"] == clock().isoformat()
    assert [n["id"] for n in notifications(samr, unread="true").get_json()["items"]] == [newest["id"]]


def test_notifications_are_paginated_newest_first_with_a_cursor(app, runner, clock, samr):
    for days in (80, 70, 60):
        expiring(samr, days_from_today(days))
        run(runner, "remind")
        clock.advance(seconds=1)
    samr.refresh()

    pages, cursor = [], None
    while True:
        page = notifications(samr, limit=2, **({"cursor": cursor} if cursor else {})).get_json()
        pages.append([n["data"]["certificates"][0]["days_left"] for n in page["items"]])
        cursor = page["next_cursor"]
        if cursor is None:
            break

    assert pages == [[60, 70], [80]]


@pytest.mark.parametrize(("query", "field"), [
    ({"limit": 101}, "limit"), ({"limit": 0}, "limit"), ({"cursor": "not-a-cursor!"}, "cursor"),
    ({"cursor": "MjAyNi0xMS0yNlQwOTowMDowMHwx"[:-1]}, "cursor"), ({"colour": "red"}, "colour"),
])
def test_bad_paging_parameters_are_422_naming_the_parameter(samr, query, field):
    problems = field_errors(notifications(samr, **query))

    assert any(name.endswith(field) for name in problems), problems


@pytest.mark.parametrize("cursor", FORGED_CURSORS)
def test_a_forged_or_out_of_range_cursor_is_422_naming_the_cursor(samr, cursor):
    assert field_errors(notifications(samr, cursor=cursor)) == {"cursor": "invalid_cursor"}


def test_the_cursor_carries_no_sequential_id(runner, clock, samr):
    for days in (80, 70):
        expiring(samr, days_from_today(days))
        run(runner, "remind")
        clock.advance(seconds=1)

    page = notifications(samr, limit=1).get_json()

    position = base64.urlsafe_b64decode(page["next_cursor"] + "=" * (-len(page["next_cursor"]) % 4)).decode()
    assert position.rpartition("|")[2] == page["items"][0]["id"]


def test_a_department_cannot_see_or_mark_another_departments_notifications(app, runner, samr, disability_federation):
    expiring(disability_federation, days_from_today(10), DISABILITY)
    run(runner, "remind")
    (theirs,) = notifications(disability_federation).get_json()["items"]

    assert notifications(samr).get_json()["items"] == []
    error_of(mark_read(samr, theirs["id"]), 404, "notification_not_found")
    assert notifications(disability_federation).get_json()["items"][0]["read_at"] is None


def test_holder_notifications_are_not_listed_for_the_department(app, samr):
    samr.issued()  # writes a holder notification (certificate_issued)

    assert notifications(samr).get_json()["items"] == []


def test_notifications_need_the_issue_scope(make_dept_client):
    verifier = make_dept_client(SAMR, scopes=("verify",))

    error_of(verifier.http.get(NOTIFICATIONS, headers=verifier.headers()), 403, "insufficient_scope")
    error_of(verifier.http.post(f"{NOTIFICATIONS}/abc/read", headers=verifier.headers()), 403, "insufficient_scope")
