"""Staff console accounts: creation, password login with lock-out, and server-side sessions with timeouts.

Passwords are hashed with argon2id (argon2-cffi); the hasher is passed in so tests can use cheap parameters.
"""

from __future__ import annotations

import contextlib
import hashlib
import re
import secrets
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta

from argon2 import PasswordHasher, profiles
from argon2.exceptions import InvalidHashError, VerificationError
from sqlalchemy import select, update
from sqlalchemy.orm import Session

from backend.errors import AuditNote, Conflict, DomainError, NotFound, Unauthorized, ValidationFailed
from backend.models import Department, StaffAccount, StaffSession
from backend.models.staff import CITY_ADMIN, DEPARTMENT_STAFF
from backend.services.actors import Actor
from backend.services.audit import record_event

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
_dummy_hashes: dict[str, str] = {}


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
    key = repr(hasher.time_cost) + repr(hasher.memory_cost) + repr(hasher.parallelism)
    if key not in _dummy_hashes:
        _dummy_hashes[key] = hasher.hash(secrets.token_urlsafe(16))
    with contextlib.suppress(VerificationError):
        hasher.verify(_dummy_hashes[key], password)


def _register_failure(account_id: int, now: datetime) -> Callable[[Session], None]:
    """After the request's rollback: count the failure and lock the account at the limit."""

    def apply(session: Session) -> None:
        account = session.get(StaffAccount, account_id, with_for_update=True)
        if account is None:
            return
        if account.locked_until is not None and account.locked_until <= now:
            account.failed_attempts, account.locked_until = 0, None  # an expired lock starts a fresh count
        account.failed_attempts += 1
        if account.failed_attempts >= MAX_FAILED_ATTEMPTS:
            account.failed_attempts = 0
            account.locked_until = now + LOCK_DURATION
        session.flush()

    return apply



def _locked_error(until: datetime, now: datetime, note: AuditNote) -> StaffAccountLocked:
    seconds = max(1, int((until - now).total_seconds()))
    error = StaffAccountLocked(f"密码错误次数过多，账号已暂时锁定，请 {(seconds + 59) // 60} 分钟后再试",
                               headers={"Retry-After": str(seconds)}, details={"retry_after_seconds": seconds})
    error.audit = note
    return error


def authenticate(session: Session, hasher: PasswordHasher, *, username: str, password: str, now: datetime,
                 source_ip: str | None = None, request_id: str | None = None) -> StaffAccount:
    """Check a console login. Failures are counted (after the rollback) and audited; the fifth locks the account."""
    name = username.strip().lower()
    # A name no account can have (too long, NUL or other odd characters) is not even looked up.
    account = session.scalar(select(StaffAccount).where(StaffAccount.username == name)) \
        if USERNAME.fullmatch(name) else None
    context = {"source_ip": source_ip, "request_id": request_id}
    if account is None or not account.active:
        _burn_time(hasher, password)
        failed = StaffLoginFailed()
        failed.audit = AuditNote(actor=Actor(kind="staff", id=account.public_id if account else "unknown", **context),
                                 action="staff.login", object_type="staff",
                                 details={"reason": "disabled" if account else "unknown_user"})
        raise failed
    actor = staff_actor(account, **context)
    if account.locked_until is not None and now < account.locked_until:
        # No password check while locked: a correct guess must not be confirmed either.
        raise _locked_error(account.locked_until, now, AuditNote(actor=actor, action="staff.login",
                                                                 object_type="staff", object_id=account.public_id,
                                                                 details={"reason": "locked"}))
    try:
        hasher.verify(account.password_hash, password)
    except (VerificationError, InvalidHashError):
        lock_expired = account.locked_until is not None and account.locked_until <= now
        attempts = (0 if lock_expired else account.failed_attempts) + 1
        note = AuditNote(actor=actor, action="staff.login", object_type="staff", object_id=account.public_id,
                         details={"reason": "bad_password", "attempt": attempts,
                                  "locked": attempts >= MAX_FAILED_ATTEMPTS})
        error: DomainError = (_locked_error(now + LOCK_DURATION, now, note) if attempts >= MAX_FAILED_ATTEMPTS
                              else StaffLoginFailed())
        error.audit = note
        error.after_rollback = _register_failure(account.id, now)
        raise error from None
    if hasher.check_needs_rehash(account.password_hash):
        account.password_hash = hasher.hash(password)
    account.failed_attempts = 0
    account.locked_until = None
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
