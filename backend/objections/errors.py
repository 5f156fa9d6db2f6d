"""Errors of the objections area: a missing objection, a transition its state refuses, a wrong correction."""

from __future__ import annotations

from backend.errors import Conflict, NotFound, ValidationFailed


class ObjectionNotFound(NotFound):
    """Someone else's objection, or another department's queue: not there at all (no existence oracle)."""

    code = "objection_not_found"
    message = "异议不存在"


class ObjectionTransitionConflict(Conflict):
    code = "objection_invalid_transition"
    message = "异议当前状态不允许此操作"


class CorrectionRefused(ValidationFailed):
    code = "objection_correction_invalid"
    message = "更正后的证照不是所异议证照的新版本"
