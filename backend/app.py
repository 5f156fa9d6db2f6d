"""Application factory: reads like a table of contents."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from flask_openapi3 import Info, OpenAPI
from werkzeug.middleware.proxy_fix import ProxyFix

import miniapp_api
from backend import cli, dept_api, jobs, public_api
from backend.audit.chain import record_refusal
from backend.auth.access import check_routes, enforce_access
from backend.config import PROJECT_ROOT, load_settings
from backend.core import caches
from backend.core.edge import EdgeHooks, register_edge, validation_error
from backend.core.private_files import private_directory
from backend.extensions import db, init_limiter
from backend.schemas import ErrorResponse
from backend.web import console, verify_page

SECURITY_SCHEMES: dict[str, Any] = {
    "clientBearer": {
        "type": "http",
        "scheme": "bearer",
        "bearerFormat": "JWT",
        "description": "部门系统访问令牌（POST /gov/v1/oauth/token 获取）",
    },
    "citizenBearer": {
        "type": "http",
        "scheme": "bearer",
        "bearerFormat": "JWT",
        "description": "市民访问令牌（POST /api/v1/auth/login 获取）",
    },
}


def create_app(overrides: Mapping[str, Any] | None = None, *, commands: bool = True) -> OpenAPI:
    """The whole platform. `commands`: with the `flask` commands (backend.cli's groups and Flask-Migrate's `db`),
    which gunicorn's workers do without (wsgi.py); a command of backend.cli's groups runs in a lighter app still
    (backend.command_app)."""
    settings = load_settings(overrides=overrides)
    app = OpenAPI(
        __name__,
        info=Info(
            title="信阳市电子证照平台 API",
            version="1.0.0",
            description="City e-certificate platform: department API (/gov/v1), citizen API (/api/v1), "
            "public endpoints.",
        ),
        security_schemes=SECURITY_SCHEMES,
        validation_error_status=422,
        validation_error_model=ErrorResponse,
        validation_error_callback=validation_error,
        doc_ui=False,
        instance_path=settings["ECERT_INSTANCE_PATH"],
        template_folder=str(PROJECT_ROOT / "templates"),
    )
    app.config.from_mapping(settings)
    private_directory(app.instance_path)  # the database, secrets, spool and evidence live there by default
    register_extensions(app)
    register_blueprints(app)
    check_routes(app)  # every route declares who may call it (backend.auth.access)
    register_edge(app, EdgeHooks(check_access=enforce_access, record_refusal=record_refusal))
    jobs.register(app)  # the faces start background jobs through the app's launcher (backend.core.launcher)
    if commands:
        register_commands(app)
    return app


def register_extensions(app: OpenAPI) -> None:
    if app.config["ECERT_TRUSTED_PROXIES"]:
        app.wsgi_app = ProxyFix(  # type: ignore[method-assign]
            app.wsgi_app,
            x_for=app.config["ECERT_TRUSTED_PROXIES"],
            x_proto=app.config["ECERT_TRUSTED_PROXIES"],
        )
    db.init_app(app)
    init_limiter(app)  # its hooks skipped where no limit can apply (GET /healthz)
    caches.init_app(app)  # what the app remembers between requests: never another app's


def register_commands(app: OpenAPI) -> None:
    from flask_migrate import Migrate  # here, not at the top: alembic (~11 MB) is for the app that runs commands

    Migrate(app, db, directory=str(PROJECT_ROOT / "migrations"), render_as_batch=True, compare_type=True)
    cli.register(app)


def register_blueprints(app: OpenAPI) -> None:
    public_api.register(app)  # health, JWKS, the OpenAPI document, status lists
    app.register_api(verify_page.bp)
    dept_api.register(app)
    miniapp_api.register(app)
    console.register(app)  # server-rendered staff pages: not part of the API document
