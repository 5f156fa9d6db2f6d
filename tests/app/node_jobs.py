"""One app node's job runner for test_two_nodes.py: on each line read from stdin, every `flask --app wsgi jobs …`
command at once, each COPIES times (as a service and a cron entry might overlap), on threads of this process; then
one JSON line on stdout with how each ended and what it said."""

from __future__ import annotations

import io
import json
import os
import sys
import threading
import time
import traceback
from typing import IO, Any

COPIES = int(sys.argv[1]) if len(sys.argv) > 1 else 1


class ThreadOutput:
    """The runner's sys.stdout: what a job's thread writes (its `click.echo`) goes to that job's own buffer, the rest
    to `fallback`. Text only, as click expects of a text stream (it probes with bytes, which must fail)."""

    encoding, errors = "utf-8", "strict"

    def __init__(self, fallback: IO[str]) -> None:
        self.fallback = fallback
        self.buffers: dict[int, io.StringIO] = {}

    def write(self, text: str) -> int:
        return self.buffers.get(threading.get_ident(), self.fallback).write(text)

    def flush(self) -> None:
        self.fallback.flush()

    def isatty(self) -> bool:
        return False


def run_job(cli: Any, output: ThreadOutput, job: str, results: dict[str, list[dict[str, Any]]]) -> None:
    """`flask --app wsgi jobs JOB`, through Flask's own command line (the app is loaded already)."""
    started, said = time.monotonic(), output.buffers.setdefault(threading.get_ident(), io.StringIO())
    outcome: dict[str, Any]
    try:
        code = cli.main(args=["--app", "wsgi", "jobs", job], prog_name="flask", standalone_mode=False)
        outcome = {"exit": code or 0}
    except SystemExit as exit_:
        outcome = {"exit": exit_.code or 0}
    except BaseException:
        outcome = {"exit": "exception", "error": traceback.format_exc()}
    del output.buffers[threading.get_ident()]
    outcome.update(seconds=round(time.monotonic() - started, 3), output=said.getvalue())
    results[job].append(outcome)


def main() -> None:
    protocol, output = sys.stdout, ThreadOutput(sys.stderr)
    sys.stdout = output  # type: ignore[assignment]  # a text stream as far as click and print are concerned
    sys.path.insert(0, os.getcwd())
    from flask.cli import cli

    import wsgi  # the app, built once before the threads start (`--app wsgi` finds it imported)

    jobs = sorted(wsgi.app.cli.commands["jobs"].commands)  # type: ignore[attr-defined]  # a click group
    protocol.write(json.dumps({"ready": jobs, "pid": os.getpid()}) + "\n")
    protocol.flush()
    for _line in sys.stdin:
        results: dict[str, list[dict[str, Any]]] = {job: [] for job in jobs}
        threads = [threading.Thread(target=run_job, args=(cli, output, job, results), name=f"jobs-{job}")
                   for job in jobs for _ in range(COPIES)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        protocol.write(json.dumps({"round": results}) + "\n")
        protocol.flush()
    sys.stderr.flush()
    os._exit(0)  # input ended: the test is done with this node; skip the interpreter's slow teardown


if __name__ == "__main__":
    main()
