"""Grant redemption benchmark and race test (not a test): gunicorn with several workers, demo data, seeded grants.

1. Throughput: `POST /gov/v1/grants/redeem {"code"}`, each request redeeming a fresh grant (seeded through the services
   right before the run), in requests/s and p50/p99, with its ratio to the bare `GET /healthz` of the same run.
2. Race: `--race-grants` grants, each redeemed by `--race-attempts` concurrent requests released together; counts the
   2xx answers per grant (target: exactly one each, 0 double redemptions) and the Redemption rows in the database.

Usage: `python bench/redeem.py --workers 4` (SQLite), add `--database-url postgresql://…` (see bench/README.md).
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import shutil
import signal
import sys
import tempfile
import threading
import time
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))  # valid test data, as bench/run.py

from factories import BUSINESS_LICENCE, certificate_body, company_code, resident_id
from run import (  # bench/run.py: the server, the load generators, the report
    BARE,
    BASELINE,
    ENDPOINTS,
    JSON_HEADERS,
    PROJECT_ROOT,
    RESULTS,
    Endpoint,
    Load,
    Request,
    Result,
    Server,
    bare_gunicorn,
    bearer_json,
    flask_command,
    free_port,
    git_revision,
    gunicorn,
    measure,
    print_table,
    scratch_database,
    server_env,
    set_ratios,
)

REDEEM = "/gov/v1/grants/redeem"
CERTIFICATES = 20  # the bench holder's company holds 20 business licences; grants go round them
FIELDS = ["holder.name", "company_name", "uscc", "legal_representative"]
CODE_LIFETIME = 600  # seconds: a grant code lives at most 10 minutes (DESIGN §5)
SEED_BATCH = 500


@dataclass
class Seeder:
    """Grants offered by the bench holder to the demo client, made through the services in this process (the
    server's instance secrets and database), as POST /api/v1/grants makes them — much faster than over HTTP."""

    server: Server
    holder_number: str = field(default_factory=resident_id)
    company: str = field(default_factory=company_code)
    _certificates: list[str] = field(default_factory=list)

    def certificates(self) -> list[str]:
        """The holder logs in (dev provider) representing a company; the demo client issues it CERTIFICATES licences."""
        if not self._certificates:
            login = {"provider": "dev", "name": "张伟", "id_type": "111", "id_number": self.holder_number,
                     "companies": [{"code": self.company, "name": "信阳毛尖茶业有限公司"}]}
            self.server.call("POST", "/api/v1/auth/login", JSON_HEADERS, json.dumps(login))
            for _ in range(CERTIFICATES):
                body = certificate_body(BUSINESS_LICENCE, holder={"code": self.company}, fields={"uscc": self.company})
                issued = self.server.call("POST", "/gov/v1/certificates", bearer_json(self.server), json.dumps(body),
                                          expect=201)
                self._certificates.append(str(issued["identifier"]))
        return self._certificates

    def codes(self, count: int) -> list[str]:
        """`count` fresh one-time grant codes (授权码) for the demo client, round the holder's certificates."""
        identifiers = self.certificates()
        from sqlalchemy import select

        from backend.core.context import field_cipher
        from backend.extensions import db
        from backend.kernel.actors import Actor
        from backend.kernel.ids import holder_index
        from backend.models import Certificate, Holder
        from backend.sharing import grants

        codes: list[str] = []
        with self.server.key_store():
            session, cipher = db.session(), field_cipher()
            holder = session.scalar(select(Holder).where(
                Holder.id_index == holder_index(cipher, "111", self.holder_number)))
            if holder is None:
                raise RuntimeError("the bench holder is not in the database")
            certificates = list(session.scalars(select(Certificate).where(Certificate.identifier.in_(identifiers))))
            actor = Actor(kind="citizen", id=holder.public_id)
            client_id = self.server.client_id()
            for i in range(count):
                offered = grants.offer_grant(
                    session, cipher, holder, certificates[i % len(certificates)], client_id=client_id,
                    fields=FIELDS, purpose="办理营业执照变更登记", expires_in=CODE_LIFETIME, step_up=lambda: None,
                    actor=actor, now=datetime.now(UTC))
                codes.append(offered.code)
                if (i + 1) % SEED_BATCH == 0:
                    session.commit()
            session.commit()
        return codes


def presentations_returned(answer: bytes) -> str | None:
    result = json.loads(answer)
    return None if result.get("presentations") else "the redemption returned no presentation"


def redeem_endpoint(seeder: Seeder) -> Endpoint:
    def fresh(server: Server, count: int) -> list[Request]:
        started = time.monotonic()
        codes = seeder.codes(count)
        print(f"  seeded {count} grants in {time.monotonic() - started:.1f} s")
        return [(REDEEM, json.dumps({"code": code})) for code in codes]

    return Endpoint("grant redeem", "POST", REDEEM, headers=bearer_json, fresh=fresh, lifetime=CODE_LIFETIME,
                    check=presentations_returned)


# --- the race ---------------------------------------------------------------------------------------------------

@dataclass
class RaceReport:
    grants: int
    attempts_per_grant: int
    successes: Counter[int]  # number of 2xx answers per grant -> how many grants had that many
    statuses: Counter[str]
    redemptions_in_database: int
    used_grants_in_database: int
    seconds: float

    @property
    def double_redemptions(self) -> int:
        return sum(n for successes, n in self.successes.items() if successes > 1)

    @property
    def unredeemed(self) -> int:
        return self.successes.get(0, 0)


def race(server: Server, seeder: Seeder, grants: int, attempts: int) -> RaceReport:
    """For each grant in turn, `attempts` threads (each on its own keep-alive connection) released by one barrier
    send the same code; the server's workers take them at the same moment."""
    codes = seeder.codes(grants)
    headers = bearer_json(server)
    host, port = server.base_url.removeprefix("http://").split(":")
    barrier = threading.Barrier(attempts)
    answers: list[list[int]] = [[] for _ in codes]
    lock = threading.Lock()

    def racer(slot: int) -> None:
        connection = http.client.HTTPConnection(host, int(port), timeout=30)
        for index, code in enumerate(codes):
            barrier.wait()
            try:
                connection.request("POST", REDEEM, body=json.dumps({"code": code}), headers=headers)
                response = connection.getresponse()
                response.read()
                status = response.status
            except (OSError, http.client.HTTPException):
                status = 0
                connection.close()
            with lock:
                answers[index].append(status)
        connection.close()

    started = time.monotonic()
    threads = [threading.Thread(target=racer, args=(slot,)) for slot in range(attempts)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    seconds = time.monotonic() - started
    successes = Counter(sum(1 for status in statuses if 200 <= status < 300) for statuses in answers)
    statuses = Counter(str(status) if status else "socket error" for per_grant in answers for status in per_grant)
    stored, used = _database_counts(server, codes)
    return RaceReport(grants, attempts, successes, statuses, stored, used, seconds)


def _database_counts(server: Server, codes: list[str]) -> tuple[int, int]:
    """Redemption rows and used grants among the raced grants, read from the database itself."""
    from sqlalchemy import func, select

    from backend.core.context import field_cipher
    from backend.extensions import db
    from backend.models import Grant, Redemption
    from backend.models.sharing import GRANT_USED
    from backend.sharing.grants import code_digest

    with server.key_store():
        session, cipher = db.session(), field_cipher()
        hashes = [code_digest(cipher, code) for code in codes]
        ids = list(session.scalars(select(Grant.id).where(Grant.code_hash.in_(hashes))))
        redemptions = session.scalar(select(func.count()).select_from(Redemption).where(Redemption.grant_id.in_(ids)))
        used = session.scalar(select(func.count()).select_from(Grant).where(Grant.id.in_(ids),
                                                                          Grant.status == GRANT_USED))
        return int(redemptions or 0), int(used or 0)


def print_race(report: RaceReport, database: str, workers: int) -> None:
    print(f"\nrace on {database}, gunicorn {workers} workers: {report.grants} grants × {report.attempts_per_grant} "
          f"concurrent redeemers ({report.grants * report.attempts_per_grant} requests in {report.seconds:.1f} s)")
    print("  2xx per grant: " + ", ".join(f"{k} → {v} grants" for k, v in sorted(report.successes.items())))
    print("  statuses: " + ", ".join(f"{n}× {s}" for s, n in sorted(report.statuses.items())))
    print(f"  double redemptions: {report.double_redemptions} (target 0); grants never redeemed: {report.unredeemed}")
    print(f"  database: {report.redemptions_in_database} redemption rows, {report.used_grants_in_database} grants "
          f"used (of {report.grants})")


# --- main -------------------------------------------------------------------------------------------------------

def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--duration", type=int, default=10, help="seconds of load per measurement (default 10)")
    parser.add_argument("--workers", type=int, default=4, help="gunicorn workers (default 4)")
    parser.add_argument("--connections", type=int, default=8, help="concurrent connections (default 8)")
    parser.add_argument("--threads", type=int, default=2, help="wrk threads (default 2)")
    parser.add_argument("--max-requests", type=int, default=200_000, help="Python generator request cap")
    parser.add_argument("--fresh-pool", type=int, default=None,
                        help="grants seeded for the throughput run (default 300 per second of --duration)")
    parser.add_argument("--race-grants", type=int, default=200, help="grants raced (default 200)")
    parser.add_argument("--race-attempts", type=int, default=16, help="concurrent redeemers per grant (default 16)")
    parser.add_argument("--skip-throughput", action="store_true", help="only the race")
    parser.add_argument("--skip-race", action="store_true", help="only the throughput run")
    parser.add_argument("--no-bare", action="store_true", help="without the bare Flask endpoint of bench/run.py")
    parser.add_argument("--database-url", help="PostgreSQL server URL: the run creates and drops its own database")
    parser.add_argument("--generator", choices=["auto", "wrk", "python"], default="auto")
    parser.add_argument("--log-level", default="INFO", help="server ECERT_LOG_LEVEL (default INFO)")
    parser.add_argument("--keep", action="store_true", help="keep the temporary instance directory and database")
    return parser.parse_args()


@contextmanager
def bench_server(args: argparse.Namespace, instance: Path) -> Iterator[tuple[Server, str]]:
    port = free_port()
    base_url = f"http://127.0.0.1:{port}"
    with scratch_database(instance, args.database_url, keep=args.keep) as database_url:
        env = server_env(instance, database_url, base_url, args.log_level)
        database = database_url.split("://")[0].split("+")[0]
        print(f"instance {instance}; database {database}; preparing schema and demo data")
        flask_command(env, "db", "upgrade")
        flask_command(env, "demo", "load")
        with gunicorn(env, port, args.workers, instance / "gunicorn.log"), \
                bare_gunicorn(env, args.workers, instance, enabled=not args.no_bare) as bare_url:
            yield Server(base_url, instance, env, bare_url), database


def main() -> int:
    args = parse_args()
    generator = args.generator if args.generator != "auto" else ("wrk" if shutil.which("wrk") else "python")
    load = Load(args.duration, args.connections, args.threads, args.max_requests)
    pool_size = args.fresh_pool or 300 * args.duration
    started = datetime.now(UTC)
    signal.signal(signal.SIGTERM, lambda signum, frame: sys.exit(128 + signum))
    baselines = [e for e in ENDPOINTS if e.name == BASELINE or (e.name == BARE and not args.no_bare)]
    results: list[Result] = []
    report: RaceReport | None = None
    instance = Path(tempfile.mkdtemp(prefix="ecert-bench-redeem-"))
    try:
        with bench_server(args, instance) as (server, database):
            seeder = Seeder(server)
            seeder.certificates()
            print(f"gunicorn {server.base_url} ({args.workers} workers); {generator}, {args.connections} "
                  f"connections, {args.duration} s per measurement\n")
            if not args.skip_throughput:
                for endpoint in (*baselines, redeem_endpoint(seeder), *baselines):
                    results.append(measure(server, endpoint, load, generator, pool_size, instance))
            if not args.skip_race:
                report = race(server, seeder, args.race_grants, args.race_attempts)
    finally:
        if args.keep:
            print(f"kept {instance}")
        else:
            shutil.rmtree(instance, ignore_errors=True)

    if results:
        set_ratios(results)
        print_table(results)
    if report is not None:
        print_race(report, database, args.workers)
    path = write_json(results, report, {"generator": generator, "workers": args.workers, "database": database,
                                        "connections": args.connections, "duration_s": args.duration,
                                        "cpus": os.cpu_count(), "python": sys.version.split()[0]}, started)
    print(f"\nwritten {path.relative_to(PROJECT_ROOT)}")
    failed = any(r.unexpected for r in results) or (report is not None and report.double_redemptions > 0)
    return 1 if failed else 0


def write_json(results: list[Result], report: RaceReport | None, settings: dict[str, Any], started: datetime) -> Path:
    RESULTS.mkdir(parents=True, exist_ok=True)
    path = RESULTS / f"redeem-{started:%Y%m%dT%H%M%SZ}.json"
    rows = [{"endpoint": r.endpoint, "requests": r.requests, "seconds": round(r.seconds, 3), "rps": round(r.rps, 1),
             "p50_ms": round(r.p50_ms, 3), "p99_ms": round(r.p99_ms, 3), "ratio_to_baseline": r.ratio,
             "ratio_to_bare": r.bare_ratio, "statuses": r.statuses, "notes": r.notes} for r in results]
    race_row = None if report is None else {
        "grants": report.grants, "attempts_per_grant": report.attempts_per_grant,
        "successes_per_grant": {str(k): v for k, v in sorted(report.successes.items())},
        "statuses": dict(report.statuses), "double_redemptions": report.double_redemptions,
        "unredeemed": report.unredeemed, "redemptions_in_database": report.redemptions_in_database,
        "used_grants_in_database": report.used_grants_in_database, "seconds": round(report.seconds, 2)}
    path.write_text(json.dumps({"started": started.isoformat(), "git": git_revision(), "settings": settings,
                                "results": rows, "race": race_row}, indent=2) + "\n")
    return path


if __name__ == "__main__":
    try:
        sys.exit(main())
    except KeyboardInterrupt:
        sys.exit("interrupted; gunicorn stopped")
