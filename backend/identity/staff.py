"""Staff console accounts: creation, password login with lock-out, and server-side sessions with timeouts."""

from __future__ import annotations

import contextlib
import functools
import hashlib
import re
import secrets
from collections.abc import Callable
from dataclasses import dataclass, replace
from datetime import datetime, timedelta

from argon2 import PasswordHasher, profiles
from argon2.exceptions import InvalidHashError, VerificationError
from sqlalchemy import case, literal, null, or_, select, update
from sqlalchemy.orm import Session

from backend.audit.chain import record_event
from backend.errors import AuditNote, Conflict, DomainError, NotFound, Unauthorized, ValidationFailed
from backend.kernel.actors import Actor
from backend.models import Department, StaffAccount, StaffSession
from backend.models.identity import CITY_ADMIN, DEPARTMENT_STAFF

# RFC 9106's second recommended option (t=3, m=64 MiB, p=4): memory-hard, affordable on a 2-core server.
STANDARD_HASHER = PasswordHasher.from_parameters(profiles.RFC_9106_LOW_MEMORY)

MAX_FAILED_ATTEMPTS = 5
LOCK_DURATION = timedelta(minutes=15)
IDLE_TIMEOUT = timedelta(minutes=30)
ABSOLUTE_TIMEOUT = timedelta(hours=8)
# last_seen_at is written at most once a minute: a page view is not worth a write each time.
_TOUCH_INTERVAL = timedelta(seconds=60)

USERNAME = re.compile(r"^[a-z0-9][a-z0-9._-]{2,63}$")
MIN_PASSWORD = 12
MAX_PASSWORD = 128


class StaffLoginFailed(Unauthorized):
    code = "login_failed"
    message = "用户名或密码错误"


class StaffAccountLocked(DomainError):
    code = "account_locked"
    status = 429
    message = "密码错误次数过多，账号已暂时锁定，请稍后再试"


class StaffNotFound(NotFound):
    code = "staff_not_found"
    message = "工作人员账号不存在"


@dataclass(frozen=True)
class StaffLogin:
    """A successful login: the account and the new session's token (only the cookie keeps it)."""

    account: StaffAccount
    token: str


def staff_actor(account: StaffAccount, *, source_ip: str | None = None, request_id: str | None = None) -> Actor:
    department_code = account.department.code if account.department is not None else None
    return Actor(kind="staff", id=account.public_id, department_code=department_code, source_ip=source_ip,
                 request_id=request_id)


def token_hash(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def check_password_policy(password: str, username: str) -> None:
    """At least 12 characters (at most 128), at least two of letters / digits / other, not the username."""
    if not MIN_PASSWORD <= len(password) <= MAX_PASSWORD:
        raise ValidationFailed.for_field("password", "length", f"密码长度应为 {MIN_PASSWORD}–{MAX_PASSWORD} 个字符")
    kinds = sum((any(c.isalpha() for c in password), any(c.isdigit() for c in password),
                 any(not c.isalnum() for c in password)))
    if kinds < 2:
        raise ValidationFailed.for_field("password", "too_simple", "密码须包含字母、数字、符号中的至少两类")
    if username.lower() in password.lower():
        raise ValidationFailed.for_field("password", "contains_username", "密码不得包含用户名")


def _clean_username(username: str) -> str:
    name = username.strip().lower()
    if not USERNAME.match(name):
        raise ValidationFailed.for_field("username", "invalid",
                                         "用户名应为 3–64 个小写字母、数字或 . _ -，以字母或数字开头")
    return name


def create_staff(session: Session, hasher: PasswordHasher, *, username: str, display_name: str,
                 department: Department | None, password: str, actor: Actor, now: datetime) -> StaffAccount:
    """A department's staff member, or (department None) a city administrator who reads every queue."""
    name = _clean_username(username)
    display = display_name.strip()
    if not 1 <= len(display) <= 100:
        raise ValidationFailed.for_field("display_name", "length", "姓名长度应为 1–100 个字符")
    check_password_policy(password, name)
    if session.scalar(select(StaffAccount.id).where(StaffAccount.username == name)) is not None:
        raise Conflict("该用户名已存在", code="staff_username_taken", details={"username": name})
    account = StaffAccount(
        public_id=secrets.token_hex(16), username=name, display_name=display,
        role=DEPARTMENT_STAFF if department is not None else CITY_ADMIN, department=department,
        password_hash=hasher.hash(password), failed_attempts=0, active=True, created_at=now, updated_at=now)
    session.add(account)
    session.flush()
    record_event(session, actor=actor, action="staff.created", now=now, object_type="staff",
                 object_id=account.public_id,
                 details={"username": name, "role": account.role,
                          "department": department.code if department is not None else None})
    return account


def get_staff(session: Session, username: str) -> StaffAccount:
    account = session.scalar(select(StaffAccount).where(StaffAccount.username == username.strip().lower()))
    if account is None:
        raise StaffNotFound(details={"username": username})
    return account


def list_staff(session: Session) -> list[StaffAccount]:
    return list(session.scalars(select(StaffAccount).order_by(StaffAccount.username)))


def _revoke_sessions(session: Session, account: StaffAccount, *, now: datetime, reason: str) -> None:
    session.execute(update(StaffSession)
                    .where(StaffSession.staff_id == account.id, StaffSession.revoked_at.is_(None))
                    .values(revoked_at=now, revoked_reason=reason))


def disable_staff(session: Session, username: str, *, actor: Actor, now: datetime) -> StaffAccount:
    """The account can no longer log in, and its open sessions end at once."""
    account = get_staff(session, username)
    account.active = False
    account.disabled_at = now
    account.updated_at = now
    _revoke_sessions(session, account, now=now, reason="disabled")
    record_event(session, actor=actor, action="staff.disabled", now=now, object_type="staff",
                 object_id=account.public_id, details={"username": account.username})
    return account


def set_password(session: Session, hasher: PasswordHasher, username: str, password: str, *, actor: Actor,
                 now: datetime) -> StaffAccount:
    """A new password (an operator's reset): unlocks the account and ends its sessions."""
    account = get_staff(session, username)
    check_password_policy(password, account.username)
    account.password_hash = hasher.hash(password)
    account.failed_attempts = 0
    account.locked_until = None
    account.updated_at = now
    _revoke_sessions(session, account, now=now, reason="password_reset")
    record_event(session, actor=actor, action="staff.password_reset", now=now, object_type="staff",
                 object_id=account.public_id, details={"username": account.username})
    return account


def _burn_time(hasher: PasswordHasher, password: str) -> None:
    """Verify against a dummy hash, so an unknown username costs as long as a wrong password."""
    with contextlib.suppress(VerificationError):
        hasher.verify(_dummy_hash(hasher), password)


@functools.lru_cache(maxsize=8)
def _dummy_hash(hasher: PasswordHasher) -> str:
    """A hash of a random password nobody knows, made once per hasher (an app's hasher is a constant of its config):
    nothing secret or app-specific is kept, only the cost of one argon2 hash per login."""
    return hasher.hash(secrets.token_urlsafe(16))


@dataclass(frozen=True)
class _Reservation:
    """One password check the account's count allows, already counted as a failure (the state it left behind)."""

    failed_attempts: int
    locked_until: datetime | None

    @property
    def attempt(self) -> int:
        return MAX_FAILED_ATTEMPTS if self.locked_until is not None else self.failed_attempts

    @property
    def locks(self) -> bool:
        return self.locked_until is not None


def _reserve_attempt(session: Session, account_id: int, now: datetime) -> _Reservation | None:
    """Count one more failed attempt before the password is checked; None when the account is locked (or disabled).

    One conditional UPDATE decides, so of any number of concurrent logins at most MAX_FAILED_ATTEMPTS get a check
    per lock window (PostgreSQL's row lock and SQLite's single writer order them): the one that reaches the limit
    locks the account (and restarts the count), the ones after it find it locked. An expired lock counts as none.
    """
    counted = StaffAccount.failed_attempts + 1
    reaches_limit = counted >= MAX_FAILED_ATTEMPTS
    lock_until = literal(now + LOCK_DURATION, StaffAccount.locked_until.type)
    row = session.execute(
        update(StaffAccount)
        .where(StaffAccount.id == account_id, StaffAccount.active.is_(True),
               StaffAccount.failed_attempts < MAX_FAILED_ATTEMPTS,
               or_(StaffAccount.locked_until.is_(None), StaffAccount.locked_until <= now))
        .values(failed_attempts=case((reaches_limit, 0), else_=counted),
                locked_until=case((reaches_limit, lock_until), else_=null()), updated_at=now)
        .returning(StaffAccount.failed_attempts, StaffAccount.locked_until)
        .execution_options(synchronize_session=False)).first()
    return None if row is None else _Reservation(row.failed_attempts, row.locked_until)


def _clear_attempts(session: Session, account_id: int, reserved: _Reservation) -> None:
    """A right password undoes the count, and the lock its own attempt set, unless another attempt was counted
    since: those stay (and with them a lock they set), so a success never hides concurrent guesses."""
    session.execute(
        update(StaffAccount)
        .where(StaffAccount.id == account_id, StaffAccount.failed_attempts == reserved.failed_attempts,
               StaffAccount.locked_until.is_not_distinct_from(
                   literal(reserved.locked_until, StaffAccount.locked_until.type)))
        .values(failed_attempts=0, locked_until=None)
        .execution_options(synchronize_session=False))


def _locked_error(until: datetime, now: datetime, note: AuditNote) -> StaffAccountLocked:
    seconds = max(1, int((until - now).total_seconds()))
    error = StaffAccountLocked(f"密码错误次数过多，账号已暂时锁定，请 {(seconds + 59) // 60} 分钟后再试",
                               headers={"Retry-After": str(seconds)}, details={"retry_after_seconds": seconds})
    error.audit = note
    return error


def _refused(account: StaffAccount, actor: Actor, reason: str) -> StaffLoginFailed:
    failed = StaffLoginFailed()
    failed.audit = AuditNote(actor=actor, action="staff.login", object_type="staff", object_id=account.public_id,
                             details={"reason": reason})
    return failed


def authenticate(session: Session, hasher: PasswordHasher, *, username: str, password: str, origin: Actor,
                 now: datetime, commit: Callable[[], None]) -> StaffAccount:
    """Check a console login; the fifth failure in a row locks the account for LOCK_DURATION, unchecked.

    `origin` is the anonymous caller (address, request id); the account becomes the actor once found.

    The attempt is counted (atomically, as a failure) before the password is checked, and `commit` — the caller's
    commit of the request's transaction — makes that count durable before the slow hash runs: a failure, a crash or
    a concurrent guess cannot take it back, and no lock is held during the check. A success undoes its own count.
    """
    name = username.strip().lower()
    # A name no account can have (too long, NUL or other odd characters) is not even looked up.
    account = session.scalar(select(StaffAccount).where(StaffAccount.username == name)) \
        if USERNAME.fullmatch(name) else None
    if account is None or not account.active:
        _burn_time(hasher, password)
        failed = StaffLoginFailed()
        failed.audit = AuditNote(actor=replace(origin, kind="staff", id=account.public_id if account else "unknown"),
                                 action="staff.login", object_type="staff",
                                 details={"reason": "disabled" if account else "unknown_user"})
        raise failed
    actor = staff_actor(account, source_ip=origin.source_ip, request_id=origin.request_id)
    account_id = account.id
    reserved = _reserve_attempt(session, account_id, now)
    if reserved is None:
        # Locked: no password check, so a correct guess is not confirmed either. (Or disabled meanwhile.)
        session.refresh(account)
        if not account.active:
            _burn_time(hasher, password)
            raise _refused(account, actor, "disabled")
        until = account.locked_until if account.locked_until is not None and account.locked_until > now \
            else now + LOCK_DURATION
        raise _locked_error(until, now, AuditNote(actor=actor, action="staff.login", object_type="staff",
                                                  object_id=account.public_id, details={"reason": "locked"}))
    commit()
    try:
        hasher.verify(account.password_hash, password)
    except (VerificationError, InvalidHashError):
        note = AuditNote(actor=actor, action="staff.login", object_type="staff", object_id=account.public_id,
                         details={"reason": "bad_password", "attempt": reserved.attempt, "locked": reserved.locks})
        error: DomainError = (_locked_error(now + LOCK_DURATION, now, note) if reserved.locks
                              else StaffLoginFailed())
        error.audit = note
        raise error from None
    _clear_attempts(session, account_id, reserved)
    if hasher.check_needs_rehash(account.password_hash):
        account.password_hash = hasher.hash(password)
    account.last_login_at = now
    account.updated_at = now
    record_event(session, actor=actor, action="staff.login", now=now, object_type="staff",
                 object_id=account.public_id)
    return account


def start_session(session: Session, account: StaffAccount, *, now: datetime,
                  lifetime: timedelta = ABSOLUTE_TIMEOUT) -> StaffLogin:
    """A new session with a fresh random token: a login never continues an earlier session (no fixation)."""
    token = secrets.token_urlsafe(32)
    session.add(StaffSession(token_hash=token_hash(token), staff_id=account.id, created_at=now, last_seen_at=now,
                             expires_at=now + lifetime))
    session.flush()
    return StaffLogin(account=account, token=token)


def session_for_token(session: Session, token: str, *, now: datetime,
                      idle: timedelta = IDLE_TIMEOUT) -> StaffSession | None:
    """The live session a cookie's token names, or None (unknown, ended, idle too long, expired, disabled)."""
    row = session.scalar(select(StaffSession).where(StaffSession.token_hash == token_hash(token)))
    if row is None or row.revoked_at is not None:
        return None
    reason = ("expired" if now >= row.expires_at else "idle" if now - row.last_seen_at >= idle
              else "disabled" if not row.staff.active else None)
    if reason is not None:
        row.revoked_at, row.revoked_reason = now, reason
        return None
    if now - row.last_seen_at >= _TOUCH_INTERVAL:
        row.last_seen_at = now
    return row


def end_session(session: Session, staff_session: StaffSession, *, actor: Actor, now: datetime) -> None:
    staff_session.revoked_at = now
    staff_session.revoked_reason = "logout"
    record_event(session, actor=actor, action="staff.logout", now=now, object_type="staff", object_id=actor.id)
