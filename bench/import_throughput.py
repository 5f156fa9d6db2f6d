"""Batch import throughput (not a test): certificates per second, end to end, on a fresh database.

Generates N valid rows (营业执照 and 食品经营许可证 of the demo department, made by tests/factories.py), then runs
the import service in this process exactly as `flask --app wsgi certificates import FILE --dept …` does:
validation, identifiers, signing (with `--workers` forked signers, the CLI's default 2), encryption, status-list
slots, bulk inserts, the commits — in short transactions (one per chunk that stages it, one that decides to publish,
then one per publishing step), as the job imports a queued batch. It also times each transaction, from its first
statement to its commit, and prints the longest of each kind (staging, deciding, publishing): how long other writers
may wait for the import at most on SQLite. Each round uses a fresh database: an SQLite
file in a temporary instance, or with `--database-url` a new database on that PostgreSQL server (dropped
afterwards). Usage:
`python bench/import_throughput.py --rows 20000 --rounds 2` (see bench/README.md).
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

BENCH = Path(__file__).resolve().parent
sys.path.insert(0, str(BENCH.parent))  # run as a script, only bench/ is on sys.path
sys.path.insert(0, str(BENCH.parent / "tests"))  # valid test data: USCCs, certificate bodies

from factories import BUSINESS_LICENCE, FOOD_LICENCE, certificate_body  # noqa: E402
from run import flask_command, scratch_database, server_env  # noqa: E402

from backend.cli.demo import DEMO_DEPARTMENT  # noqa: E402

TARGET = 2000  # issue 3: ≥ 2,000 certificates/s on SQLite on this 2-core machine


def write_rows(path: Path, rows: int) -> None:
    """`rows` valid JSON Lines rows, the two types of the demo department in turn, each with its own holder."""
    with path.open("w", encoding="utf-8") as out:
        for i in range(rows):
            body = certificate_body(BUSINESS_LICENCE if i % 2 == 0 else FOOD_LICENCE)
            out.write(json.dumps(body, ensure_ascii=False) + "\n")


def cpu_seconds() -> float:
    """CPU time (user + system) of this process and of its children that have ended (the signing workers)."""
    own, children = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + children.ru_utime + children.ru_stime


@dataclass
class Timed:
    """One import: rows imported, seconds and CPU seconds end to end, the batch's status, and the longest
    transaction of each kind in seconds."""

    imported: int
    seconds: float
    cpu: float
    status: str
    stage: float
    decide: float
    publish: float
    publish_steps: int


def import_file(path: Path, workers: int) -> Timed:
    """One import, timed from the service call to the last commit, and each of its transactions."""
    from backend.app import create_app
    from backend.catalog.loader import get_department
    from backend.core.context import deps, now
    from backend.extensions import db
    from backend.imports import batches as imports
    from backend.issuance.issuer import Issuer
    from backend.kernel.actors import Actor

    app = create_app()
    publish, deciding = imports._Run.publish, [0]
    spans: list[list[float]] = []  # [first statement, commit] of each of the import's transactions

    def timed_publish(run: imports._Run) -> bool:
        deciding[0] = len(spans) - 1  # publishing begins in the transaction that stages the last chunk
        return publish(run)

    def begin() -> None:
        spans.append([time.perf_counter(), 0.0])

    def commit() -> None:
        db.session.commit()
        spans[-1][1] = time.perf_counter()

    imports._Run.publish = timed_publish  # type: ignore[method-assign]
    with app.app_context():
        try:
            started, cpu_started = time.perf_counter(), cpu_seconds()
            issuer = Issuer(deps(), get_department(db.session(), DEMO_DEPARTMENT), actor=Actor.operator("bench"),
                            now=now(), expected=imports.MAX_ROWS)
            with path.open("rb") as handle:
                batch, _created = imports.import_certificates(
                    db.session(), issuer, handle, file_format="jsonl", mode="all",
                    idempotency_key=f"bench:{path.name}", max_rows=app.config["ECERT_MAX_BATCH_ROWS"],
                    workers=workers, steps=imports.Steps(commit=commit, begin=begin))
            commit()
            ended = time.perf_counter()
            seconds, cpu = ended - started, cpu_seconds() - cpu_started
            lengths = [end - start for start, end in spans]
            staging, publishing = lengths[:deciding[0]], lengths[deciding[0] + 1:]
            return Timed(batch.imported_rows, seconds, cpu, batch.status, max(staging, default=0.0),
                         lengths[deciding[0]], max(publishing, default=0.0), len(publishing))
        finally:
            imports._Run.publish = publish  # type: ignore[method-assign]
            db.session.remove()
            db.engine.dispose()


def one_round(rows_file: Path, database_url: str | None, workers: int, keep: bool) -> Timed:
    instance = Path(tempfile.mkdtemp(prefix="ecert-import-bench-"))
    saved = dict(os.environ)
    try:
        with scratch_database(instance, database_url, keep) as url:
            env = server_env(instance, url, "http://127.0.0.1:8000", "WARNING")
            flask_command(env, "db", "upgrade")
            flask_command(env, "demo", "load")
            os.environ.update(env)
            return import_file(rows_file, workers)
    finally:
        os.environ.clear()
        os.environ.update(saved)
        if keep:
            print(f"kept {instance}")
        else:
            shutil.rmtree(instance, ignore_errors=True)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rows", type=int, default=20_000, help="certificates in the file (default 20000)")
    parser.add_argument("--rounds", type=int, default=2, help="imports, each on a fresh database (default 2)")
    parser.add_argument("--workers", type=int, default=2, help="forked signing processes, as the CLI's --workers "
                                                                 "(default 2; 0 signs in this process only)")
    parser.add_argument("--database-url", help="PostgreSQL server URL: each round creates and drops its own "
                                               "database there (default: SQLite in a temporary instance)")
    parser.add_argument("--keep", action="store_true", help="keep the instance directories and databases")
    args = parser.parse_args()

    scratch = Path(tempfile.mkdtemp(prefix="ecert-import-rows-"))
    try:
        rows_file = scratch / "certificates.jsonl"
        write_rows(rows_file, args.rows)
        database = "postgresql" if args.database_url else "sqlite"
        print(f"{args.rows} rows ({rows_file.stat().st_size / 1e6:.1f} MB JSON Lines); {database}; "
              f"--workers {args.workers}; {os.cpu_count()} CPUs; target ≥ {TARGET}/s on SQLite\n")
        print(f"{'round':>5} {'imported':>9} {'seconds':>8} {'certificates/s':>15} {'CPU s':>7} "
              f"{'per CPU-s':>10} {'longest transaction s: stage':>28} {'decide':>7} {'publish':>8} {'steps':>6} "
              f"{'load':>5}  status")
        rates = []
        for round_number in range(1, args.rounds + 1):
            timed = one_round(rows_file, args.database_url, args.workers, args.keep)
            rates.append(timed.imported / timed.seconds)
            print(f"{round_number:>5} {timed.imported:>9} {timed.seconds:>8.2f} {rates[-1]:>15.0f} {timed.cpu:>7.2f} "
                  f"{timed.imported / timed.cpu:>10.0f} {timed.stage:>28.3f} {timed.decide:>7.3f} "
                  f"{timed.publish:>8.3f} {timed.publish_steps:>6} {os.getloadavg()[0]:>5.1f}  {timed.status}")
            if timed.imported != args.rows:
                print(f"only {timed.imported} of {args.rows} rows were imported", file=sys.stderr)
                return 1
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    print(f"\nslowest round: {min(rates):.0f} certificates/s"
          + (f" (target {TARGET}: {'met' if min(rates) >= TARGET else 'MISSED'})" if database == "sqlite" else ""))
    return 0


if __name__ == "__main__":
    sys.exit(main())
