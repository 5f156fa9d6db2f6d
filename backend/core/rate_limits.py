"""Flask-Limiter's request hooks, not run at all on requests that no limit can apply to (GET /healthz, 404s)."""

from __future__ import annotations

from collections.abc import Callable
from functools import partial
from typing import Any

from flask import Flask, request
from flask_limiter import ExemptionScope, Limiter

# What `@limiter.exempt` without flags exempts a route from: every limit but its blueprint's own.
_EVERY_LIMIT = ExemptionScope.APPLICATION | ExemptionScope.DEFAULT | ExemptionScope.META

Hook = Callable[..., Any]


def skip_unlimited_requests(app: Flask, limiter: Limiter) -> None:
    """Wrap the three hooks `limiter.init_app(app)` registered so that they return at once when no limit applies.

    Flask-Limiter resolves every request's limits before it looks at exemptions: on GET /healthz that cost more
    than the rest of the request edge. Whether limits apply is decided once per endpoint. Raises RuntimeError if
    the hooks are not where this expects them (a Flask-Limiter upgrade): the app is then not built, rather than
    built with its limits unchecked.
    """
    if limiter not in app.extensions.get("limiter", ()):
        return  # RATELIMIT_ENABLED is off: Flask-Limiter registered no hooks
    decided: dict[str | None, bool] = {}

    def limited() -> bool:
        endpoint = request.endpoint
        applies = decided.get(endpoint)
        if applies is None:
            applies = decided[endpoint] = _limits_apply(app, limiter, endpoint, request.blueprint)
        return applies

    def skip_before(hook: Hook) -> Hook:
        return lambda: hook() if limited() else None

    def skip_after(hook: Hook) -> Hook:
        return lambda response: hook(response) if limited() else response

    def skip_teardown(hook: Hook) -> Hook:
        return lambda exc: hook(exc) if limited() else None

    _replace(app.before_request_funcs, lambda f: f == limiter._check_request_limit, skip_before)
    _replace(app.after_request_funcs, lambda f: isinstance(f, partial) and f.args == (limiter,), skip_after)
    _replace(app.teardown_request_funcs, lambda f: getattr(f, "__self__", None) is limiter, skip_teardown)


def _limits_apply(app: Flask, limiter: Limiter, endpoint: str | None, blueprint: str | None) -> bool:
    """False when Flask-Limiter would find no limit for the endpoint: none matched (it exempts 404s and 405s), or
    exempt from application, default and meta limits and in no blueprint with limits of its own."""
    if endpoint is None:
        return False
    manager = limiter.limit_manager
    exempt = manager.exemption_scope(app, endpoint, blueprint) & _EVERY_LIMIT == _EVERY_LIMIT
    return not exempt or bool(blueprint and manager.blueprint_limits(app, blueprint))


def _replace(hooks: dict[Any, list[Hook]], is_limiters: Callable[[Hook], bool], wrap: Callable[[Hook], Hook]) -> None:
    app_wide = hooks.get(None, [])
    found = [i for i, hook in enumerate(app_wide) if is_limiters(hook)]
    if len(found) != 1:
        raise RuntimeError(f"Flask-Limiter's request hook not found once among {app_wide!r}")
    app_wide[found[0]] = wrap(app_wide[found[0]])
