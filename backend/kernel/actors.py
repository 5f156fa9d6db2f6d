"""Who performs an action, for which department, and from where: passed to every service."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Actor:
    kind: str  # client | citizen | staff | operator | system
    id: str
    department_code: str | None = None
    source_ip: str | None = None
    request_id: str | None = None

    @classmethod
    def system(cls, name: str = "scheduler") -> Actor:
        return cls(kind="system", id=name)

    @classmethod
    def operator(cls, name: str) -> Actor:
        """A person running a `flask` command on a server."""
        return cls(kind="operator", id=name)
