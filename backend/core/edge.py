"""The request edge: request ids, structured logs, security headers, the one transaction and the one error shape."""

from __future__ import annotations

import json
import logging
import re
import secrets
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Protocol

from flask import Flask, Request, Response, current_app, g, jsonify, request
from flask.json.provider import DefaultJSONProvider
from flask.sessions import SecureCookieSession, SecureCookieSessionInterface, SessionMixin
from flask.typing import ResponseReturnValue
from flask_limiter.errors import RateLimitExceeded
from pydantic import ValidationError
from sqlalchemy.exc import DataError, IntegrityError, OperationalError
from sqlalchemy.orm import Session
from werkzeug.exceptions import HTTPException

from backend.core import json_input
from backend.core.context import now
from backend.errors import AuditNote, DatabaseBusy, DomainError, PayloadTooLarge, ValidationFailed, database_error
from backend.extensions import db

log = logging.getLogger("ecert.request")

EXTENSION = "ecert.edge"


class RecordRefusal(Protocol):
    def __call__(self, session: Session, note: AuditNote, *, now: datetime) -> None: ...


@dataclass(frozen=True)
class EdgeHooks:
    """What the edge asks of the layers above it, handed over by the app factory (core imports no area, no auth)."""

    check_access: Callable[[], ResponseReturnValue | None]  # who is calling: first thing, before the body is read
    record_refusal: RecordRefusal  # audit a refused attempt after the rollback


_REQUEST_ID = re.compile(r"^[A-Za-z0-9._-]{8,64}$")

# zh-CN messages for errors raised by Flask/Werkzeug itself.
_HTTP_MESSAGES = {
    400: ("bad_request", "请求格式错误"),
    401: ("unauthorized", "未认证或认证已失效"),
    403: ("forbidden", "无权执行此操作"),
    404: ("not_found", "资源不存在"),
    405: ("method_not_allowed", "不支持该请求方法"),
    406: ("not_acceptable", "无法提供所请求的内容类型"),
    413: ("payload_too_large", "请求体过大"),
    415: ("unsupported_media_type", "不支持的内容类型"),
    429: ("rate_limited", "请求过于频繁，请稍后再试"),
    500: ("internal_error", "服务器内部错误"),
}


class JsonFormatter(logging.Formatter):
    """One JSON object per line. Callers never pass tokens or ID numbers into log records."""

    _encode = json.JSONEncoder(ensure_ascii=False).encode  # json.dumps builds an encoder per call for these options

    def __init__(self) -> None:
        super().__init__()
        self._second: tuple[int, str] = (-1, "")  # the last second formatted, and its text: one line per request

    def formatTime(self, record: logging.LogRecord, datefmt: str | None = None) -> str:
        if datefmt is not None:
            return super().formatTime(record, datefmt)
        second, cached = int(record.created), self._second
        if cached[0] != second:
            cached = self._second = (second, super().formatTime(record, "%Y-%m-%dT%H:%M:%S%z"))
        return cached[1]

    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "ts": self.formatTime(record),
            "level": record.levelname,
            "logger": record.name,
            "msg": record.getMessage(),
        }
        entry.update(getattr(record, "fields", {}))
        if record.exc_info:
            entry["exc"] = self.formatException(record.exc_info)
        return self._encode(entry)


def configure_logging(app: Flask) -> None:
    root = logging.getLogger("ecert")
    if not any(isinstance(h.formatter, JsonFormatter) for h in root.handlers):
        handler = logging.StreamHandler()
        handler.setFormatter(JsonFormatter())
        root.addHandler(handler)
    root.setLevel(app.config["ECERT_LOG_LEVEL"])
    root.propagate = False


# On every answer unless the view set its own; Cache-Control and Pragma on the API faces' answers too.
_SECURITY_HEADERS = (
    ("Strict-Transport-Security", "max-age=31536000; includeSubDomains"),
    ("X-Content-Type-Options", "nosniff"),
    ("Referrer-Policy", "no-referrer"),
    ("X-Frame-Options", "DENY"),
    ("Content-Security-Policy", "default-src 'self'; frame-ancestors 'none'"),
)
_API_PREFIXES = ("/api/", "/gov/")


def _add_security_headers(response: Response, path: str) -> None:
    headers = response.headers
    present = {name.lower() for name, _ in headers}
    for name, value in _SECURITY_HEADERS:
        if name.lower() not in present:
            headers.add(name, value)
    if path.startswith(_API_PREFIXES):
        headers["Cache-Control"] = "no-store"
        if "pragma" not in present:
            headers.add("Pragma", "no-cache")


# Paths that carry a bearer-like token: logged without it.
_TOKEN_PATHS = re.compile(r"^(/v/)[^/]+")


def loggable_path(path: str) -> str:
    return _TOKEN_PATHS.sub(r"\1[redacted]", path)


def error_response(error: DomainError) -> Response:
    response = jsonify(error.to_dict())
    response.status_code = error.status
    for name, value in error.headers.items():
        response.headers[name] = value
    return response


def _pydantic_fields(exc: ValidationError) -> list[dict[str, str]]:
    fields = []
    for item in exc.errors(include_url=False, include_input=False):
        location = ".".join(str(part) for part in item["loc"]) or "body"
        fields.append({"field": location, "reason": item["type"], "detail": item["msg"]})
    return fields


def validation_error(exc: ValidationError) -> Response:
    """flask-openapi3's hook: malformed JSON is a 400, invalid fields a 422, both in our shape."""
    if request.mimetype == "application/json" and request.get_data() and request.get_json(silent=True) is None:
        raise DomainError("请求体不是有效的 JSON", code="malformed_json")
    fields = _pydantic_fields(exc)
    names = "、".join(f["field"] for f in fields[:5])
    raise ValidationFailed(f"字段校验失败：{names}", details={"fields": fields})


def _check_json_body() -> None:
    """Refuse a JSON body we will not read before any view runs: nested too deep, NaN/Infinity or numbers out of
    range, not UTF-8 (400 `malformed_json`, the reason in details), or holding lone surrogates (\\ud800) that no
    UTF-8 text can hold. Plainly malformed JSON is left to the view's validation (a 400 where it reads a body)."""
    if request.mimetype != "application/json":
        return
    raw = request.get_data(cache=True)  # within the body cap; chunked bodies too (no Content-Length)
    if not raw:
        return
    body = request.get_json(silent=True)  # parsed once here; the view gets it from the request's cache
    if body is None:
        try:
            json_input.loads(raw)
        except json_input.JSONInputError as exc:
            if exc.reason != "malformed":
                raise DomainError(f"请求体不是可接受的 JSON：{exc.message}", code="malformed_json",
                                  details={"reason": exc.reason, **exc.details}) from exc
        return
    # In UTF-8 a surrogate needs a \u escape or (JSON is read with surrogatepass) the lead byte 0xED; JSON in UTF-16
    # or UTF-32 always takes the full check.
    if b"\\u" not in raw and b"\xed" not in raw and json.detect_encoding(raw) == "utf-8":
        return
    try:
        json.dumps(body, ensure_ascii=False).encode("utf-8")
    except UnicodeEncodeError as exc:
        raise DomainError("请求体包含无效的 Unicode 字符", code="invalid_unicode") from exc


def finish_failed_request(error: DomainError) -> None:
    """Roll back the request's work; then apply what must outlive the failure and audit the refused attempt."""
    db.session.rollback()
    if error.after_rollback is None and error.audit is None:
        return
    try:
        if error.after_rollback is not None:
            error.after_rollback(db.session())
        if error.audit is not None:
            hooks: EdgeHooks = current_app.extensions[EXTENSION]
            hooks.record_refusal(db.session(), error.audit, now=now())
        db.session.commit()
    except Exception:
        # The client still gets the original error; the lost trace is logged for operators.
        db.session.rollback()
        log.exception("could not record a refused attempt", extra={"fields": {"request_id": g.get("request_id")}})


def _in_transaction() -> bool:
    """Whether the request's session began a transaction (it read, added or flushed anything). A request that
    never touched the database has nothing to commit or roll back, and no session is made for it."""
    return db.session.registry.has() and db.session().in_transaction()


def _commit() -> DomainError | None:
    """The request's one commit. A database refusal here still answers in the error shape, never a bare 500."""
    if not _in_transaction():
        return None
    try:
        db.session.commit()
        return None
    except IntegrityError:
        db.session.rollback()
        return DomainError("并发冲突，请重试", code="concurrent_conflict").with_status(409)
    except DataError:
        db.session.rollback()
        return DomainError("请求包含数据库无法保存的字符或数值", code="invalid_value")
    except OperationalError as exc:
        db.session.rollback()
        return _database_refusal(exc, "commit failed")


def _database_refusal(exc: OperationalError, what: str) -> DomainError:
    """A lock timeout (busy) or an unreachable database, anywhere in the request: 503, logged, never a 500."""
    error = database_error(exc)
    fields = {"request_id": g.get("request_id"), "path": loggable_path(request.path), "error": error.code}
    if isinstance(error, DatabaseBusy):
        log.warning(what, extra={"fields": fields})  # expected under load: no traceback
    else:
        log.exception(what, extra={"fields": fields})
    return error


class CookieSessionInterface(SecureCookieSessionInterface):
    """Flask's signed-cookie session (the staff console's), without building its signer and reading the cookie
    settings on a request that neither brings the cookie nor touches the session: every API call."""

    def open_session(self, app: Flask, request: Request) -> SecureCookieSession | None:
        if app.secret_key and ("HTTP_COOKIE" not in request.environ
                               or not request.cookies.get(self.get_cookie_name(app))):
            return self.session_class()
        return super().open_session(app, request)

    def save_session(self, app: Flask, session: SessionMixin, response: Response) -> None:
        if session or session.modified or session.accessed:
            super().save_session(app, session, response)


class StrictJSONProvider(DefaultJSONProvider):
    """Request JSON read by `json_input`: bounded nesting, no NaN or Infinity, no numbers out of range."""

    def loads(self, s: str | bytes, **kwargs: Any) -> Any:
        return json_input.loads(s)


def _decode_form_values_with_json_input() -> None:
    """flask-openapi3 decodes every form value as JSON (so "123" becomes 123) and keeps the text when that raises
    JSONDecodeError. With the stdlib's `json` a value nested thousands deep (`[[[…`) or an integer of 5000 digits
    raised RecursionError or ValueError instead: a 500 before the view, or its authentication, ran. `json_input`
    raises JSONDecodeErrors only, so such a value stays text and the form's model refuses it with a 422."""
    import flask_openapi3.request  # here, not at the top: the commands' app starts without flask-openapi3

    flask_openapi3.request.json = json_input  # its module-level `json`, used for loads only


def register_edge(app: Flask, hooks: EdgeHooks) -> None:
    app.extensions[EXTENSION] = hooks
    app.json = StrictJSONProvider(app)
    app.session_interface = CookieSessionInterface()
    _decode_form_values_with_json_input()
    configure_logging(app)

    @app.before_request
    def _start() -> ResponseReturnValue | None:
        incoming = request.headers.get("X-Request-Id", "")
        g.request_id = incoming if _REQUEST_ID.match(incoming) else secrets.token_hex(8)
        g.started = time.perf_counter()
        # Who is calling comes before anything reads the request: an anonymous caller learns nothing of its schema.
        refused = hooks.check_access()
        if refused is not None:
            return refused
        _check_json_body()
        return None

    @app.after_request
    def _finish(response: Response) -> Response:
        # The one commit of the request: only when it succeeded.
        if response.status_code < 400:
            failure = _commit()
            if failure is not None:
                response = error_response(failure)
        elif _in_transaction():
            db.session.rollback()
        path, request_id = request.path, g.get("request_id")
        response.headers["X-Request-Id"] = request_id or ""
        _add_security_headers(response, path)
        if log.isEnabledFor(logging.INFO):
            started = g.get("started")
            elapsed_ms = round((time.perf_counter() - started) * 1000, 2) if started is not None else 0.0
            # The path only: query strings may carry data that must not reach logs. The record is made without the
            # caller's file and line (logging walks the stack for them): the JSON line has neither.
            log.handle(log.makeRecord(log.name, logging.INFO, __file__, 0, "request", (), None, extra={"fields": {
                "request_id": request_id,
                "method": request.method,
                "path": loggable_path(path),
                "status": response.status_code,
                "ms": elapsed_ms,
                "remote": request.remote_addr,
                "client": g.get("client_id"),
            }}))
        return response

    @app.teardown_request
    def _cleanup(exc: BaseException | None) -> None:
        if exc is not None:
            db.session.rollback()

    @app.errorhandler(DomainError)
    def _domain_error(error: DomainError) -> Response:
        finish_failed_request(error)
        return error_response(error)

    @app.errorhandler(RateLimitExceeded)
    def _rate_limited(error: RateLimitExceeded) -> Response:
        db.session.rollback()
        retry_after = "60"
        limit = getattr(error, "limit", None)
        if limit is not None:
            retry_after = str(int(limit.limit.get_expiry()))
        return error_response(
            DomainError(
                "请求过于频繁，请稍后再试",
                code="rate_limited",
                headers={"Retry-After": retry_after},
                details={"limit": str(error.description)},
            ).with_status(429)
        )

    @app.errorhandler(DataError)
    def _data_error(error: DataError) -> Response:
        # A value the database cannot store (e.g. a NUL byte for PostgreSQL text) is the client's error.
        db.session.rollback()
        return error_response(DomainError("请求包含数据库无法保存的字符或数值", code="invalid_value"))

    @app.errorhandler(IntegrityError)
    def _integrity_error(error: IntegrityError) -> Response:
        # A unique constraint lost a race with a concurrent request: nothing was written; the client may retry.
        db.session.rollback()
        log.warning(
            "integrity conflict",
            extra={"fields": {"request_id": g.get("request_id"), "path": loggable_path(request.path)}},
        )
        return error_response(DomainError("并发冲突，请重试", code="concurrent_conflict").with_status(409))

    @app.errorhandler(OperationalError)
    def _database_error(error: OperationalError) -> Response:
        db.session.rollback()
        return error_response(_database_refusal(error, "database refused the request"))

    @app.errorhandler(HTTPException)
    def _http_error(error: HTTPException) -> Response:
        db.session.rollback()
        status = error.code or 500
        if status == 413:
            # The request's own cap: a route may raise the 1 MiB default (uploads, batch files).
            return error_response(PayloadTooLarge(details={"max_bytes": request.max_content_length}))
        code, message = _HTTP_MESSAGES.get(status, ("http_error", "请求无法处理"))
        headers = {}
        if status == 405 and error.valid_methods:  # type: ignore[attr-defined]
            headers["Allow"] = ", ".join(error.valid_methods)  # type: ignore[attr-defined]
        return error_response(DomainError(message, code=code, headers=headers).with_status(status))

    @app.errorhandler(Exception)
    def _unexpected(error: Exception) -> Response:
        db.session.rollback()
        log.exception(
            "unhandled error",
            extra={"fields": {"request_id": g.get("request_id"), "path": loggable_path(request.path)}},
        )
        return error_response(DomainError("服务器内部错误", code="internal_error").with_status(500))
