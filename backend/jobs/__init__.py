"""Background work run by `flask jobs …` or in process: batch imports, callback delivery."""

from __future__ import annotations

from flask import Flask

from backend.core.launcher import EXTENSION, Job, JobLauncher
from backend.jobs import callbacks, imports


def register(app: Flask) -> None:
    """Give the app its job launcher, through which the faces start these jobs."""
    launcher = app.extensions[EXTENSION] = JobLauncher()
    launcher.register("imports", Job(run=imports.run_pending, start=imports.start_in_process,
                                     after_response=imports.wake_after_response))
    launcher.register("callbacks", Job(run=callbacks.deliver, after_response=callbacks.deliver_after_response))
