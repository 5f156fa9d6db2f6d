"""Pydantic models shared by both faces: the error shape and common building blocks of the OpenAPI document."""

from __future__ import annotations

import copy
from datetime import date
from typing import Annotated, Any

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, WithJsonSchema

from backend.catalog.face import EARLIEST_DATE, LATEST_DATE, check_date_range


class StrictModel(BaseModel):
    """Request models reject unknown fields."""

    model_config = ConfigDict(extra="forbid")

    @classmethod
    def model_json_schema(cls, *args: Any, **kwargs: Any) -> dict[str, Any]:
        """The default schema is built once per model: flask-openapi3 asks a query model for it on every request
        (to find its list fields), and building it cost more than a whole GET /healthz."""
        if args or kwargs:
            return super().model_json_schema(*args, **kwargs)
        cached = _DEFAULT_SCHEMAS.get(cls)
        if cached is None:
            cached = _DEFAULT_SCHEMAS[cls] = super().model_json_schema()
        return copy.deepcopy(cached)  # callers may change what they get


_DEFAULT_SCHEMAS: dict[type[BaseModel], dict[str, Any]] = {}


# The two query fields of every paginated list (backend/core/db/paging.py): one page size, one opaque cursor.
LIMIT_FIELD = Field(default=20, ge=1, le=100, description="page size, 1–100")
CURSOR_FIELD = Field(default=None, max_length=200, description="`next_cursor` of the previous page")


# A date in a request body: YYYY-MM-DD within the one accepted range (backend/catalog/face.py), else a 422 naming
# the field. formatMinimum/formatMaximum: the range in the document's schema (the JSON Schema vocabulary for
# formatted strings, as Ajv reads it), besides the description.
DATE_RANGE = f"{EARLIEST_DATE.isoformat()} … {LATEST_DATE.isoformat()}"
InputDate = Annotated[date, AfterValidator(check_date_range), WithJsonSchema({
    "type": "string", "format": "date", "formatMinimum": EARLIEST_DATE.isoformat(),
    "formatMaximum": LATEST_DATE.isoformat(), "description": f"YYYY-MM-DD, {DATE_RANGE}"})]


class ErrorBody(BaseModel):
    code: str = Field(description="stable machine-readable code, e.g. grant_already_used")
    message: str = Field(description="zh-CN message for people")
    details: dict[str, Any] | None = Field(default=None, description="field errors, limits, reasons")


class ErrorResponse(BaseModel):
    """The one error shape of every endpoint (DESIGN §7)."""

    error: ErrorBody


def _too_many_requests() -> dict[str, Any]:
    """429 in the one error shape, with the Retry-After header every 429 carries (a new dict each time: the document
    generator edits what it is given)."""
    return {"description": "Too Many Requests",
            "headers": {"Retry-After": {"description": "seconds to wait before trying again",
                                        "schema": {"type": "integer", "minimum": 0}}},
            "content": {"application/json": {"schema": {"$ref": "#/components/schemas/ErrorResponse"}}}}


def error_responses(*statuses: int) -> dict[Any, Any]:
    return {status: _too_many_requests() if status == 429 else ErrorResponse for status in statuses}


# Errors every endpoint can answer.
COMMON_ERRORS = (400, 413, 429, 503)  # 503: database busy (Retry-After) or unavailable
AUTH_ERRORS = (401, 403)
