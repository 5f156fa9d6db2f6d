"""Retention of show-code check records (show_code_use): `flask jobs purge` forgets old ones in batches, and the
holder's usage history and the audit chain, which are kept apart, lose nothing."""

from __future__ import annotations

import secrets
from datetime import datetime, timedelta
from typing import Any

import pytest
from sqlalchemy import func, select
from sqlalchemy.orm import Session

from backend.config import ConfigError, load_settings
from backend.extensions import db
from backend.models import AuditEvent, ShowCodeUse, UsageRecord
from backend.wallet.showcodes import purge_show_code_uses
from tests.support import marriage_of, minted, verdict

USAGE = "/api/v1/usage"


def recorded(app: Any) -> list[tuple[str, datetime]]:
    """(outcome, recorded_at) of every show_code_use row, oldest first."""
    with app.app_context():
        return [(row.outcome, row.recorded_at) for row in db.session.execute(
            select(ShowCodeUse.outcome, ShowCodeUse.recorded_at).order_by(ShowCodeUse.id))]


def count(app: Any, model: Any) -> int:
    with app.app_context():
        return int(db.session.scalar(select(func.count()).select_from(model)) or 0)


def checked_events(app: Any) -> list[tuple[str, str]]:
    with app.app_context():
        return [(event.outcome, event.details["state"]) for event in db.session.scalars(
            select(AuditEvent).where(AuditEvent.action == "showcode.checked").order_by(AuditEvent.seq))]


def purge(runner: Any, *args: str) -> str:
    result = runner.invoke(args=["jobs", "purge", *args])
    assert result.exit_code == 0, result.output
    return str(result.output)


def add_checks(app: Any, *ages: timedelta, now: datetime) -> None:
    """show_code_use rows recorded `age` before `now`, inserted in the order given (ids grow in that order)."""
    with app.app_context():
        for age in ages:
            db.session.add(ShowCodeUse(certificate_public_id=secrets.token_hex(16), nonce=secrets.token_hex(8),
                                       verifier="public", outcome="valid", recorded_at=now - age))
        db.session.commit()


@pytest.fixture
def scanned_long_ago(app: Any, client: Any, clock: Any, login: Any, civil_issuer: Any) -> dict[str, Any]:
    """A holder whose code was checked (valid), then checked again once expired, 31 days ago; and a code of today
    checked twice (one record). Answers the citizen (logged in today), the certificate and both tokens."""
    citizen = login("张伟")
    held = marriage_of(citizen, app, civil_issuer)
    old = minted(citizen, held.id)["token"]
    assert verdict(client, old)["state"] == "valid"
    clock.advance(seconds=61)
    assert verdict(client, old)["state"] == "expired"
    clock.advance(days=31)
    citizen = login("张伟", citizen.id_number)  # the old access token has long expired
    recent = minted(citizen, held.id)["token"]
    for _ in range(2):
        assert verdict(client, recent)["state"] == "valid"
    assert [outcome for outcome, _ in recorded(app)] == ["valid", "expired:expired", "valid"]
    return {"citizen": citizen, "held": held, "old": old, "recent": recent}


def test_purge_forgets_checks_past_the_retention_and_keeps_recent_ones(app, runner, clock, scanned_long_ago):
    output = purge(runner)

    assert "2 show-code check record(s) older than 30 day(s) removed" in output
    assert recorded(app) == [("valid", clock())]


def test_purging_twice_is_a_no_op(app, runner, scanned_long_ago):
    purge(runner)
    left = recorded(app)

    assert "0 show-code check record(s) older than 30 day(s) removed" in purge(runner)
    assert recorded(app) == left


def test_the_usage_history_and_the_audit_chain_lose_nothing(app, runner, scanned_long_ago):
    citizen = scanned_long_ago["citizen"]
    before = citizen.http.get(USAGE, headers=citizen.headers).get_json()["items"]
    events = checked_events(app)

    purge(runner)

    after = citizen.http.get(USAGE, headers=citizen.headers).get_json()["items"]
    assert after == before and [item["kind"] for item in after] == ["show_code_checked"] * 2
    assert count(app, UsageRecord) == 2
    assert checked_events(app) == events == [("success", "valid"), ("failure", "expired"), ("success", "valid")]
    verified = runner.invoke(args=["audit", "verify"])
    assert verified.exit_code == 0 and "audit chain OK" in verified.output


def test_a_purged_code_scanned_again_is_still_expired_and_no_use(app, client, runner, scanned_long_ago):
    purge(runner)

    assert verdict(client, scanned_long_ago["old"])["state"] == "expired"

    assert count(app, UsageRecord) == 2  # an expired code never enters the usage history
    # The new scan is a new fact on the audit chain (once), and checked as already seen from now on.
    assert checked_events(app)[-1] == ("failure", "expired") and len(checked_events(app)) == 4
    assert verdict(client, scanned_long_ago["old"])["state"] == "expired"
    assert len(checked_events(app)) == 4


def test_a_live_code_checked_again_after_a_purge_is_not_a_second_use(app, client, runner, scanned_long_ago):
    purge(runner)

    assert verdict(client, scanned_long_ago["recent"])["state"] == "valid"

    assert count(app, UsageRecord) == 2 and len(checked_events(app)) == 3


@pytest.mark.parametrize("app_settings", [{"ECERT_SHOW_CODE_USE_RETENTION_DAYS": "7"}])
def test_purge_runs_in_batches_up_to_the_configured_retention(app, runner, clock):
    days = timedelta(days=1)
    add_checks(app, 40 * days, 9 * days, 8 * days, 7 * days + timedelta(minutes=1), 8 * days, 6 * days, 1 * days,
               now=clock())

    output = purge(runner, "--batch", "2")

    assert "5 show-code check record(s) older than 7 day(s) removed" in output
    assert [clock() - at for _, at in recorded(app)] == [6 * days, 1 * days]


def test_a_check_recorded_out_of_id_order_waits_for_a_later_run(app, runner, clock):
    days = timedelta(days=1)
    add_checks(app, 31 * days, 29 * days, 31 * days, now=clock())

    assert "1 show-code check record(s)" in purge(runner)
    assert [clock() - at for _, at in recorded(app)] == [29 * days, 31 * days]
    clock.advance(days=2)
    assert "2 show-code check record(s)" in purge(runner)
    assert recorded(app) == []


def test_two_nodes_purging_at_once_share_the_rows(app, clock):
    add_checks(app, *[timedelta(days=40)] * 6, now=clock())
    with app.app_context():
        if db.engine.dialect.name != "postgresql":
            pytest.skip("row locks (FOR UPDATE SKIP LOCKED) are PostgreSQL's; SQLite has one writer at a time")
        cutoff = clock() - timedelta(days=30)
        with Session(db.engine) as first, Session(db.engine) as second:
            by_first = purge_show_code_uses(first, before=cutoff, limit=4)  # holds its four rows, uncommitted
            by_second = purge_show_code_uses(second, before=cutoff, limit=4)  # skips them, does not wait
            second.commit()
            first.commit()
            assert (by_first, by_second) == (4, 2)
            assert purge_show_code_uses(second, before=cutoff) == 0
    assert recorded(app) == []


@pytest.mark.parametrize(("value", "accepted"), [("", 30), ("1", 1), ("3650", 3650), ("0", None), ("3651", None),
                                                 ("-1", None), ("a week", None)])
def test_the_retention_defaults_to_thirty_days_and_is_bounded(tmp_path, value, accepted):
    env = {"ECERT_INSTANCE_PATH": str(tmp_path), "ECERT_SHOW_CODE_USE_RETENTION_DAYS": value}
    if accepted is None:
        with pytest.raises(ConfigError, match="ECERT_SHOW_CODE_USE_RETENTION_DAYS"):
            load_settings(env=env)
    else:
        assert load_settings(env=env)["ECERT_SHOW_CODE_USE_RETENTION_DAYS"] == accepted
