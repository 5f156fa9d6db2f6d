"""Domain errors: a stable code, an HTTP status and a zh-CN message, rendered in one JSON shape."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from sqlalchemy.orm import Session

    from backend.kernel.actors import Actor


@dataclass(frozen=True)
class AuditNote:
    """A refused security-relevant attempt, recorded by the request edge after the rollback."""

    actor: Actor
    action: str
    object_type: str | None = None
    object_id: str | None = None
    details: dict[str, Any] = field(default_factory=dict)


class DomainError(Exception):
    """Base of every error a client may see. Subclasses fix `code`, `status` and `message`."""

    code = "error"
    status = 400
    message = "请求无法处理"
    audit: AuditNote | None = None
    # A change that must persist although the request failed (e.g. revoking a session on token reuse);
    # the request edge applies it in a fresh transaction after the rollback.
    after_rollback: Callable[[Session], None] | None = None

    def __init__(
        self,
        message: str | None = None,
        *,
        code: str | None = None,
        details: dict[str, Any] | None = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(message or self.message)
        if message:
            self.message = message
        if code:
            self.code = code
        self.details = details or {}
        self.headers = headers or {}

    def with_status(self, status: int) -> DomainError:
        self.status = status
        return self

    def to_dict(self) -> dict[str, Any]:
        body: dict[str, Any] = {"code": self.code, "message": self.message}
        if self.details:
            body["details"] = self.details
        return {"error": body}


class BadRequest(DomainError):
    code = "bad_request"
    status = 400
    message = "请求格式错误"


class Unauthorized(DomainError):
    code = "unauthorized"
    status = 401
    message = "未认证或认证已失效"


class InvalidClient(Unauthorized):
    code = "invalid_client"
    message = "客户端认证失败"


class Forbidden(DomainError):
    code = "forbidden"
    status = 403
    message = "无权执行此操作"


class InsufficientScope(Forbidden):
    code = "insufficient_scope"
    message = "访问令牌缺少所需权限范围"


class NotFound(DomainError):
    code = "not_found"
    status = 404
    message = "资源不存在"


class NotificationNotFound(NotFound):
    """A notification that is not the caller's (a holder's or a department's inbox) is not there at all."""

    code = "notification_not_found"
    message = "通知不存在"


class Conflict(DomainError):
    code = "conflict"
    status = 409
    message = "与当前状态冲突"


class Gone(DomainError):
    code = "gone"
    status = 410
    message = "资源已过期或失效"


class PayloadTooLarge(DomainError):
    code = "payload_too_large"
    status = 413
    message = "请求体过大"


class ValidationFailed(DomainError):
    """422: a field's value is invalid. `details` names the field(s) and the reason."""

    code = "validation_failed"
    status = 422
    message = "字段校验失败"

    @classmethod
    def for_field(cls, field: str, reason: str, message: str | None = None) -> ValidationFailed:
        return cls(
            message or f"字段 {field} 无效：{reason}",
            details={"fields": [{"field": field, "reason": reason}]},
        )


class ServiceUnavailable(DomainError):
    code = "service_unavailable"
    status = 503
    message = "服务暂不可用"


class DatabaseBusy(ServiceUnavailable):
    """503: the database stayed locked past the wait (SQLite's one writer held by a long import, a PostgreSQL lock
    timeout, a serialization failure or a deadlock): nothing was written, and the same request may simply be sent
    again after `Retry-After` seconds."""

    code = "database_busy"
    message = "系统繁忙，请稍后重试"
    retry_after = 1

    def __init__(self) -> None:
        super().__init__(details={"retry_after": self.retry_after},
                         headers={"Retry-After": str(self.retry_after)})


class DatabaseUnavailable(ServiceUnavailable):
    code = "database_unavailable"
    message = "数据库暂不可用，请稍后重试"


# SQLite's primary result codes for a lock held by another connection; PostgreSQL's SQLSTATEs for a lock not
# obtained in time (lock_timeout), a serialization failure and a deadlock: each is worth retrying as it is.
_SQLITE_BUSY_CODES = frozenset({5, 6})  # SQLITE_BUSY, SQLITE_LOCKED
_POSTGRESQL_RETRYABLE = frozenset({"55P03", "40001", "40P01"})


def is_lock_timeout(error: BaseException) -> bool:
    """Whether a database error (SQLAlchemy's, or the driver's) means "locked by someone else, try again"."""
    original = getattr(error, "orig", None) or error
    sqlite_code = getattr(original, "sqlite_errorcode", None)
    if isinstance(sqlite_code, int):
        return sqlite_code & 0xFF in _SQLITE_BUSY_CODES
    sqlstate = getattr(original, "sqlstate", None) or getattr(original, "pgcode", None)
    if isinstance(sqlstate, str):
        return sqlstate in _POSTGRESQL_RETRYABLE
    return "database is locked" in str(original)


def database_error(error: BaseException) -> ServiceUnavailable:
    """The answer to an operational database error (SQLAlchemy's OperationalError): a busy database is worth a
    retry; anything else (connection lost, server down) is the database being unavailable. Never a 500."""
    return DatabaseBusy() if is_lock_timeout(error) else DatabaseUnavailable()
