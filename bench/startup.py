"""Start-up and memory benchmark (not a test): a command's wall time, `import wsgi`, gunicorn workers' RSS.

Measures, on a throwaway SQLite instance with the demo data: `flask --app wsgi catalog list --json` (wall and CPU
seconds per run), `python -X importtime -c "import wsgi"` as gunicorn imports it, and the RSS of each gunicorn
worker idle and after `--requests` mixed public requests (wrk). Usage: `python bench/startup.py` (bench/README.md).
"""

from __future__ import annotations

import argparse
import os
import re
import resource
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

PROJECT_ROOT = Path(__file__).resolve().parent.parent
COMMAND = ["catalog", "list", "--json"]
# Health, keys, the OpenAPI document, a refused token, a scan of a code that is not ours, an unknown path.
MIXED_PATHS = ["/healthz", "/.well-known/jwks.json", "/openapi.json", "/gov/v1/catalog/types", "/v/not-a-code",
               "/missing", "/healthz", "/.well-known/jwks.json"]
WRK_SCRIPT = """local paths = {%s}
local i = 0
request = function()
  i = i + 1
  return wrk.format("GET", paths[(i %% #paths) + 1], {["Accept"] = "application/json"})
end
"""


def flask(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "flask", "--app", "wsgi", *args], cwd=PROJECT_ROOT, env=env,
                          capture_output=True, text=True, check=True)


def time_command(env: dict[str, str], runs: int) -> tuple[list[float], list[float]]:
    """Wall and CPU (user + system) seconds of each run of the command."""
    walls, cpus = [], []
    for _ in range(runs):
        before, started = resource.getrusage(resource.RUSAGE_CHILDREN), time.perf_counter()
        flask(env, *COMMAND)
        walls.append(time.perf_counter() - started)
        after = resource.getrusage(resource.RUSAGE_CHILDREN)
        cpus.append(after.ru_utime - before.ru_utime + after.ru_stime - before.ru_stime)
    return walls, cpus


def import_seconds(env: dict[str, str], runs: int) -> list[float]:
    """`import wsgi` as gunicorn does it (not under the flask command): the cumulative time -X importtime reports."""
    seconds = []
    for _ in range(runs):
        result = subprocess.run([sys.executable, "-X", "importtime", "-c", "import wsgi"], cwd=PROJECT_ROOT, env=env,
                                capture_output=True, text=True, check=True)
        line = next(line for line in result.stderr.splitlines() if line.rstrip().endswith("| wsgi"))
        seconds.append(int(line.split("|")[1]) / 1e6)
    return seconds


def worker_rss_mb(master: int) -> list[int]:
    children = Path(f"/proc/{master}/task/{master}/children").read_text().split()
    return sorted(int(re.search(r"VmRSS:\s+(\d+)", Path(f"/proc/{pid}/status").read_text()).group(1)) // 1024
                  for pid in children)


def serve_and_load(env: dict[str, str], workers: int, requests: int, scratch: Path) -> tuple[list[int], list[int], int]:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    base = f"http://127.0.0.1:{port}"
    log = (scratch / "gunicorn.log").open("w")
    server = subprocess.Popen([sys.executable, "-m", "gunicorn", "--bind", f"127.0.0.1:{port}", "--workers",
                               str(workers), "wsgi:app"], cwd=PROJECT_ROOT, env=env, stdout=log,
                              stderr=subprocess.STDOUT, start_new_session=True)
    try:
        deadline = time.monotonic() + 120
        while True:
            try:
                if urllib.request.urlopen(base + "/healthz", timeout=5).status == 200:
                    break
            except OSError:
                if server.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError((scratch / "gunicorn.log").read_text()[-2000:]) from None
                time.sleep(0.2)
        time.sleep(1)
        idle = worker_rss_mb(server.pid)
        script = scratch / "mixed.lua"
        script.write_text(WRK_SCRIPT % ", ".join(f'"{path}"' for path in MIXED_PATHS))
        sent = 0
        while sent < requests:
            output = subprocess.run(["wrk", "-t2", "-c8", "-d10s", "-s", str(script), base], capture_output=True,
                                    text=True, check=True).stdout
            sent += int(re.search(r"(\d+) requests in", output).group(1))
        return idle, worker_rss_mb(server.pid), sent
    finally:
        server.terminate()
        server.wait(15)
        log.close()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=int, default=5, help="runs of the command and of the import (default 5)")
    parser.add_argument("--workers", type=int, default=2, help="gunicorn workers (default 2)")
    parser.add_argument("--requests", type=int, default=100_000, help="mixed requests before the second RSS reading")
    args = parser.parse_args()
    if not shutil.which("wrk"):
        sys.exit("wrk is not on PATH (Debian: apt-get install wrk)")
    scratch = Path(tempfile.mkdtemp(prefix="ecert-startup-"))
    env = {**os.environ, "ECERT_ENV": "development", "ECERT_INSTANCE_PATH": str(scratch),
           "ECERT_DATABASE_URL": f"sqlite:///{scratch / 'bench.db'}", "ECERT_RATELIMIT_DEFAULT": "1000000 per minute",
           "ECERT_LOG_LEVEL": "INFO"}
    try:
        flask(env, "db", "upgrade")
        flask(env, "demo", "load")
        walls, cpus = time_command(env, args.runs)
        imports = import_seconds(env, args.runs)
        idle, loaded, sent = serve_and_load(env, args.workers, args.requests, scratch)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    cached = "off (PYTHONDONTWRITEBYTECODE)" if sys.flags.dont_write_bytecode else "on"
    print(f"bytecode cache {cached}; load average {os.getloadavg()[0]:.1f}")
    print(f"flask --app wsgi {' '.join(COMMAND)}: wall {' '.join(f'{s:.2f}' for s in walls)} s "
          f"(median {statistics.median(walls):.2f}); CPU median {statistics.median(cpus):.2f} s")
    print(f"import wsgi (gunicorn's app): {' '.join(f'{s:.2f}' for s in imports)} s "
          f"(median {statistics.median(imports):.2f})")
    print(f"gunicorn workers' RSS: idle {idle} MB; after {sent} mixed requests {loaded} MB")
    return 0


if __name__ == "__main__":
    sys.exit(main())
