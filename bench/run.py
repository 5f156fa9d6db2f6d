"""Load benchmark (not a test): gunicorn on loopback with demo data, requests/s and latency per endpoint.

Every endpoint is reported as a ratio to the platform's GET /healthz and to a bare Flask endpoint (bench/bare_app.py,
on the same gunicorn settings) measured in the same run, so numbers from different machines can be compared.
Usage: `python bench/run.py --duration 10` (see bench/README.md).
"""

from __future__ import annotations

import argparse
import http.client
import itertools
import json
import multiprocessing
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from urllib.parse import urlencode, urlsplit

import sqlalchemy as sa
from sqlalchemy.engine import make_url

PROJECT_ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(PROJECT_ROOT))  # run as a script, only bench/ is on sys.path
sys.path.insert(0, str(PROJECT_ROOT / "tests"))  # valid test data: resident IDs, USCCs, certificate bodies

from factories import BUSINESS_LICENCE, FOOD_LICENCE, certificate_body, company_code, resident_id  # noqa: E402

from backend.cli.demo import demo_assertion  # noqa: E402

RESULTS = PROJECT_ROOT / "bench" / "results"
WRK_SCRIPT = PROJECT_ROOT / "bench" / "wrk.lua"
ASSERTION_TYPE = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer"
FORM_HEADERS = {"Content-Type": "application/x-www-form-urlencoded"}
JSON_HEADERS = {"Content-Type": "application/json"}
Request = tuple[str, str | None]  # (path, body)
UNLIMITED = "1000000 per minute"
WARMUP_REQUESTS = 20


# --- what is measured -------------------------------------------------------------------------------------

@dataclass
class Server:
    """The running bench server, as the endpoint specs need it. What a spec needs is set up once, on first use."""

    base_url: str
    instance: Path
    env: dict[str, str]
    bare_url: str | None = None  # the bare Flask app (bench/bare_app.py), when it runs
    _token: str | None = None
    _citizen: dict[str, Any] | None = None
    _issued: list[dict[str, Any]] = field(default_factory=list)
    _app: Any = None

    @property
    def token_endpoint(self) -> str:
        return self.base_url + "/gov/v1/oauth/token"

    def token_form(self) -> str:
        """A token request body with a fresh demo-client assertion (new jti)."""
        _, assertion = demo_assertion(self.instance / "demo-client.json", self.token_endpoint)
        return urlencode({"grant_type": "client_credentials", "client_assertion_type": ASSERTION_TYPE,
                          "client_assertion": assertion})

    def call(self, method: str, path: str, headers: dict[str, str] | None = None, body: str | None = None,
             expect: int = 200) -> Any:
        """One set-up request; its JSON answer (the bench stops on any other status)."""
        status, answer = request_once(self.base_url, method, path, headers, body)
        if status != expect:
            raise RuntimeError(f"{method} {path} answered {status}: {answer[:300]!r}")
        return json.loads(answer)

    def access_token(self) -> str:
        if self._token is None:
            self._token = str(self.call("POST", "/gov/v1/oauth/token", FORM_HEADERS, self.token_form())["access_token"])
        return self._token

    def citizen(self) -> dict[str, Any]:
        """A dev-login citizen (generated valid resident ID) representing one company: its access token (10 min)."""
        if self._citizen is None:
            company = company_code()
            login = {"provider": "dev", "name": "张伟", "id_type": "111", "id_number": resident_id(),
                     "companies": [{"code": company, "name": "信阳毛尖茶业有限公司"}]}
            answer = self.call("POST", "/api/v1/auth/login", JSON_HEADERS, json.dumps(login))
            self._citizen = {"token": answer["access_token"], "company": company}
        return self._citizen

    def issued(self) -> list[dict[str, Any]]:
        """WALLET_SIZE certificates issued by the demo client to the citizen's company (营业执照 and 食品经营许可证)."""
        if not self._issued:
            company = self.citizen()["company"]
            for i in range(WALLET_SIZE):
                body = certificate_body(BUSINESS_LICENCE if i % 2 == 0 else FOOD_LICENCE,
                                        holder={"code": company}, fields={"uscc": company})
                self._issued.append(self.call("POST", "/gov/v1/certificates", {**bearer(self), **JSON_HEADERS},
                                              json.dumps(body), expect=201))
        return self._issued

    def client_id(self) -> str:
        return str(json.loads((self.instance / "demo-client.json").read_text())["client_id"])

    @contextmanager
    def key_store(self) -> Iterator[Any]:
        """The server's key store, opened in this process (its instance's secrets, its database): what the
        platform itself signs, a pool of it is signed here, much faster than through the API."""
        from backend.core.context import keystore
        from backend.extensions import db

        if self._app is None:
            os.environ.update(self.env)
            from backend.app import create_app

            self._app = create_app()
        with self._app.app_context():
            try:
                yield keystore()
            finally:
                db.session.remove()

    def presentations(self, count: int) -> list[str]:
        """The first issued certificate with all its disclosures, as the holder's wallet presents it to the demo
        client: each with a fresh KB-JWT (accepted once) signed with the platform-held wallet key."""
        from backend.crypto.sdjwt import key_binding_jwt
        from backend.keys.keystore import PURPOSE_WALLET

        sd_jwt = str(self.issued()[0]["sd_jwt"])
        with self.key_store() as keys:
            key = keys.active_key(PURPOSE_WALLET)

            def sign(payload: dict[str, Any], headers: dict[str, Any]) -> str:
                return str(keys.sign_jwt(key, payload, headers))

            audience, issued_at = self.client_id(), int(time.time())
            return [json.dumps({"presentation": sd_jwt + key_binding_jwt(
                sign, presentation_without_kb=sd_jwt, audience=audience, nonce=secrets.token_urlsafe(12),
                iat=issued_at)}) for _ in range(count)]

    def show_codes(self, count: int) -> list[str]:
        """`count` new show codes (profile full) round the holder's certificates, signed with the platform key
        exactly as POST …/show-codes signs them; their paths /v/{token}."""
        from datetime import UTC, datetime

        from backend.keys import showcode
        from backend.keys.keystore import PURPOSE_PLATFORM

        ids = self.wallet_ids()
        with self.key_store() as keys:
            key, moment = keys.active_key(PURPOSE_PLATFORM), datetime.now(UTC)
            return [urlsplit(showcode.url_for_token(self.base_url, showcode.encode(keys, key, showcode.new_claims(
                ids[i % len(ids)], "full", now=moment, lifetime=SHOW_CODE_LIFETIME)))).path for i in range(count)]

    def wallet_ids(self) -> list[str]:
        self.issued()
        items = self.call("GET", f"{WALLET}?limit=100", citizen_bearer(self))["items"]
        if len(items) != WALLET_SIZE:
            raise RuntimeError(f"the bench holder's wallet lists {len(items)} certificates, not {WALLET_SIZE}")
        return [str(item["id"]) for item in items]


@dataclass(frozen=True)
class Endpoint:
    """One benchmarked request.

    Every request sends `path` and `body(server)` (if any), unless `paths(server)` gives a pool of paths, sent in
    turn (the holder's certificates). `fresh(server, n)` gives n requests (path, body) that are each sent once
    (fresh assertions, KB-JWTs, show codes, prepared right before the run): the run stops when they are used up.
    `lifetime`: seconds the prepared requests stay valid, flagged when the run outlasts it. `check(answer)` says
    what is wrong with a warm-up answer body, or None. `target`: the ratio to the baseline (`/healthz`) the issues
    ask for; `bare_target`: the ratio to the bare Flask endpoint (issue 13). `bare`: sent to the bare Flask app.
    """

    name: str
    method: str
    path: str
    headers: Callable[[Server], dict[str, str]] = lambda server: {}
    body: Callable[[Server], str] | None = None
    fresh: Callable[[Server, int], list[Request]] | None = None
    paths: Callable[[Server], list[str]] | None = None
    lifetime: float | None = None
    check: Callable[[bytes], str | None] | None = None
    expected_status: int = 200
    target: float | None = None
    bare_target: float | None = None
    bare: bool = False


def bearer(server: Server) -> dict[str, str]:
    return {"Authorization": f"Bearer {server.access_token()}"}


def bearer_json(server: Server) -> dict[str, str]:
    return {**bearer(server), **JSON_HEADERS}


def citizen_bearer(server: Server) -> dict[str, str]:
    return {"Authorization": f"Bearer {server.citizen()['token']}"}


def wallet_holder(server: Server) -> dict[str, str]:
    """The citizen's bearer header, once their wallet holds its WALLET_SIZE certificates."""
    server.wallet_ids()
    return citizen_bearer(server)


def fresh_token_forms(server: Server, count: int) -> list[Request]:
    with multiprocessing.Pool() as pool:
        return [("/gov/v1/oauth/token", form) for form in pool.map(_token_form, [server] * count, chunksize=256)]


def _token_form(server: Server) -> str:
    return server.token_form()


def fresh_presentations(server: Server, count: int) -> list[Request]:
    return [("/gov/v1/verify", body) for body in server.presentations(count)]


def fresh_show_codes(server: Server, count: int) -> list[Request]:
    return [(path, None) for path in server.show_codes(count)]


def valid_result(answer: bytes) -> str | None:
    result = json.loads(answer)
    return None if result.get("valid") else f"the verdict is not valid: {result.get('reasons')}"


def identifier_body(server: Server) -> str:
    return json.dumps({"identifier": server.issued()[0]["identifier"]})


def show_code_paths(server: Server) -> list[str]:
    """Mint requests round the holder's WALLET_SIZE certificates."""
    return [f"{WALLET}/{public_id}/show-codes" for public_id in server.wallet_ids()]


def scanned_codes(server: Server) -> list[str]:
    """SCAN_POOL show codes minted through the API right before the run, each scanned once already: scanned again,
    they are the page refreshed (usage is recorded once per code and verifier)."""
    paths = []
    minting = {**citizen_bearer(server), **JSON_HEADERS}
    for mint_path in itertools.islice(itertools.cycle(show_code_paths(server)), SCAN_POOL):
        paths.append(urlsplit(server.call("POST", mint_path, minting, SHOW_FULL)["url"]).path)
        server.call("GET", paths[-1], {"Accept": "application/json"})
    return paths


def valid_verdict(answer: bytes) -> str | None:
    state = json.loads(answer).get("state")
    return None if state == "valid" else f"the scan page answered state {state!r}, not 'valid'"


def png_image(answer: bytes) -> str | None:
    return None if answer.startswith(b"\x89PNG\r\n\x1a\n") else "the answer is not a PNG image"


BASELINE = "healthz"
BARE = "bare flask"  # bench/bare_app.py: Flask's jsonify on the same gunicorn settings (issue 13)
BARE_APP = "bench.bare_app:app"
WALLET = "/api/v1/wallet/certificates"
WALLET_SIZE = 20  # issue 4: wallet listing of a holder with 20 certificates
SCAN_POOL = 200  # show codes for the "scan again" run, each scanned many times within its minute
SHOW_FULL = json.dumps({"profile": "full"})  # the heavier profile: face fields decrypted and masked
SHOW_CODE_LIFETIME = 60  # seconds (ECERT_SHOW_CODE_TTL default)
KB_LIFETIME = 300  # seconds a KB-JWT's iat is accepted (issuance.key_binding.KB_IAT_WINDOW)
ENDPOINTS = [
    Endpoint(BASELINE, "GET", "/healthz", bare_target=0.50),
    Endpoint(BARE, "GET", "/", bare=True),
    Endpoint("jwks", "GET", "/.well-known/jwks.json"),
    Endpoint("catalog types", "GET", "/gov/v1/catalog/types", headers=bearer),
    Endpoint("token", "POST", "/gov/v1/oauth/token", headers=lambda server: FORM_HEADERS, fresh=fresh_token_forms),
    Endpoint("verify", "POST", "/gov/v1/verify", headers=bearer_json, fresh=fresh_presentations, lifetime=KB_LIFETIME,
             check=valid_result, target=0.40, bare_target=0.20),
    Endpoint("verify identifier", "POST", "/gov/v1/verify", headers=bearer_json, body=identifier_body,
             check=valid_result),
    Endpoint("show-code mint", "POST", WALLET + "/{id}/show-codes", paths=show_code_paths,
             headers=lambda server: {**citizen_bearer(server), **JSON_HEADERS}, body=lambda server: SHOW_FULL,
             target=0.50, bare_target=0.20),
    Endpoint("show-code png", "POST", WALLET + "/{id}/show-codes", paths=show_code_paths,
             headers=lambda server: {**citizen_bearer(server), **JSON_HEADERS, "Accept": "image/png"},
             body=lambda server: SHOW_FULL, check=png_image),
    Endpoint("scan json", "GET", "/v/{token}", fresh=fresh_show_codes, lifetime=SHOW_CODE_LIFETIME,
             headers=lambda server: {"Accept": "application/json"}, check=valid_verdict, target=0.50,
             bare_target=0.25),
    Endpoint("scan json again", "GET", "/v/{token}", paths=scanned_codes, lifetime=SHOW_CODE_LIFETIME,
             headers=lambda server: {"Accept": "application/json"}, check=valid_verdict),
    Endpoint("wallet list", "GET", WALLET, headers=wallet_holder, target=0.30, bare_target=0.30),
]


@dataclass
class Result:
    endpoint: str
    requests: int
    seconds: float
    p50_ms: float
    p99_ms: float
    statuses: dict[str, int]
    expected_status: int
    target: float | None = None
    ratio: float | None = None
    notes: list[str] = field(default_factory=list)
    bare_target: float | None = None
    bare_ratio: float | None = None  # to the bare Flask endpoint

    @property
    def met(self) -> bool | None:
        return None if self.target is None or self.ratio is None else self.ratio >= self.target

    @property
    def bare_met(self) -> bool | None:
        return None if self.bare_target is None or self.bare_ratio is None else self.bare_ratio >= self.bare_target

    @property
    def rps(self) -> float:
        return self.requests / self.seconds if self.seconds else 0.0

    @property
    def unexpected(self) -> int:
        return sum(n for status, n in self.statuses.items() if status != str(self.expected_status))


# --- the server -------------------------------------------------------------------------------------------

def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def server_env(instance: Path, database_url: str, base_url: str, log_level: str) -> dict[str, str]:
    return {
        **os.environ,
        "ECERT_ENV": "development",
        "ECERT_INSTANCE_PATH": str(instance),
        "ECERT_DATABASE_URL": database_url,
        "ECERT_PUBLIC_URL": base_url,  # the token endpoint checks the assertion's aud against it
        "ECERT_RATELIMIT_DEFAULT": UNLIMITED,
        "ECERT_RATELIMIT_TOKEN": UNLIMITED,
        "ECERT_DEV_LOGIN": "1",  # the bench's citizen logs in with the dev provider (opt-in, never in production)
        "ECERT_LOG_LEVEL": log_level,
    }


@contextmanager
def scratch_database(instance: Path, server_url: str | None, keep: bool) -> Iterator[str]:
    """SQLite in the instance directory, or a new database on the PostgreSQL server of `server_url`, dropped after.

    Always a fresh database: the throwaway instance has freshly generated secrets, which cannot unwrap the
    keys an earlier run left in a reused database.
    """
    if not server_url:
        yield f"sqlite:///{instance / 'bench.db'}"
        return
    url = make_url(server_url).set(drivername="postgresql+psycopg")
    name = f"ecert_bench_{os.urandom(5).hex()}"
    admin = sa.create_engine(url, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(sa.text(f'CREATE DATABASE "{name}"'))
    try:
        yield url.set(database=name).render_as_string(hide_password=False)
    finally:
        if keep:
            print(f"kept database {name}")
        else:
            with admin.connect() as conn:
                conn.execute(sa.text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()


def flask_command(env: dict[str, str], *args: str) -> None:
    result = subprocess.run([sys.executable, "-m", "flask", "--app", "wsgi", *args], cwd=PROJECT_ROOT, env=env,
                            capture_output=True, text=True)
    if result.returncode != 0:
        raise RuntimeError(f"flask {' '.join(args)} failed:\n{result.stdout}{result.stderr}")


@contextmanager
def gunicorn(env: dict[str, str], port: int, workers: int, log: Path, app: str = "wsgi:app",
             health: str = "/healthz") -> Iterator[None]:
    """gunicorn on 127.0.0.1:port, stopped on the way out whatever happened (errors, Ctrl-C, SIGTERM)."""
    with log.open("w") as log_file:
        process = subprocess.Popen(
            [sys.executable, "-m", "gunicorn", "--bind", f"127.0.0.1:{port}", "--workers", str(workers), app],
            cwd=PROJECT_ROOT, env=env, stdout=log_file, stderr=subprocess.STDOUT,
            start_new_session=True,  # Ctrl-C reaches us, and we stop it in order
        )
        try:
            wait_healthy(f"http://127.0.0.1:{port}", process, log, path=health)
            yield
        finally:
            process.terminate()
            try:
                process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()


def wait_healthy(base_url: str, process: subprocess.Popen[bytes], log: Path, timeout: float = 120.0,
                 path: str = "/healthz") -> None:
    # Generous: on a busy 2-core machine four workers each building the app took more than 30 s to answer.
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"gunicorn exited with {process.returncode}:\n{log.read_text()[-3000:]}")
        try:
            if request_once(base_url, "GET", path)[0] == 200:
                return
        except OSError:
            pass
        time.sleep(0.2)
    raise RuntimeError(f"no healthy answer from {base_url} within {timeout:.0f} s:\n{log.read_text()[-3000:]}")


def request_once(base_url: str, method: str, path: str, headers: dict[str, str] | None = None,
                 body: str | None = None) -> tuple[int, bytes]:
    host, port = base_url.removeprefix("http://").split(":")
    conn = http.client.HTTPConnection(host, int(port), timeout=10)
    try:
        conn.request(method, path, body=body, headers=headers or {})
        response = conn.getresponse()
        return response.status, response.read()
    finally:
        conn.close()


# --- load generators --------------------------------------------------------------------------------------

@dataclass(frozen=True)
class Load:
    duration: int
    connections: int
    threads: int
    max_requests: int


def run_wrk(base_url: str, endpoint: Endpoint, headers: dict[str, str], requests: list[Request], once: bool,
            load: Load, scratch: Path) -> Result:
    requests_file = scratch / "requests.txt"
    requests_file.write_text("".join(f"{path}\t{body or ''}\n" for path, body in requests))
    command = ["wrk", "--latency", "-t", str(load.threads), "-c", str(load.connections), "-d", f"{load.duration}s",
               "--timeout", "10s", "-s", str(WRK_SCRIPT), base_url + requests[0][0],
               "--", endpoint.method, str(requests_file), str(load.threads), "once" if once else "cycle",
               *(f"{k}: {v}" for k, v in headers.items())]
    completed = subprocess.run(command, capture_output=True, text=True)
    if completed.returncode != 0:
        raise RuntimeError(f"wrk failed ({completed.returncode}):\n{completed.stdout}{completed.stderr}")
    output = completed.stdout
    line = next((line for line in output.splitlines() if line.startswith("BENCH_RESULT ")), None)
    if line is None:
        raise RuntimeError(f"wrk printed no result:\n{output}")
    data = json.loads(line.removeprefix("BENCH_RESULT "))
    result = Result(endpoint.name, data["requests"], data["duration_us"] / 1e6, data["p50_us"] / 1000,
                    data["p99_us"] / 1000, data["statuses"], endpoint.expected_status)
    if data["socket_errors"]:
        result.notes.append(f"{data['socket_errors']} socket errors/timeouts")
    return result


def _python_worker(args: tuple[str, str, dict[str, str], list[Request], bool, float, int]) -> tuple[
        list[float], Counter[str], float]:
    """One keep-alive connection sending its share of the requests (in turn, or each once) until the deadline,
    its request budget or (once) its share runs out."""
    base_url, method, headers, requests, once, deadline, budget = args
    host, port = base_url.removeprefix("http://").split(":")
    conn = http.client.HTTPConnection(host, int(port), timeout=10)
    latencies: list[float] = []
    statuses: Counter[str] = Counter()
    started = time.perf_counter()
    limit = min(budget, len(requests)) if once else budget
    while len(latencies) < limit and time.time() < deadline:
        path, body = requests[len(latencies) % len(requests)]
        sent = time.perf_counter()
        try:
            conn.request(method, path, body=body, headers=headers)
            response = conn.getresponse()
            response.read()
            statuses[str(response.status)] += 1
        except (OSError, http.client.HTTPException):
            statuses["socket error"] += 1
            conn.close()
        latencies.append(time.perf_counter() - sent)
    conn.close()
    return latencies, statuses, time.perf_counter() - started


def run_python(base_url: str, endpoint: Endpoint, headers: dict[str, str], requests: list[Request], once: bool,
               load: Load) -> Result:
    """Fallback without wrk: one process per connection (several processes, so the client is not the GIL)."""
    deadline = time.time() + load.duration
    budget = max(1, load.max_requests // load.connections)
    shares = [requests[i::load.connections] or ([] if once else requests) for i in range(load.connections)]
    with multiprocessing.Pool(load.connections) as pool:
        outcomes = pool.map(_python_worker, [(base_url, endpoint.method, headers, share, once, deadline, budget)
                                             for share in shares])
    latencies = sorted(latency for outcome in outcomes for latency in outcome[0])
    statuses: Counter[str] = sum((outcome[1] for outcome in outcomes), Counter())
    seconds = max(outcome[2] for outcome in outcomes)

    def percentile(p: float) -> float:
        return latencies[min(len(latencies) - 1, int(len(latencies) * p / 100))] * 1000 if latencies else 0.0

    return Result(endpoint.name, len(latencies), seconds, percentile(50), percentile(99), dict(statuses),
                  endpoint.expected_status)


def prepare(server: Server, endpoint: Endpoint, pool_size: int) -> tuple[list[Request], bool]:
    """The requests to send, and whether each is to be sent once only (fresh bodies) rather than in turn."""
    if endpoint.fresh is not None:
        return endpoint.fresh(server, pool_size + WARMUP_REQUESTS), True
    body = endpoint.body(server) if endpoint.body else None
    paths = endpoint.paths(server) if endpoint.paths else [endpoint.path]
    return [(path, body) for path in paths], False


def measure(server: Server, endpoint: Endpoint, load: Load, generator: str, pool_size: int, scratch: Path) -> Result:
    prepared = time.monotonic()
    headers = endpoint.headers(server)
    requests, once = prepare(server, endpoint, pool_size)
    base_url = server.bare_url if endpoint.bare else server.base_url
    if base_url is None:
        raise RuntimeError(f"{endpoint.name}: the bare Flask app is not running")
    for i in range(WARMUP_REQUESTS):  # first requests load code and open database connections in each worker
        path, body = requests[i % len(requests)]
        status, answer = request_once(base_url, endpoint.method, path, headers, body)
        problem = f"answered {status}" if status != endpoint.expected_status else \
            endpoint.check(answer) if endpoint.check else None
        if problem:
            raise RuntimeError(f"{endpoint.name}: warm-up request {endpoint.method} {path} {problem}: {answer[:300]!r}")
    timed = requests[WARMUP_REQUESTS:] if once else requests
    if generator == "wrk":
        result = run_wrk(base_url, endpoint, headers, timed, once, load, scratch)
    else:
        result = run_python(base_url, endpoint, headers, timed, once, load)
    result.target, result.bare_target = endpoint.target, endpoint.bare_target
    if once and result.requests >= len(timed) - load.connections:
        # wrk keeps the clock running until --duration ends, so its req/s is then too low.
        result.notes.append(f"used up its {len(timed)} fresh requests early (wrk: req/s understated); "
                            "raise --fresh-pool")
    if endpoint.lifetime is not None and time.monotonic() - prepared > endpoint.lifetime:
        result.notes.append(f"the run outlasted the {endpoint.lifetime:.0f} s its prepared requests live "
                            "(show codes expired: req/s overstated); lower --duration")
    return result


def set_ratios(results: list[Result]) -> None:
    """Each endpoint against the mean of the runs of each baseline (`/healthz`, the bare Flask endpoint) just before
    and after it (the machine's load drifts); each baseline run against the mean of all runs of itself."""
    for r, ratio in zip(results, _ratios(results, BASELINE), strict=True):
        r.ratio = ratio
    for r, ratio in zip(results, _ratios(results, BARE), strict=True):
        r.bare_ratio = ratio


def _ratios(results: list[Result], baseline: str) -> list[float | None]:
    runs = [r.rps for r in results if r.endpoint == baseline]
    ratios: list[float | None] = []
    for i, r in enumerate(results):
        if r.endpoint == baseline:
            around = runs
        else:
            before = next((b.rps for b in reversed(results[:i]) if b.endpoint == baseline), None)
            after = next((b.rps for b in results[i + 1:] if b.endpoint == baseline), None)
            around = [rps for rps in (before, after) if rps is not None]
        mean = sum(around) / len(around) if around else 0.0
        ratios.append(round(r.rps / mean, 3) if mean else None)
    return ratios


# --- report -----------------------------------------------------------------------------------------------

def print_table(results: list[Result]) -> None:
    header = (f"{'endpoint':<18} {'requests':>9} {'req/s':>9} {'p50 ms':>8} {'p99 ms':>8} {'vs healthz':>10} "
              f"{'target':>11} {'vs bare':>8} {'target':>11}  errors")
    print(header)
    print("-" * len(header))

    def judged(ratio: float | None, target: float | None, met: bool | None) -> tuple[str, str]:
        shown = f"{ratio:.2f}" if ratio is not None else "-"
        return shown, "-" if target is None else f"≥ {target:.2f} {'ok' if met else 'MISS'}"

    for r in results:
        ratio, target = judged(r.ratio, r.target, r.met)
        bare_ratio, bare_target = judged(r.bare_ratio, r.bare_target, r.bare_met)
        errors = ", ".join(f"{n}x {s}" for s, n in r.statuses.items() if s != str(r.expected_status)) or "0"
        print(f"{r.endpoint:<18} {r.requests:>9} {r.rps:>9.1f} {r.p50_ms:>8.2f} {r.p99_ms:>8.2f} {ratio:>10} "
              f"{target:>11} {bare_ratio:>8} {bare_target:>11}  {errors}")
        for note in r.notes:
            print(f"{'':<18} note: {note}")


def git_revision() -> str | None:
    result = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=PROJECT_ROOT, capture_output=True, text=True)
    return result.stdout.strip() or None


def write_json(results: list[Result], settings: dict[str, Any], started: datetime) -> Path:
    RESULTS.mkdir(parents=True, exist_ok=True)
    path = RESULTS / f"{started:%Y%m%dT%H%M%SZ}.json"
    rows = [{"endpoint": r.endpoint, "requests": r.requests, "seconds": round(r.seconds, 3), "rps": round(r.rps, 1),
             "p50_ms": round(r.p50_ms, 3), "p99_ms": round(r.p99_ms, 3), "ratio_to_baseline": r.ratio,
             "target_ratio": r.target, "target_met": r.met, "ratio_to_bare": r.bare_ratio,
             "bare_target_ratio": r.bare_target, "bare_target_met": r.bare_met, "statuses": r.statuses,
             "expected_status": r.expected_status, "notes": r.notes} for r in results]
    path.write_text(json.dumps({"started": started.isoformat(), "git": git_revision(), "baseline": BASELINE,
                                "bare": BARE, "settings": settings, "results": rows}, indent=2) + "\n")
    return path


# --- main -------------------------------------------------------------------------------------------------

def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--duration", type=int, default=10, help="seconds of load per endpoint (default 10)")
    parser.add_argument("--workers", type=int, default=2, help="gunicorn workers (default 2)")
    parser.add_argument("--connections", type=int, default=8, help="concurrent connections (default 8)")
    parser.add_argument("--threads", type=int, default=2, help="wrk threads (default 2)")
    parser.add_argument("--max-requests", type=int, default=200_000,
                        help="request cap per endpoint for the Python generator (default 200000)")
    parser.add_argument("--fresh-pool", "--token-pool", type=int, default=None,
                        help="requests prepared before a run whose requests are each sent once (assertions, KB-JWTs, "
                             "show codes; default 2000 per second of --duration)")
    parser.add_argument("--database-url", help="PostgreSQL server URL: the run creates and drops its own database "
                                               "there (default: SQLite in the temporary instance directory)")
    parser.add_argument("--generator", choices=["auto", "wrk", "python"], default="auto",
                        help="load generator: wrk when on PATH (auto), or the built-in Python one")
    parser.add_argument("--only", action="append", metavar="NAME",
                        help="benchmark only this endpoint (repeatable); the baselines always run")
    parser.add_argument("--no-bare", action="store_true",
                        help="without the bare Flask endpoint (default: a second gunicorn serves bench/bare_app.py "
                             "and every endpoint is also compared with it)")
    parser.add_argument("--log-level", default="INFO",
                        help="server ECERT_LOG_LEVEL (default INFO: the per-request log is part of the cost)")
    parser.add_argument("--baseline-once", action="store_true",
                        help="measure the baselines once, first (default: also after each endpoint, which is then "
                             "compared with the mean of the baseline runs around it: this machine's load drifts)")
    parser.add_argument("--keep", action="store_true", help="keep the temporary instance directory")
    return parser.parse_args()


@contextmanager
def bare_gunicorn(env: dict[str, str], workers: int, instance: Path, *, enabled: bool = True) -> Iterator[str | None]:
    """The bare Flask app (bench/bare_app.py) on its own gunicorn, with the same settings as the platform's; its URL."""
    if not enabled:
        yield None
        return
    port = free_port()
    with gunicorn(env, port, workers, instance / "gunicorn-bare.log", app=BARE_APP, health="/"):
        yield f"http://127.0.0.1:{port}"


def measure_all(server: Server, endpoints: list[Endpoint], load: Load, generator: str, pool_size: int,
                scratch: Path, *, baseline_once: bool = False) -> list[Result]:
    """The baselines (the first endpoints: `/healthz`, the bare Flask endpoint), then each other endpoint followed by
    the baselines again (unless `baseline_once`), so that each is compared with the baseline runs around it."""
    baselines = [e for e in endpoints if e.name in (BASELINE, BARE)]
    results = [measure(server, e, load, generator, pool_size, scratch) for e in baselines]
    for endpoint in endpoints:
        if endpoint in baselines:
            continue
        results.append(measure(server, endpoint, load, generator, pool_size, scratch))
        if not baseline_once:
            results += [measure(server, e, load, generator, pool_size, scratch) for e in baselines]
    return results


def main() -> int:
    args = parse_args()
    generator = args.generator if args.generator != "auto" else ("wrk" if shutil.which("wrk") else "python")
    if generator == "wrk" and not shutil.which("wrk"):
        sys.exit("wrk is not on PATH (Debian: apt-get install wrk); use --generator python")
    baselines = [BASELINE] if args.no_bare else [BASELINE, BARE]
    endpoints = [e for e in ENDPOINTS if (e.name in baselines or not args.only or e.name in args.only)
                 and not (args.no_bare and e.name == BARE)]
    load = Load(args.duration, args.connections, args.threads, args.max_requests)
    pool_size = args.fresh_pool or int(2000 * args.duration)
    started = datetime.now(UTC)
    # SIGTERM unwinds like Ctrl-C, so gunicorn is stopped and the instance removed.
    signal.signal(signal.SIGTERM, lambda signum, frame: sys.exit(128 + signum))

    instance = Path(tempfile.mkdtemp(prefix="ecert-bench-"))
    try:
        port = free_port()
        base_url = f"http://127.0.0.1:{port}"
        with scratch_database(instance, args.database_url, keep=args.keep) as database_url:
            env = server_env(instance, database_url, base_url, args.log_level)
            print(f"instance {instance}; database {database_url.split('://')[0]}; preparing schema and demo data")
            flask_command(env, "db", "upgrade")
            flask_command(env, "demo", "load")
            with gunicorn(env, port, args.workers, instance / "gunicorn.log"), \
                    bare_gunicorn(env, args.workers, instance, enabled=not args.no_bare) as bare_url:
                server = Server(base_url, instance, env, bare_url)
                print(f"gunicorn {base_url} ({args.workers} workers)"
                      + (f", bare Flask {bare_url}" if bare_url else "")
                      + f"; {generator}, {args.connections} connections, {args.duration} s per endpoint\n")
                results = measure_all(server, endpoints, load, generator, pool_size, instance,
                                      baseline_once=args.baseline_once)
    finally:
        if args.keep:
            print(f"kept {instance}")
        else:
            shutil.rmtree(instance, ignore_errors=True)

    set_ratios(results)
    print_table(results)
    settings = {"generator": generator, "workers": args.workers, "connections": args.connections,
                "threads": args.threads if generator == "wrk" else None, "duration_s": args.duration,
                "database": database_url.split("://")[0].split("+")[0], "cpus": os.cpu_count(),
                "python": sys.version.split()[0]}
    print(f"\nwritten {write_json(results, settings, started).relative_to(PROJECT_ROOT)}")
    return 1 if any(r.unexpected for r in results) else 0


if __name__ == "__main__":
    try:
        sys.exit(main())
    except KeyboardInterrupt:
        sys.exit("interrupted; gunicorn stopped")
