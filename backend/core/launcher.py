"""The app's background jobs by name: `backend.jobs` registers them when the app is made, and the faces start them
through `job_launcher()` (a face never imports another)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from flask import Response, current_app

EXTENSION = "ecert.jobs"


@dataclass(frozen=True)
class Job:
    """How a job is started: `run` does the work here and now (a `flask jobs` command) and answers what happened;
    `start` makes sure it runs in the background of this process; `after_response` answers what to call once a
    response is out (after the request's commit), or None when the app leaves the work to the scheduled job."""

    run: Callable[..., Any]
    start: Callable[[], None] | None = None
    after_response: Callable[..., Callable[[], None] | None] | None = None


class JobLauncher:
    def __init__(self) -> None:
        self._jobs: dict[str, Job] = {}

    def register(self, name: str, job: Job) -> None:
        if name in self._jobs:
            raise ValueError(f"job {name} registered twice")
        self._jobs[name] = job

    def run(self, name: str, /, **arguments: Any) -> Any:
        return self._jobs[name].run(**arguments)

    def start(self, name: str) -> None:
        start = self._jobs[name].start
        if start is None:
            raise LookupError(f"job {name} does not run in the background of the web process")
        start()

    def after_response(self, response: Response, name: str, /, **arguments: Any) -> None:
        """Have job `name` take the work given by `arguments` once `response` is out, if the app does it in process."""
        after_response = self._jobs[name].after_response
        if after_response is None:
            raise LookupError(f"job {name} takes no work after a response")
        then = after_response(**arguments)
        if then is not None:
            response.call_on_close(then)


def job_launcher() -> JobLauncher:
    """The current app's launcher (set by `backend.jobs.register`)."""
    launcher: JobLauncher = current_app.extensions[EXTENSION]
    return launcher
