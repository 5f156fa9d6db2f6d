"""Citizen-facing API (/api/v1) behind the city mini-app: wallet, show codes, grants, objections."""

from __future__ import annotations

from flask_openapi3 import APIBlueprint, OpenAPI

from miniapp_api.access_requests import bp as access_requests_bp
from miniapp_api.auth import bp as auth_bp
from miniapp_api.cards import bp as cards_bp
from miniapp_api.grants import bp as grants_bp
from miniapp_api.notifications import bp as notifications_bp
from miniapp_api.objections import bp as objections_bp
from miniapp_api.showcodes import bp as showcodes_bp
from miniapp_api.usage import bp as usage_bp
from miniapp_api.wallet import bp as wallet_bp

blueprints: tuple[APIBlueprint, ...] = (auth_bp, wallet_bp, cards_bp, notifications_bp, usage_bp,
                                          showcodes_bp, objections_bp, grants_bp, access_requests_bp)


def register(app: OpenAPI) -> None:
    for blueprint in blueprints:
        app.register_api(blueprint)
