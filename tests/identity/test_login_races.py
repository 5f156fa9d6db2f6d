"""Concurrent logins meet only in the database: the console's lock-out and refresh-token rotation hold whatever the
interleaving, on SQLite (a file database) and on PostgreSQL.

Each party is a real thread with its own test client, app context, session and connection, as on several workers.
`after_first_read` stops a request right after it read what it decides on: either another request runs to its end
meanwhile (a race by hand), or every request waits there for all others (a barrier), so that only the database's
answer to the write can pick the winners.
"""

from __future__ import annotations

import threading
from typing import Any

import pytest
import sqlalchemy as sa
from argon2 import PasswordHasher

from backend.extensions import db
from backend.identity.staff import MAX_FAILED_ATTEMPTS
from backend.models import AuthSession
from tests.support import after_first_read, database_is_shared, finish_meanwhile, run_together
from tests.web.console_support import Console, account, audit_events

GUESSERS = 12  # each holds a pooled connection while it waits: the pool has 15
REFRESHERS = 6
REFRESH = "/api/v1/auth/refresh"


class CountingHasher(PasswordHasher):
    """Cheap argon2 parameters (as tests use), counting the password checks."""

    def __init__(self) -> None:
        super().__init__(time_cost=1, memory_cost=8, parallelism=1)
        self.checks = 0
        self._guard = threading.Lock()

    def verify(self, hash: str | bytes, password: str | bytes) -> bool:
        with self._guard:
            self.checks += 1
        return super().verify(hash, password)


HASHER = CountingHasher()


@pytest.fixture
def app_settings() -> dict[str, Any]:
    HASHER.checks = 0
    return {"STAFF_PASSWORD_HASHER": HASHER}


# -- the staff console's lock-out -----------------------------------------------------------------------------------

def test_a_login_that_read_the_account_before_the_fifth_failure_locked_it_is_refused_unchecked(app, clerk):
    database_is_shared(app)
    for attempt in range(MAX_FAILED_ATTEMPTS - 1):
        assert Console(app).login(clerk, password=f"Wrong-password-{attempt}").status_code == 401
    browser = Console(app)
    browser.token()
    fifth, fifth_answer = finish_meanwhile(lambda: Console(app).login(clerk, password="Wrong-password-5"))
    checks_before = HASHER.checks

    # The right password, read the account while it was still open; the fifth wrong one locked it meanwhile.
    with after_first_read(app, "staff_account", fifth, thread=threading.get_ident()):
        right = browser.login(clerk)

    assert fifth_answer().status_code == 429
    assert right.status_code == 429 and "锁定" in right.get_data(as_text=True)
    assert HASHER.checks == checks_before + 1  # the fifth guess only: the right password was never checked
    assert browser.get("/console/objections").status_code == 302  # not logged in


@pytest.mark.parametrize("overlap", [False, True], ids=["released-together", "all-past-the-read"])
def test_concurrent_guesses_get_five_password_checks_and_then_the_right_password_is_locked_out(app, clerk,
                                                                                               overlap):
    database_is_shared(app)
    read = threading.Barrier(GUESSERS)

    def guess(n: int) -> int:
        return int(Console(app).login(clerk, password=f"Wrong-password-{n}").status_code)

    with after_first_read(app, "staff_account", lambda: read.wait(timeout=30) if overlap else None):
        statuses = run_together(guess, GUESSERS)

    assert HASHER.checks == MAX_FAILED_ATTEMPTS
    assert sorted(statuses) == [401] * (MAX_FAILED_ATTEMPTS - 1) + [429] * (GUESSERS - MAX_FAILED_ATTEMPTS + 1)
    assert Console(app).login(clerk).status_code == 429
    assert HASHER.checks == MAX_FAILED_ATTEMPTS
    reasons = sorted(e.details.get("reason") for e in audit_events(app, "staff.login"))
    assert reasons == ["bad_password"] * MAX_FAILED_ATTEMPTS + ["locked"] * (GUESSERS - MAX_FAILED_ATTEMPTS + 1)
    assert account(app, clerk.username).locked_until is not None


# -- refresh-token rotation -----------------------------------------------------------------------------------------

def refresh(app: Any, token: str) -> tuple[int, dict[str, Any]]:
    response = app.test_client().post(REFRESH, json={"refresh_token": token})
    return response.status_code, response.get_json()


def family_revoked(app: Any) -> bool:
    with app.app_context():
        return db.session.scalar(sa.select(AuthSession.revoked_reason)) == "refresh_token_reuse"


def test_a_refresh_that_read_the_token_before_another_used_it_is_a_reuse(app, login):
    database_is_shared(app)
    citizen = login()
    other, other_answer = finish_meanwhile(lambda: refresh(app, citizen.refresh_token))

    with after_first_read(app, "refresh_token", other, thread=threading.get_ident()):
        late = refresh(app, citizen.refresh_token)

    status, body = other_answer()
    assert status == 200
    assert late[0] == 401 and late[1]["error"]["code"] == "refresh_token_reused"
    assert family_revoked(app)
    assert refresh(app, body["refresh_token"])[0] == 401  # the winner's new token ended with the family


@pytest.mark.parametrize("overlap", [False, True], ids=["released-together", "all-past-the-read"])
def test_of_concurrent_refreshes_with_one_token_exactly_one_wins_and_the_family_ends(app, login, overlap):
    database_is_shared(app)
    citizen = login()
    read = threading.Barrier(REFRESHERS)

    with after_first_read(app, "refresh_token", lambda: read.wait(timeout=30) if overlap else None):
        results = run_together(lambda _: refresh(app, citizen.refresh_token), REFRESHERS)

    assert sorted(status for status, _ in results) == [200] + [401] * (REFRESHERS - 1), results
    codes = {body["error"]["code"] for status, body in results if status == 401}
    assert codes <= {"refresh_token_reused", "invalid_refresh_token"} and "refresh_token_reused" in codes
    assert family_revoked(app)
    [winner] = [body for status, body in results if status == 200]
    assert refresh(app, winner["refresh_token"])[0] == 401
