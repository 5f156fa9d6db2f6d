"""Public Token Status Lists (IETF draft-ietf-oauth-status-list): GET /status-lists/{issuer}/{list}."""

from __future__ import annotations

import hashlib
import re
from typing import Any

import jwt
from flask import Response, request
from flask_openapi3 import APIBlueprint, Tag
from pydantic import BaseModel, Field

from backend.auth.access import public
from backend.core.context import deps, now
from backend.errors import NotFound
from backend.extensions import db
from backend.keys.status_lists import get_status_list, published_token
from backend.schemas import COMMON_ERRORS, error_responses

MEDIA_TYPE = "application/statuslist+jwt"
_USCC = re.compile(r"[0-9A-Z]{18}")
_MAX_LIST_NUMBER = 2**31 - 1  # the column is a 32-bit integer on PostgreSQL

bp = APIBlueprint("status_lists", __name__, abp_tags=[Tag(name="public", description="公开接口")])

_CACHE_HEADERS = {
    "ETag": {"description": "strong entity tag of the token", "schema": {"type": "string"}},
    "Cache-Control": {"description": "public, max-age ≤ half the token's ttl", "schema": {"type": "string"}},
}
STATUS_LIST_RESPONSES: dict[Any, Any] = {
    200: {"description": "the signed status list token (typ statuslist+jwt, 2 bits per entry)",
          "headers": _CACHE_HEADERS,
          "content": {MEDIA_TYPE: {"schema": {"type": "string", "description": "compact JWS"}}}},
    304: {"description": "Not Modified: the token matching If-None-Match is still current",
          "headers": _CACHE_HEADERS},
    **error_responses(*COMMON_ERRORS, 404),
}


class StatusListPath(BaseModel):
    issuer: str = Field(description="统一社会信用代码 of the issuing department")
    list: int = Field(description="list number within the issuer, from 1")


def _cache_headers(token: str) -> dict[str, str]:
    claims = jwt.decode(token, options={"verify_signature": False})  # our own token, just signed or cached
    ttl, remaining = int(claims["ttl"]), int(claims["exp"]) - int(now().timestamp())
    # An HTTP cache must never hold the token past half its ttl (when we re-sign it) nor past its expiry.
    max_age = max(0, min(ttl // 2, remaining))
    etag = hashlib.sha256(token.encode("ascii")).hexdigest()[:32]
    return {"ETag": f'"{etag}"', "Cache-Control": f"public, max-age={max_age}"}


@bp.get("/status-lists/<issuer>/<int:list>", responses=STATUS_LIST_RESPONSES, security=[])
@public
def status_list(path: StatusListPath) -> Response:
    """The issuer's signed status list token (statuslist+jwt): 0 valid, 1 invalid, 2 suspended, 3 superseded."""
    if not _USCC.fullmatch(path.issuer) or not 1 <= path.list <= _MAX_LIST_NUMBER:
        raise NotFound("状态列表不存在", code="status_list_not_found")
    found = get_status_list(db.session(), path.issuer, path.list)
    token = published_token(deps(), found, now=now())
    headers = _cache_headers(token)
    if request.if_none_match.contains_weak(headers["ETag"].strip('"')):
        return Response(status=304, headers=headers)
    return Response(token, content_type=MEDIA_TYPE, headers=headers)
