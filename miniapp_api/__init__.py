"""Citizen-facing API (/api/v1) behind the city mini-app: wallet, show codes, grants, objections."""

from __future__ import annotations

from flask_openapi3 import APIBlueprint, OpenAPI

from miniapp_api.auth import bp as auth_bp

blueprints: tuple[APIBlueprint, ...] = (auth_bp,)


def register(app: OpenAPI) -> None:
    for blueprint in blueprints:
        app.register_api(blueprint)
