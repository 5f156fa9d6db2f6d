"""Two app nodes for tests/app/test_two_nodes.py: a node's gunicorn server and job runner (node_jobs.py) as processes
with the node's own environment, and plain HTTP to the server."""

from __future__ import annotations

import http.client
import json
import os
import secrets
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

from backend.config import PROJECT_ROOT
from tests.conftest import TEST_SECRETS

JOBS = {"callbacks", "expire", "imports", "objections", "purge", "remind"}  # every `flask jobs` command
COPIES = 2  # of each job command at once on each node (a service and an overlapping cron entry, say)


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


@dataclass
class Answer:
    status: int
    headers: dict[str, str]
    body: bytes

    def json(self) -> Any:
        return json.loads(self.body)


@dataclass
class Node:
    """One app node: its gunicorn server and its job runner, both with the node's own environment."""

    name: str
    port: int
    env: dict[str, str]
    log: IO[bytes]
    client_address: str  # sent as X-Forwarded-For (one trusted proxy), so limits count this run's requests only
    server: subprocess.Popen[bytes] | None = None
    runner: subprocess.Popen[str] | None = None
    runner_pid: int = 0

    def request(self, method: str, path: str, body: bytes | str | None = None, headers: dict[str, str] | None = None,
                client_address: str | None = None) -> Answer:
        connection = http.client.HTTPConnection("127.0.0.1", self.port, timeout=60)
        try:
            connection.request(method, path, body=body, headers={
                "X-Forwarded-For": client_address or self.client_address, **(headers or {})})
            response = connection.getresponse()
            return Answer(response.status, dict(response.getheaders()), response.read())
        finally:
            connection.close()

    def send_json(self, path: str, document: Any, token: str | None = None) -> Answer:
        return self.request("POST", path, json.dumps(document), {
            "Content-Type": "application/json", **({"Authorization": f"Bearer {token}"} if token else {})})

    def start(self) -> None:
        self.server = subprocess.Popen(
            [sys.executable, "-m", "gunicorn", "--bind", f"127.0.0.1:{self.port}", "--workers", "1",
             *_no_control_socket(), "wsgi:app"],
            cwd=PROJECT_ROOT, env=self.env, stdout=self.log, stderr=subprocess.STDOUT, start_new_session=True)
        self.runner = subprocess.Popen(
            [sys.executable, str(Path(__file__).with_name("node_jobs.py")), str(COPIES)], cwd=PROJECT_ROOT,
            env=self.env, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=self.log, text=True, bufsize=1)

    def wait_ready(self, deadline: float) -> None:
        assert self.server is not None and self.runner is not None and self.runner.stdout is not None
        ready = json.loads(self.runner.stdout.readline() or "{}")
        assert set(ready.get("ready", [])) == JOBS, f"{self.name}: runner not ready or new jobs: {ready}"
        self.runner_pid = ready["pid"]
        while time.monotonic() < deadline:
            assert self.server.poll() is None, f"{self.name}: gunicorn exited with {self.server.returncode}"
            try:
                if self.request("GET", "/healthz").status == 200:
                    return
            except OSError:
                pass
            time.sleep(0.1)
        raise AssertionError(f"{self.name}: no healthy answer")

    def go(self) -> None:
        """Start a round: every job command at once on this node's runner."""
        assert self.runner is not None and self.runner.stdin is not None
        self.runner.stdin.write("go\n")
        self.runner.stdin.flush()

    def round_results(self) -> dict[str, list[dict[str, Any]]]:
        assert self.runner is not None and self.runner.stdout is not None
        line = self.runner.stdout.readline()
        assert line, f"{self.name}: job runner exited with {self.runner.poll()}"
        return dict(json.loads(line)["round"])

    def stop(self) -> None:
        """End the runner (when its input ends) and the server (at once: its work is done); `wait` for them."""
        if self.runner is not None and self.runner.stdin is not None:
            self.runner.stdin.close()
        if self.server is not None and self.server.poll() is None:
            os.killpg(self.server.pid, signal.SIGKILL)  # gunicorn and its worker, its own process group

    def wait(self) -> None:
        for process in (self.runner, self.server):
            if process is not None:
                _ended(process)
        if self.runner is not None and self.runner.stdout is not None:
            self.runner.stdout.close()


def _no_control_socket() -> list[str]:
    """gunicorn ≥ 25 listens on a control socket at one path per user (~/.gunicorn): not for two servers at once."""
    from gunicorn.config import KNOWN_SETTINGS

    return ["--no-control-socket"] if any(s.name == "control_socket_disable" for s in KNOWN_SETTINGS) else []


def _ended(process: subprocess.Popen[Any]) -> None:
    try:
        process.wait(timeout=15)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()


def node_env(name: str, root: Path, *, database_url: str, redis_url: str, **settings: str) -> dict[str, str]:
    """A node's environment: its own instance directory (under `root`); the database, Redis, secrets, public URL and
    the import spool (and evidence store) shared, as the README asks of every node; `settings` on top."""
    env = {key: value for key, value in os.environ.items() if not key.startswith(("ECERT_", "FLASK_"))}
    env.update({key: str(value) for key, value in TEST_SECRETS.items()})
    env.update({
        "ECERT_ENV": "testing", "ECERT_DATABASE_URL": database_url, "ECERT_REDIS_URL": redis_url,
        "ECERT_INSTANCE_PATH": str(root / name), "ECERT_IMPORT_SPOOL_DIR": str(root / "shared" / "import-spool"),
        "ECERT_EVIDENCE_DIR": str(root / "shared" / "evidence"), "ECERT_PUBLIC_URL": "http://localhost",
        "ECERT_DEV_LOGIN": "1", "ECERT_TRUSTED_PROXIES": "1", "ECERT_IMPORT_IN_PROCESS": "0",
        "ECERT_LOG_LEVEL": "WARNING", "PYTHONPATH": str(PROJECT_ROOT), **settings,
    })
    return env


def client_address() -> str:
    """A documentation-range IPv6 address of its own for each run: rate-limit counters in Redis outlive a run."""
    return f"2001:db8::{secrets.token_hex(2)}:{secrets.token_hex(2)}:{secrets.token_hex(2)}"
