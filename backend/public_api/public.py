"""Public endpoints: health, published keys (JWKS) and the OpenAPI document."""

from __future__ import annotations

import hashlib
import json
from typing import Any

from flask import Response, current_app, jsonify, request
from flask_openapi3 import APIBlueprint, OpenAPI, Tag
from pydantic import BaseModel, Field
from sqlalchemy.exc import SQLAlchemyError

from backend.auth.access import public
from backend.core.context import app_caches, keystore
from backend.core.db import probe
from backend.crypto.encryption import DecryptionError
from backend.errors import ServiceUnavailable
from backend.extensions import db, limiter
from backend.keys.keystore import ACTIVE_PLATFORM_KEY, open_platform_key
from backend.schemas import COMMON_ERRORS, error_responses

ERROR_SCHEMA_REF = {"$ref": "#/components/schemas/ErrorResponse"}
OPENAPI_DOCUMENT = {"description": "OpenAPI 3.1", "content": {"application/json": {"schema": {"type": "object"}}}}

HEALTHY = json.dumps({"database": "ok", "status": "ok"}, separators=(",", ":")) + "\n"

bp = APIBlueprint("public", __name__, abp_tags=[Tag(name="public", description="公开接口")])


class HealthResponse(BaseModel):
    status: str = Field(description="ok")
    database: str = Field(description="ok when the database answered")


class JWK(BaseModel):
    model_config = {"extra": "allow"}
    kty: str
    kid: str
    use: str
    alg: str
    crv: str
    x: str
    y: str | None = None


class JWKSet(BaseModel):
    keys: list[JWK]


@bp.get("/healthz", responses={200: HealthResponse, **error_responses(503)}, security=[])
@limiter.exempt
@public
def healthz() -> Response:
    """Liveness and readiness: answers 200 when the database answers."""
    try:
        # One statement, outside the request's session (nothing to commit): reading the platform key is the
        # database's answer, and the master key must open that key, or every signature would fail.
        row = probe.first_row(db.engine, ACTIVE_PLATFORM_KEY)
    except SQLAlchemyError as exc:
        raise ServiceUnavailable("数据库不可用", code="database_unavailable") from exc
    try:
        open_platform_key(row, current_app.config["ECERT_MASTER_KEY"], app_caches().keys)
    except DecryptionError as exc:
        raise ServiceUnavailable("主密钥无法解开平台密钥", code="master_key_mismatch") from exc
    return Response(HEALTHY, mimetype="application/json")


NOT_MODIFIED = {"description": "Not modified (If-None-Match matched the ETag)"}


@bp.get("/.well-known/jwks.json", responses={200: JWKSet, 304: NOT_MODIFIED, **error_responses(*COMMON_ERRORS)},
        security=[])
@public
def jwks() -> Response:
    """Every public key (departments and platform, active and retired) as a JWK Set."""
    body = json.dumps(keystore().jwks(), sort_keys=True, ensure_ascii=False)
    etag = hashlib.sha256(body.encode()).hexdigest()[:32]
    if request.if_none_match.contains(etag):
        return Response(status=304, headers={"ETag": f'"{etag}"', "Cache-Control": "public, max-age=300"})
    return Response(body, mimetype="application/json",
                    headers={"Cache-Control": "public, max-age=300", "ETag": f'"{etag}"'})


def openapi_document(app: OpenAPI) -> dict[str, Any]:
    """flask-openapi3's document, with token forms declared as application/x-www-form-urlencoded."""
    spec: dict[str, Any] = json.loads(json.dumps(app.api_doc))
    for operations in spec.get("paths", {}).values():
        for operation in operations.values():
            if not isinstance(operation, dict):
                continue
            if operation.pop("x-idempotency-key", False):
                operation.setdefault("parameters", []).append({
                    "name": "Idempotency-Key", "in": "header", "required": False,
                    "description": "8–128 printable ASCII characters; the same key and body give the same result",
                    "schema": {"type": "string", "minLength": 8, "maxLength": 128}})
            if operation.pop("x-form-urlencoded", False):
                content = operation["requestBody"]["content"]
                media = content.pop("multipart/form-data")
                media.pop("encoding", None)
                content["application/x-www-form-urlencoded"] = media
            if "422" in operation["responses"]:  # our validation error is one error object, not a list
                operation["responses"]["422"]["content"]["application/json"]["schema"] = ERROR_SCHEMA_REF
    return spec


@bp.get("/openapi.json", responses={200: OPENAPI_DOCUMENT, **error_responses(*COMMON_ERRORS)}, security=[])
@public
def openapi() -> Response:
    """The OpenAPI 3.1 document of every endpoint."""
    cached = current_app.extensions.get("ecert.openapi")
    if cached is None:
        cached = openapi_document(current_app)  # type: ignore[arg-type]
        current_app.extensions["ecert.openapi"] = cached
    return jsonify(cached)
