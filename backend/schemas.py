"""Pydantic models shared by both faces: the error shape and common building blocks of the OpenAPI document."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field


class StrictModel(BaseModel):
    """Request models reject unknown fields."""

    model_config = ConfigDict(extra="forbid")


class ErrorBody(BaseModel):
    code: str = Field(description="stable machine-readable code, e.g. grant_already_used")
    message: str = Field(description="zh-CN message for people")
    details: dict[str, Any] | None = Field(default=None, description="field errors, limits, reasons")


class ErrorResponse(BaseModel):
    """The one error shape of every endpoint (DESIGN §7)."""

    error: ErrorBody


def error_responses(*statuses: int) -> dict[Any, Any]:
    return dict.fromkeys(statuses, ErrorResponse)


# Errors every endpoint can answer.
COMMON_ERRORS = (400, 413, 429)
AUTH_ERRORS = (401, 403)
