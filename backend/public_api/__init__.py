"""Public endpoints for anyone: health, published keys (JWKS), the OpenAPI document, token status lists."""

from __future__ import annotations

from flask_openapi3 import APIBlueprint, OpenAPI

from backend.public_api.public import bp as public_bp
from backend.public_api.status import bp as status_bp

blueprints: tuple[APIBlueprint, ...] = (public_bp, status_bp)


def register(app: OpenAPI) -> None:
    for blueprint in blueprints:
        app.register_api(blueprint)
