"""Who may call each route: declared on the route, checked before anything reads the request."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol, TypeVar

from flask import Flask, current_app, request
from flask.typing import ResponseReturnValue

F = TypeVar("F", bound=Callable[..., Any])

_ATTRIBUTE = "__ecert_access__"
# Routes Flask adds by itself.
_BUILT_IN_PUBLIC = frozenset({"static"})


class Access(Protocol):
    """A route's caller. `enforce` authenticates the caller (setting g.actor and its face's own names) or raises
    401/403; it may instead return the response to send (the console's redirect to its login page)."""

    def enforce(self) -> ResponseReturnValue | None: ...


@dataclass(frozen=True)
class Public:
    """Anyone: login and token endpoints, keys, status lists, the scan-to-verify page, health."""

    def enforce(self) -> None:
        return None


PUBLIC = Public()


def declare(access: Access) -> Callable[[F], F]:
    """Route decorator factory: `access` is who may call the view. Place it below the route decorator."""

    def decorator(view: F) -> F:
        if access_of(view) is not None:
            raise TypeError(f"{view.__qualname__} declares its caller twice")
        setattr(view, _ATTRIBUTE, access)
        return view

    return decorator


def public(view: F) -> F:
    """Route decorator: anyone may call this route."""
    return declare(PUBLIC)(view)


def access_of(view: Callable[..., Any]) -> Access | None:
    """The caller a view declares, through any wrappers (flask-openapi3's, flask-limiter's) around it."""
    current: Any = view
    while current is not None:
        access: Access | None = getattr(current, _ATTRIBUTE, None)
        if access is not None:
            return access
        current = getattr(current, "__wrapped__", None)
    return None


def route_access(app: Flask, endpoint: str) -> Access | None:
    if endpoint in _BUILT_IN_PUBLIC:
        return PUBLIC
    return access_of(app.view_functions[endpoint])


def check_routes(app: Flask) -> None:
    """Every route declares its caller; an app with an undeclared route is not built."""
    endpoints = {rule.endpoint for rule in app.url_map.iter_rules()}
    undeclared = sorted(endpoint for endpoint in endpoints if route_access(app, endpoint) is None)
    if undeclared:
        raise RuntimeError(f"routes that do not declare who may call them: {', '.join(undeclared)}")


def enforce_access() -> ResponseReturnValue | None:
    """The request hook: authenticate the caller the matched route declares. An unmatched URL passes on to its
    404/405; a route without a declaration (check_routes makes that impossible) is refused, never served."""
    endpoint = request.endpoint
    if endpoint is None or request.routing_exception is not None:
        return None
    access = route_access(current_app, endpoint)
    if access is None:
        raise RuntimeError(f"route {endpoint} declares no caller")
    return access.enforce()
