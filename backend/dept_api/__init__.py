"""Department-facing API (/gov/v1) for the departments' business systems."""

from __future__ import annotations

from flask_openapi3 import APIBlueprint, OpenAPI

from backend.dept_api.access_requests import bp as access_requests_bp
from backend.dept_api.batches import bp as batches_bp
from backend.dept_api.catalog import bp as catalog_bp
from backend.dept_api.certificates import bp as certificates_bp
from backend.dept_api.counter import bp as counter_bp
from backend.dept_api.grants import bp as grants_bp
from backend.dept_api.notifications import bp as notifications_bp
from backend.dept_api.oauth import bp as oauth_bp
from backend.dept_api.objections import bp as objections_bp
from backend.dept_api.verify import bp as verify_bp

blueprints: tuple[APIBlueprint, ...] = (oauth_bp, catalog_bp, batches_bp, certificates_bp, notifications_bp, verify_bp,
                                      counter_bp, access_requests_bp, objections_bp, grants_bp)


def register(app: OpenAPI) -> None:
    for blueprint in blueprints:
        app.register_api(blueprint)
