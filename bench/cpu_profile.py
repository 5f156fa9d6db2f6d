"""CPU per request (not a test, not a load benchmark): the endpoints of `run.py`, in-process through Flask's test
client, timed with `time.process_time` and compared with GET /healthz.

On a shared, busy machine wall-clock requests/s swing with the neighbours' load; the CPU a request costs does not,
so this is what to steer by while making a hot path cheaper. The ratio printed (healthz CPU / endpoint CPU) is what
`run.py`'s `vs healthz` would be if the server were CPU-bound and nothing else differed (it leaves out gunicorn's
and the socket's share of the work, which is the same for every endpoint, so it reads a little low).

    .venv/bin/python bench/cpu_profile.py --only verify --only "scan json" --requests 500
    .venv/bin/python bench/cpu_profile.py --only verify --profile 25     # plus the top 25 functions (cProfile)
    .venv/bin/python bench/cpu_profile.py --database-url postgresql://postgres@127.0.0.1:5432/postgres
"""

from __future__ import annotations

import argparse
import cProfile
import io
import os
import pstats
import shutil
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))  # run.py, as a module

import run


class InProcessServer(run.Server):
    """`run.Server` whose set-up requests go through the app's test client instead of a socket."""

    client: Any = None

    def call(self, method: str, path: str, headers: dict[str, str] | None = None, body: str | None = None,
             expect: int = 200) -> Any:
        response = self.client.open(path, method=method, headers=headers or {}, data=body)
        if response.status_code != expect:
            raise RuntimeError(f"{method} {path} answered {response.status_code}: {response.data[:300]!r}")
        return response.get_json()


def send(client: Any, endpoint: run.Endpoint, headers: dict[str, str], request: run.Request) -> None:
    path, body = request
    response = client.open(path, method=endpoint.method, headers=headers, data=body)
    if response.status_code != endpoint.expected_status:
        raise RuntimeError(f"{endpoint.name}: {path} answered {response.status_code}: {response.data[:300]!r}")


def measure(server: InProcessServer, endpoint: run.Endpoint, count: int, profile_top: int) -> float:
    """CPU seconds per request over `count` requests (after warm-up)."""
    headers = endpoint.headers(server)
    requests, once = run.prepare(server, endpoint, count)
    for i in range(run.WARMUP_REQUESTS):
        send(server.client, endpoint, headers, requests[i % len(requests)])
    timed = requests[run.WARMUP_REQUESTS:] if once else requests
    profiler = cProfile.Profile() if profile_top else None
    started = time.process_time()
    if profiler:
        profiler.enable()
    for i in range(count):
        send(server.client, endpoint, headers, timed[i % len(timed)])
    if profiler:
        profiler.disable()
    spent = (time.process_time() - started) / count
    if profiler:
        out = io.StringIO()
        pstats.Stats(profiler, stream=out).sort_stats("cumulative").print_stats(profile_top)
        print(out.getvalue())
        out = io.StringIO()  # the project's own functions, cumulative
        pstats.Stats(profiler, stream=out).sort_stats("cumulative").print_stats(r"/(backend|miniapp_api)/", profile_top)
        print(out.getvalue())
        out = io.StringIO()
        pstats.Stats(profiler, stream=out).sort_stats("tottime").print_stats(profile_top)
        print(out.getvalue())
    return spent


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--only", action="append", metavar="NAME", help="endpoint of run.py (repeatable)")
    parser.add_argument("--requests", type=int, default=400, help="timed requests per endpoint (default 400)")
    parser.add_argument("--rounds", type=int, default=2, help="measurements per endpoint; the lowest counts")
    parser.add_argument("--profile", type=int, default=0, metavar="N", help="also print cProfile's top N functions")
    parser.add_argument("--database-url", help="PostgreSQL server URL (a scratch database is created and dropped)")
    parser.add_argument("--log-level", default="INFO", help="ECERT_LOG_LEVEL (default INFO, as run.py)")
    args = parser.parse_args()
    names = args.only or [e.name for e in run.ENDPOINTS if e.target is not None]
    endpoints = [run.ENDPOINTS[0], *(e for e in run.ENDPOINTS if e.name in names and e.name != run.BASELINE)]

    instance = Path(tempfile.mkdtemp(prefix="ecert-cpu-"))
    try:
        with run.scratch_database(instance, args.database_url, keep=False) as database_url:
            base_url = "http://127.0.0.1:8000"
            env = run.server_env(instance, database_url, base_url, args.log_level)
            run.flask_command(env, "db", "upgrade")
            run.flask_command(env, "demo", "load")
            os.environ.update(env)
            from backend.app import create_app
            from backend.extensions import db

            app = create_app()
            server = InProcessServer(base_url, instance, env)
            server.client = app.test_client()
            server._app = app
            # The request log goes to stderr as in production, but not onto this terminal.
            import logging

            for handler in logging.getLogger("ecert").handlers:
                handler.stream = open(os.devnull, "w")  # type: ignore[attr-defined]  # noqa: SIM115
            results: dict[str, float] = {}
            for endpoint in endpoints:
                best = min(measure(server, endpoint, args.requests, 0) for _ in range(args.rounds))
                if args.profile and endpoint.name != run.BASELINE:
                    measure(server, endpoint, args.requests, args.profile)
                results[endpoint.name] = best
            with app.app_context():
                db.engine.dispose()
    finally:
        shutil.rmtree(instance, ignore_errors=True)
    baseline = results[run.BASELINE]
    print(f"{'endpoint':<18} {'CPU ms/req':>10} {'healthz/endpoint':>17} {'target':>7}")
    for endpoint in endpoints:
        spent = results[endpoint.name]
        target = f"{endpoint.target:.2f}" if endpoint.target else "-"
        print(f"{endpoint.name:<18} {spent * 1000:>10.3f} {baseline / spent:>17.3f} {target:>7}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
