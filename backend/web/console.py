"""Staff console (工作台) under /console: server-rendered pages for departments that handle objections in a browser."""

from __future__ import annotations

import re
from datetime import datetime
from typing import Any

from flask import Blueprint, Response, current_app, g, redirect, render_template, request, url_for
from flask_limiter.errors import RateLimitExceeded
from flask_wtf.csrf import CSRFError
from werkzeug.exceptions import HTTPException

from backend.audit.chain import clean_text, record_event
from backend.auth import staff as staff_auth
from backend.auth.access import public
from backend.auth.staff import require_department_staff, require_staff
from backend.catalog import loader as catalog_service
from backend.catalog.definitions import definition_as_issued
from backend.core.context import deps, evidence_storage, field_cipher, now, request_actor_context
from backend.core.edge import finish_failed_request
from backend.errors import DomainError, Forbidden, ValidationFailed
from backend.extensions import db, limiter
from backend.identity import staff as staff_service
from backend.issuance import certificates as certificate_service
from backend.issuance.issuer import Issuer
from backend.kernel.actors import Actor
from backend.kernel.china_time import china_clock
from backend.models import Certificate, StaffAccount
from backend.models.objections import IN_PROGRESS, OPEN_STATES, REJECTED, RESOLVED, SUBMITTED, Objection
from backend.objections import answers as objection_answers
from backend.objections import checks as objection_checks
from backend.objections import errors as objection_errors
from backend.objections import evidence as objection_evidence
from backend.objections import queue as objection_queue
from backend.objections import views as objection_views

bp = Blueprint("console", __name__, url_prefix="/console")

PAGE_SIZE = 20
STATUS_FILTERS = {"": "全部", SUBMITTED: "待受理", IN_PROGRESS: "处理中", RESOLVED: "已更正", REJECTED: "已驳回"}
FIELD_PREFIX = "field."
MAX_REASON = 200
_POSITION = re.compile(r"[1-9][0-9]{0,2}")
_NO_STORE = {"Cache-Control": "no-store", "Pragma": "no-cache", "X-Robots-Tag": "noindex, nofollow",
             # The CSRF check compares the Referer with the host over HTTPS: send it to ourselves, to nobody else.
             "Referrer-Policy": "same-origin", "Vary": "Cookie"}


def register(app: Any) -> None:
    """Session cookie flags, CSRF and the console's routes; its account commands (`flask staff`) are in backend.cli."""
    staff_auth.init_app(app)
    app.register_blueprint(bp)


# -- edge of the console: CSRF on every form, headers, errors as pages -----------------------------------------

@bp.before_request
def _check_csrf() -> None:
    if request.method not in ("GET", "HEAD"):
        staff_auth.protect_form()


@bp.after_request
def _headers(response: Response) -> Response:
    for name, value in _NO_STORE.items():
        response.headers[name] = value
    return response


def _page(template: str, http_status: int = 200, **context: Any) -> tuple[str, int]:
    return render_template(template, staff=staff_auth.current_staff(), china=_china, **context), http_status


def _error_page(error: DomainError) -> tuple[str, int]:
    finish_failed_request(error)  # roll back; keep what must outlive the failure; audit a refused attempt
    problems = [f"{item.get('field', '')}：{item.get('detail') or item.get('reason', '')}"
                for item in error.details.get("fields", []) if isinstance(item, dict)]
    return _page("console/error.html", error.status, status=error.status, message=error.message, problems=problems,
                 back=request.referrer if request.referrer and request.referrer.startswith(request.host_url) else None)


@bp.errorhandler(CSRFError)
def _csrf_error(error: CSRFError) -> tuple[str, int]:
    db.session.rollback()
    return _page("console/error.html", 400, status=400, message="页面已失效或缺少安全令牌，请返回并刷新页面后重试。",
                 problems=[], back=None)


@bp.errorhandler(DomainError)
def _domain_error(error: DomainError) -> tuple[str, int]:
    return _error_page(error)


@bp.errorhandler(RateLimitExceeded)
def _rate_limited(error: RateLimitExceeded) -> tuple[str, int, dict[str, str]]:
    db.session.rollback()
    limit = getattr(error, "limit", None)
    retry_after = str(int(limit.limit.get_expiry())) if limit is not None else "60"
    page, status = _page("console/error.html", 429, status=429, message="尝试过于频繁，请稍后再试。", problems=[],
                         back=None)
    return page, status, {"Retry-After": retry_after}


@bp.errorhandler(HTTPException)
def _http_error(error: HTTPException) -> tuple[str, int]:
    db.session.rollback()
    status = error.code or 500
    message = {404: "页面不存在", 405: "不支持该请求方法"}.get(status, "请求无法处理")
    return _page("console/error.html", status, status=status, message=message, problems=[], back=None)


def _china(moment: datetime | None) -> str:
    """The templates' `china`: the China time to the minute, a dash for a time not set."""
    return china_clock(moment) if moment else "—"


# -- login and logout ---------------------------------------------------------------------------------------

@bp.route("/login", methods=["GET", "POST"])
@limiter.limit(lambda: current_app.config["ECERT_RATELIMIT_TOKEN"], methods=["POST"])  # per client address
@public
def login() -> Any:
    """The login form; a successful login starts a new session (new token, new CSRF secret)."""
    if request.method == "GET":
        if staff_auth.current_staff() is not None:
            return redirect(url_for("console.queue"))
        return _page("console/login.html", next=staff_auth.safe_next(request.args.get("next")))
    username = request.form.get("username", "")
    target = staff_auth.safe_next(request.form.get("next"))
    origin = Actor(kind="staff", id="unknown", **request_actor_context())
    try:
        # `commit`: the attempt is counted and committed before the slow password check (see authenticate).
        account = staff_service.authenticate(db.session(), staff_auth.password_hasher(), username=username,
                                             password=request.form.get("password", ""), origin=origin, now=now(),
                                             commit=db.session.commit)
    except DomainError as error:
        finish_failed_request(error)
        response = render_template("console/login.html", staff=None, error=error.message, username=username[:64],
                                   next=target)
        return response, error.status, error.headers
    staff_auth.log_in(staff_service.start_session(db.session(), account, now=now(),
                                                  lifetime=staff_auth.session_lifetime()))
    return redirect(target or url_for("console.queue"))


@bp.post("/logout")
@public  # ends the session there is, if any
def logout() -> Any:
    """End the session on the server and forget the cookie."""
    if staff_auth.current_staff() is not None:
        staff_service.end_session(db.session(), g.staff_session, actor=g.actor, now=now())
    staff_auth.log_out()
    return redirect(url_for("console.login"))


# -- the queue ----------------------------------------------------------------------------------------------

def _department_of(account: StaffAccount) -> Any:
    """The queue a staff member sees: their department's, or every department's for city administrators."""
    return None if account.is_city_admin else account.department


@bp.get("/")
@require_staff
def home() -> Any:
    return redirect(url_for("console.queue"))


@bp.get("/objections")
@require_staff
def queue() -> Any:
    """The department's objections, newest first; overdue ones highlighted; filter by status."""
    account: StaffAccount = g.staff
    status = request.args.get("status", "")
    if status not in STATUS_FILTERS:
        raise ValidationFailed.for_field("status", "invalid", "未知的异议状态")
    department = _department_of(account)
    departments = catalog_service.list_departments(db.session()) if account.is_city_admin else []
    chosen = request.args.get("dept", "") if account.is_city_admin else ""
    if chosen:  # a city administrator may look at one department's queue
        department = next((d for d in departments if d.code == chosen), None)
        if department is None:
            raise ValidationFailed.for_field("dept", "invalid", "未知的部门")
    moment = now()
    page = objection_queue.department_queue(db.session(), department=department, status=status or None,
                                            limit=PAGE_SIZE, cursor=request.args.get("cursor") or None, now=moment)
    rows = [{"objection": item, "overdue": objection_views.overdue(item, moment),
             "status_label": objection_answers.STATUS_LABELS.get(item.status, item.status),
             "filer_label": objection_views.FILER_LABELS.get(item.filer_kind, item.filer_kind)}
            for item in page.items]
    return _page("console/queue.html", rows=rows, status=status, filters=STATUS_FILTERS, departments=departments,
                 dept=chosen, next_cursor=page.next_cursor, city_admin=account.is_city_admin)


# -- one objection ------------------------------------------------------------------------------------------

def _objection(public_id: str) -> Objection:
    """The objection if it is in the caller's queue; another department's is a 404, as if it did not exist."""
    account: StaffAccount = g.staff
    return objection_queue.get_for_department(db.session(), public_id[:64], department=_department_of(account))


@bp.get("/objections/<public_id>")
@require_staff
def objection(public_id: str) -> Any:
    """The objection with the disputed values, the filer's statement, evidence and timeline (an audited read)."""
    found = _objection(public_id)
    view = objection_views.objection_view(db.session(), field_cipher(), found, now=now(), actor=g.actor)
    account: StaffAccount = g.staff
    return _page("console/objection.html", view=view, can_act=not account.is_city_admin,
                 is_open=found.status in OPEN_STATES, submitted=found.status == SUBMITTED)


@bp.get("/objections/<public_id>/evidence/<n>")  # not <int:n>: the URL is checked after the login, not before
@require_staff
def evidence(public_id: str, n: str) -> Any:
    """One cleaned evidence image, only through the console's login (an audited read)."""
    found = _objection(public_id)
    position = int(n) if _POSITION.fullmatch(n) else 0  # no image has position 0: a 404 like any missing one
    image = objection_evidence.evidence_file(evidence_storage(), found, position)
    record_event(db.session(), actor=g.actor, action="objection.evidence_viewed", now=now(),
                 object_type="objection", object_id=found.public_id, details={"position": position})
    response = Response(image.data, mimetype=image.media_type)
    response.headers["Content-Disposition"] = f'inline; filename="evidence-{position}"'
    return response


@bp.post("/objections/<public_id>/accept")
@require_department_staff
def accept(public_id: str) -> Any:
    """受理: take the objection up."""
    found = _objection(public_id)
    objection_answers.accept_objection(db.session(), found, actor=g.actor, now=now())
    return redirect(url_for("console.objection", public_id=found.public_id))


@bp.post("/objections/<public_id>/reject")
@require_department_staff
def reject(public_id: str) -> Any:
    """驳回: the data is right; the reason is shown to the filer."""
    found = _objection(public_id)
    objection_answers.reject_objection(db.session(), found, reason=request.form.get("reason", ""), actor=g.actor,
                                       now=now())
    return redirect(url_for("console.objection", public_id=found.public_id))


# -- resolve: correct the fields, reissue, link the new version ---------------------------------------------------

def _shown(value: Any) -> str:
    """A face value as a form shows it."""
    if value is None:
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


def _correction_form(found: Objection) -> dict[str, Any]:
    certificate: Certificate = found.certificate
    content = certificate_service.decrypt(field_cipher(), certificate)
    claimed = {d["field"]: d["claimed_value"] for d in objection_views.disputed_fields(field_cipher(), found)}
    specs = definition_as_issued(db.session(), certificate)["fields"]
    fields = [{"spec": spec, "value": _shown(content.fields.get(spec["name"])),
               "claimed": claimed.get(spec["name"])} for spec in specs]
    holder = {"value": content.holder_name, "claimed": claimed.get(objection_checks.HOLDER_NAME_FIELD)}
    return {"fields": fields, "holder": holder, "content": content}


def _submitted_value(spec: dict[str, Any], raw: str) -> Any:
    text = raw.strip()
    if text == "":
        return None
    if spec["type"] == "boolean":
        if text not in ("true", "false"):
            raise ValidationFailed.for_field(f"fields.{spec['name']}", "invalid", f"{spec['label']}：应为“是”或“否”")
        return text == "true"
    return text


def _changes(form: dict[str, Any], submitted: Any) -> dict[str, Any]:
    """The corrected values that differ from the current version; nothing changed is a 422."""
    fields: dict[str, Any] = {}
    for item in form["fields"]:
        spec = item["spec"]
        raw = submitted.get(FIELD_PREFIX + spec["name"])
        if raw is None or raw.strip() == item["value"]:
            continue
        fields[spec["name"]] = _submitted_value(spec, raw)
    changes: dict[str, Any] = {"fields": fields} if fields else {}
    holder_name = submitted.get("holder_name", "").strip()
    if holder_name and holder_name != form["holder"]["value"]:
        if len(holder_name) > 100 or any(ord(c) < 32 for c in holder_name):
            raise ValidationFailed.for_field("holder_name", "invalid", "持证主体名称应为 1–100 个字符，不含控制字符")
        changes["holder_name"] = holder_name
    if not changes:
        raise ValidationFailed.for_field("fields", "unchanged", "没有修改任何字段：请填写更正后的值")
    return changes


def _open_for_resolution(public_id: str) -> Objection:
    found = _objection(public_id)
    if found.status not in OPEN_STATES:
        raise objection_errors.ObjectionTransitionConflict(
            f"异议当前状态为「{objection_answers.STATUS_LABELS[found.status]}」，不能更正",
            details={"status": found.status, "event": "resolved"})
    return found


@bp.get("/objections/<public_id>/resolve")
@require_department_staff
def correction(public_id: str) -> Any:
    """The correction form, pre-filled with the certificate's current face (an audited read)."""
    found = _open_for_resolution(public_id)
    form = _correction_form(found)
    record_event(db.session(), actor=g.actor, action="objection.correction_opened", now=now(),
                 object_type="objection", object_id=found.public_id,
                 details={"certificate": found.certificate.identifier})
    return _page("console/resolve.html", objection=found, form=form,
                 type_name=found.certificate.certificate_type.name, identifier=found.certificate.identifier)


@bp.post("/objections/<public_id>/resolve")
@require_department_staff
def resolve(public_id: str) -> Any:
    """Reissue the certificate with the corrected fields and link the new version to the objection: one transaction."""
    found = _open_for_resolution(public_id)
    certificate: Certificate = found.certificate
    account: StaffAccount = g.staff
    if account.department is None or certificate.issuer_department_id != account.department.id:
        raise Forbidden("只能更正本部门签发的证照", code="not_certificate_issuer")
    changes = _changes(_correction_form(found), request.form)
    reason = clean_text(request.form.get("reason", "").strip(), MAX_REASON) or "根据异议更正"
    moment = now()
    issuer = Issuer(deps(), account.department, actor=g.actor, now=moment)
    successor = certificate_service.reissue_certificate(db.session(), issuer, certificate, changes=changes,
                                                        reason=reason)
    objection_answers.resolve_objection(db.session(), found, corrected_identifier=successor.identifier,
                                        actor=g.actor, now=moment, note=reason)
    return redirect(url_for("console.objection", public_id=found.public_id))
