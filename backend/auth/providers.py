"""Login providers behind one interface: each turns a login request into a VerifiedIdentity."""

from __future__ import annotations

from datetime import datetime
from typing import Any, Protocol

from flask import Flask

from backend.errors import Forbidden, ValidationFailed
from backend.security.identifiers import HolderCodeType, validate_holder_code
from backend.services.citizen_auth import CompanyClaim, VerifiedIdentity


class LoginProvider(Protocol):
    name: str

    def authenticate(self, request: dict[str, Any], *, now: datetime) -> VerifiedIdentity: ...


class DevProvider:
    """Local development, the demo and tests: trusts the name and ID number it is given. Never in production."""

    name = "dev"

    def __init__(self, enabled: bool) -> None:
        self.enabled = enabled

    def authenticate(self, request: dict[str, Any], *, now: datetime) -> VerifiedIdentity:
        if not self.enabled:
            raise Forbidden("开发登录已关闭", code="provider_disabled")
        id_type = request["id_type"]
        if id_type == HolderCodeType.USCC:
            raise ValidationFailed.for_field("id_type", "not_a_person", "登录的必须是自然人")
        id_number = validate_holder_code(id_type, request["id_number"], field="id_number")
        companies = tuple(CompanyClaim(code=c["code"], name=c["name"]) for c in request.get("companies") or ())
        return VerifiedIdentity(provider="dev", subject=f"{id_type}:{id_number}", name=request["name"],
                                id_type=id_type, id_number=id_number, assurance_level="dev", companies=companies)


def providers(app: Flask) -> dict[str, LoginProvider]:
    registry: dict[str, LoginProvider] | None = app.extensions.get("ecert.login_providers")
    if registry is None:
        registry = {"dev": DevProvider(app.config["ECERT_DEV_LOGIN"])}
        app.extensions["ecert.login_providers"] = registry
    return registry
