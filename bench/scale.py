"""City-scale benchmark (not a test): N certificates imported through the real import path, hot paths at 10,000 and N.

One run: a fresh database (PostgreSQL with `--database-url`, else SQLite), `db upgrade`, `demo load`; the data set of
bench/generate.py (N certificates, ~N/5 holders) imported file by file with `flask --app wsgi certificates import`
(the operator's import of files delivered offline: 存量证照电子化), first 10,000 certificates, then the rest. After the
first 10,000 and again at N, gunicorn serves the platform (and the bare Flask app of bench/run.py) and verify, show-code
mint and scan, wallet list and grant redemption are measured as bench/run.py measures them. It reports certificates/s
overall and over the first and last `--window` rows, and each endpoint's p50/p99 at N against 10,000.
Usage: `python bench/scale.py --database-url postgresql://postgres@127.0.0.1:5432/postgres` (see bench/README.md).
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import sqlalchemy as sa

BENCH = Path(__file__).resolve().parent
sys.path.insert(0, str(BENCH))

import generate  # noqa: E402
import run  # noqa: E402
from redeem import Seeder, redeem_endpoint  # noqa: E402

MEASURED = ["verify", "show-code mint", "scan json", "wallet list"]
SMALL = 10_000  # the hot paths are measured at 10,000 certificates and at N (issue 13)
P99_TARGET = 1.2  # p99 at N ≤ 1.2 × p99 at 10,000
RATE_TARGET = 3500  # certificates/s, end to end
WINDOW_TARGET = 0.85  # the last window's rate within 15 % of the first's


@dataclass
class Imported:
    """One file imported: its rows, the seconds of `flask certificates import` (process start included), and the CPU
    seconds of that process and its signing workers (not the database server's)."""

    file: str
    department: str
    rows: int
    seconds: float
    status: str
    cpu: float = 0.0
    server_cpu: float | None = None  # the PostgreSQL backend's CPU seconds (local server), None if unknown

    @property
    def rate(self) -> float:
        return self.rows / self.seconds if self.seconds else 0.0


def children_cpu() -> float:
    used = resource.getrusage(resource.RUSAGE_CHILDREN)
    return used.ru_utime + used.ru_stime


IMPORTER = "ecert-scale-import"  # application_name of the imports' database connections


class ServerCpu(threading.Thread):
    """The CPU seconds of the PostgreSQL backends of connections named IMPORTER, read from /proc (a server on this
    machine) every 0.2 s while an import runs, since a backend's counters go when its connection ends (the last
    0.2 s are missed). Stays None when the server is elsewhere or the database is SQLite."""

    def __init__(self, database_url: str) -> None:
        super().__init__(daemon=True)
        self.engine = sa.create_engine(database_url) if database_url.startswith("postgresql") else None
        self.seen: dict[int, float] = {}
        self.done = threading.Event()

    def run(self) -> None:
        assert self.engine is not None
        with self.engine.connect() as conn:
            while not self.done.wait(0.2):
                pids = conn.execute(sa.text("SELECT pid FROM pg_stat_activity WHERE application_name = :name"),
                                    {"name": IMPORTER}).scalars().all()
                conn.rollback()
                for pid in pids:
                    try:
                        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
                    except OSError:
                        continue
                    self.seen[pid] = (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")

    def __enter__(self) -> ServerCpu:
        if self.engine is not None:
            self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        if self.engine is not None:
            self.done.set()
            self.join()
            self.engine.dispose()

    @property
    def seconds(self) -> float | None:
        return sum(self.seen.values()) if self.seen else None


def import_file(env: dict[str, str], batch: generate.BatchFile, workers: int) -> Imported:
    started, cpu = time.perf_counter(), children_cpu()
    url = env["ECERT_DATABASE_URL"]
    if url.startswith("postgresql"):  # named, so that its backend's CPU can be found
        url += ("&" if "?" in url else "?") + f"application_name={IMPORTER}"
    with ServerCpu(env["ECERT_DATABASE_URL"]) as server:
        done = subprocess.run([sys.executable, "-m", "flask", "--app", "wsgi", "certificates", "import",
                               str(batch.path), "--dept", batch.department, "--workers", str(workers)],
                              cwd=run.PROJECT_ROOT, env={**env, "ECERT_DATABASE_URL": url}, capture_output=True,
                              text=True)
    seconds = time.perf_counter() - started
    summary = next((line for line in done.stdout.splitlines() if line.startswith("批次 ")), "")
    if done.returncode != 0 or "completed" not in summary or f"导入 {batch.rows}，" not in summary:
        raise RuntimeError(f"import of {batch.path.name} failed ({done.returncode}): {summary}\n"
                           f"{done.stdout[-2000:]}{done.stderr[-2000:]}")
    return Imported(batch.path.name, batch.department, batch.rows, seconds, "completed", children_cpu() - cpu,
                    server.seconds)


def department_order(sizes: list[int], window: int) -> list[str]:
    """The department of each file: the files of the first and of the last `window` rows are the same department's
    (market supervision: 营业执照 and 食品经营许可证), so that the two rates compare the same work at different table
    sizes; the files between go round the other departments (and that one again)."""
    first = last = 0
    while first < len(sizes) and sum(sizes[:first]) < window:
        first += 1
    while last < len(sizes) - first and sum(sizes[len(sizes) - last:]) < window:
        last += 1
    middle = len(sizes) - first - last
    others = generate.DEPARTMENTS[1:] + generate.DEPARTMENTS[:1]
    return ([generate.DEPARTMENTS[0]] * first + [others[i % len(others)] for i in range(middle)]
            + [generate.DEPARTMENTS[0]] * last)


def window_rate(imported: list[Imported], window: int, *, last: bool) -> tuple[float, int, float, float | None]:
    """Certificates/s over the first (or last) `window` rows, counting whole files; the rows counted; and the
    milliseconds of CPU per certificate there of the import processes and of the database server (or None)."""
    rows, seconds, cpu, server = 0, 0.0, 0.0, 0.0
    counted = list(reversed(imported) if last else imported)
    taken = []
    for item in counted:
        if rows >= window:
            break
        rows, seconds, cpu = rows + item.rows, seconds + item.seconds, cpu + item.cpu
        taken.append(item)
    known = all(item.server_cpu is not None for item in taken)
    server = sum(item.server_cpu or 0.0 for item in taken)
    return ((rows / seconds if seconds else 0.0), rows, (cpu / rows * 1000 if rows else 0.0),
            (server / rows * 1000 if rows and known else None))


def analyze(database_url: str) -> float:
    """ANALYZE on PostgreSQL, as autovacuum would after so many inserts (this server may run without it)."""
    engine = sa.create_engine(database_url, isolation_level="AUTOCOMMIT")
    try:
        if engine.dialect.name != "postgresql":
            return 0.0
        started = time.perf_counter()
        with engine.connect() as conn:
            conn.execute(sa.text("ANALYZE"))
        return time.perf_counter() - started
    finally:
        engine.dispose()


def count_certificates(database_url: str) -> int:
    engine = sa.create_engine(database_url)
    try:
        with engine.connect() as conn:
            return int(conn.execute(sa.text("SELECT count(*) FROM certificate")).scalar_one())
    finally:
        engine.dispose()


def measure_phase(env: dict[str, str], instance: Path, args: argparse.Namespace, generator: str,
                  label: str) -> list[run.Result]:
    """The platform and the bare Flask app on gunicorn; the baselines, then each endpoint followed by them."""
    port = run.free_port()
    base_url = f"http://127.0.0.1:{port}"
    env = {**env, "ECERT_PUBLIC_URL": base_url}
    load = run.Load(args.duration, args.connections, args.threads, args.max_requests)
    print(f"\nmeasuring at {label} certificates: gunicorn {args.server_workers} workers, {generator}, "
          f"{args.connections} connections, {args.duration} s per endpoint")
    with run.gunicorn(env, port, args.server_workers, instance / f"gunicorn-{label}.log"), \
            run.bare_gunicorn(env, args.server_workers, instance) as bare_url:
        server = run.Server(base_url, instance, env, bare_url)  # a new citizen and company, 20 certificates
        endpoints = [e for e in run.ENDPOINTS if e.name in (run.BASELINE, run.BARE, *MEASURED)]
        results = run.measure_all(server, endpoints, load, generator, args.fresh_pool or 2000 * args.duration,
                                  instance)
        # Grants are seeded through the services, slower than the other one-time requests: as bench/redeem.py.
        redeem = redeem_endpoint(Seeder(server))
        results.append(run.measure(server, redeem, load, generator, 300 * args.duration, instance))
        results += [run.measure(server, e, load, generator, 0, instance) for e in endpoints[:2]]
    run.set_ratios(results)
    run.print_table(results)
    return results


def by_endpoint(results: list[run.Result]) -> dict[str, run.Result]:
    """The endpoints' results (the baselines' first run)."""
    found: dict[str, run.Result] = {}
    for result in results:
        found.setdefault(result.endpoint, result)
    return found


def print_import(imported: list[Imported], total: int, args: argparse.Namespace, database: str) -> dict[str, Any]:
    seconds = sum(item.seconds for item in imported)
    overall = total / seconds if seconds else 0.0
    first, first_rows, first_cpu, first_server = window_rate(imported, args.window, last=False)
    last, last_rows, last_cpu, last_server = window_rate(imported, args.window, last=True)
    print(f"\nimport ({database}, `flask certificates import --workers {args.workers}`, {len(imported)} files; CPU "
          "ms per certificate of the import's processes and of its database backend):")
    print(f"{'file':<34} {'rows':>8} {'seconds':>8} {'certificates/s':>15} {'CPU import':>11} {'CPU server':>11}")
    for item in imported:
        server = f"{item.server_cpu / item.rows * 1000:.3f}" if item.server_cpu is not None else "-"
        print(f"{item.file:<34} {item.rows:>8} {item.seconds:>8.1f} {item.rate:>15.0f} "
              f"{item.cpu / item.rows * 1000:>11.3f} {server:>11}")
    print(f"overall: {total} certificates in {seconds:.1f} s = {overall:.0f}/s (target ≥ {RATE_TARGET}: "
          f"{'ok' if overall >= RATE_TARGET else 'MISS'})")
    ratio = last / first if first else 0.0
    print(f"first {first_rows} rows {first:.0f}/s, last {last_rows} rows {last:.0f}/s: last/first {ratio:.2f} "
          f"(target ≥ {WINDOW_TARGET}: {'ok' if ratio >= WINDOW_TARGET else 'MISS'})")
    if first_server is not None and last_server is not None:
        print(f"CPU per certificate, first → last: import {first_cpu:.3f} → {last_cpu:.3f} ms, database "
              f"{first_server:.3f} → {last_server:.3f} ms (what the machine's other load does not change)")
    return {"certificates": total, "seconds": round(seconds, 2), "rate": round(overall, 1),
            "first_window": {"rows": first_rows, "rate": round(first, 1), "cpu_ms_each": round(first_cpu, 4),
                             "server_cpu_ms_each": first_server},
            "last_window": {"rows": last_rows, "rate": round(last, 1), "cpu_ms_each": round(last_cpu, 4),
                            "server_cpu_ms_each": last_server},
            "last_over_first": round(ratio, 3),
            "files": [{**asdict(item), "seconds": round(item.seconds, 2)} for item in imported]}


def print_comparison(small: list[run.Result], large: list[run.Result], total: int) -> list[dict[str, Any]]:
    at_small, at_large = by_endpoint(small), by_endpoint(large)
    print(f"\nhot paths at {total} certificates against {SMALL} (p99 target ≤ {P99_TARGET} × at {SMALL}):")
    print(f"{'endpoint':<16} {'p50 ms':>8} {'→':>1} {'p50 ms':<8} {'p99 ms':>8} {'→':>1} {'p99 ms':<8} "
          f"{'p99 ratio':>9} {'req/s':>8} {'→':>1} {'req/s':<8} {'vs bare':>7} {'→':>1} {'vs bare':<7}")
    rows = []
    for name in [*MEASURED, "grant redeem"]:
        a, b = at_small.get(name), at_large.get(name)
        if a is None or b is None:
            continue
        ratio = b.p99_ms / a.p99_ms if a.p99_ms else 0.0
        verdict = "ok" if ratio <= P99_TARGET else "MISS"

        def bare(r: run.Result) -> str:
            return f"{r.bare_ratio:.2f}" if r.bare_ratio is not None else "-"

        print(f"{name:<16} {a.p50_ms:>8.1f} → {b.p50_ms:<8.1f} {a.p99_ms:>8.1f} → {b.p99_ms:<8.1f} "
              f"{ratio:>6.2f} {verdict:<4} {a.rps:>8.1f} → {b.rps:<8.1f} {bare(a):>7} → {bare(b):<7}")
        rows.append({"endpoint": name, "p50_ms": [round(a.p50_ms, 2), round(b.p50_ms, 2)],
                     "p99_ms": [round(a.p99_ms, 2), round(b.p99_ms, 2)], "p99_ratio": round(ratio, 3),
                     "rps": [round(a.rps, 1), round(b.rps, 1)], "ratio_to_bare": [a.bare_ratio, b.bare_ratio],
                     "ratio_to_healthz": [a.ratio, b.ratio]})
    return rows


def result_rows(results: list[run.Result]) -> list[dict[str, Any]]:
    return [{"endpoint": r.endpoint, "requests": r.requests, "rps": round(r.rps, 1), "p50_ms": round(r.p50_ms, 3),
             "p99_ms": round(r.p99_ms, 3), "ratio_to_healthz": r.ratio, "ratio_to_bare": r.bare_ratio,
             "statuses": r.statuses, "notes": r.notes} for r in results]


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--certificates", type=int, default=1_000_000, help="N (default 1000000)")
    parser.add_argument("--small", action="store_true", help="N = 100000 (a quicker run)")
    parser.add_argument("--database-url", help="PostgreSQL server URL: the run creates and drops its own database "
                                               "there (default: SQLite in the temporary instance directory)")
    parser.add_argument("--workers", type=int, default=2, help="the import's signing processes (its --workers)")
    parser.add_argument("--file-rows", type=int, default=generate.FILE_ROWS,
                        help=f"rows per file, at most ECERT_MAX_BATCH_ROWS (default {generate.FILE_ROWS})")
    parser.add_argument("--window", type=int, default=100_000, help="rows of the first and last rates (100000)")
    parser.add_argument("--import-only", action="store_true", help="no hot-path measurements")
    parser.add_argument("--analyze-between", action="store_true",
                        help="ANALYZE after each file, as autovacuum would after each import's commit (default: the "
                             "import never gets fresh statistics, as on a server without autovacuum)")
    parser.add_argument("--no-analyze", action="store_true",
                        help="do not ANALYZE PostgreSQL before measuring the hot paths (default: ANALYZE, as "
                             "autovacuum would after the import; the import itself never gets fresh statistics)")
    parser.add_argument("--server-workers", type=int, default=2, help="gunicorn workers (default 2)")
    parser.add_argument("--duration", type=int, default=10, help="seconds of load per endpoint (default 10)")
    parser.add_argument("--connections", type=int, default=8, help="concurrent connections (default 8)")
    parser.add_argument("--threads", type=int, default=2, help="wrk threads (default 2)")
    parser.add_argument("--max-requests", type=int, default=200_000, help="Python generator request cap")
    parser.add_argument("--fresh-pool", type=int, default=None,
                        help="prepared one-time requests per endpoint (default 2000 per second of --duration)")
    parser.add_argument("--generator", choices=["auto", "wrk", "python"], default="auto")
    parser.add_argument("--keep", action="store_true", help="keep the instance directory, files and database")
    return parser.parse_args()


def main() -> int:
    args = parse_args()
    total = 100_000 if args.small else args.certificates
    generator = args.generator if args.generator != "auto" else ("wrk" if shutil.which("wrk") else "python")
    started = datetime.now(UTC)
    signal.signal(signal.SIGTERM, lambda signum, frame: sys.exit(128 + signum))
    instance = Path(tempfile.mkdtemp(prefix="ecert-bench-scale-"))
    measured: dict[str, list[run.Result]] = {}
    imported: list[Imported] = []
    try:
        with run.scratch_database(instance, args.database_url, keep=args.keep) as database_url:
            env = run.server_env(instance, database_url, "http://127.0.0.1:8000", "WARNING")
            database = database_url.split("://")[0].split("+")[0]
            print(f"instance {instance}; database {database}; preparing schema and demo data")
            run.flask_command(env, "db", "upgrade")
            run.flask_command(env, "demo", "load")
            clock = time.perf_counter()
            sizes = generate.file_sizes(total, min(SMALL, total), args.file_rows)
            files = list(generate.files(total, instance / "files", first=min(SMALL, total), file_rows=args.file_rows,
                                        departments=department_order(sizes, args.window)))
            print(f"generated {total} certificates in {len(files)} files in {time.perf_counter() - clock:.0f} s; "
                  f"importing with `flask certificates import --workers {args.workers}`")
            done = 0
            for batch in files:
                imported.append(import_file(env, batch, args.workers))
                done += batch.rows
                if args.analyze_between:
                    analyze(database_url)  # not timed
                print(f"  {batch.path.name}: {batch.rows} rows in {imported[-1].seconds:.1f} s "
                      f"({imported[-1].rate:.0f}/s); {done} certificates; load {os.getloadavg()[0]:.1f}", flush=True)
                if done == SMALL and total > SMALL and not args.import_only:
                    if not args.no_analyze:
                        analyze(database_url)
                    measured["small"] = measure_phase({**env, "ECERT_LOG_LEVEL": "INFO"}, instance, args, generator,
                                                      str(SMALL))
            stored = count_certificates(database_url)
            print(f"{stored} certificates in the database (the demo's and the bench holders' included)")
            if not args.import_only:
                if not args.no_analyze:
                    print(f"ANALYZE took {analyze(database_url):.1f} s")
                measured["large"] = measure_phase({**env, "ECERT_LOG_LEVEL": "INFO"}, instance, args, generator,
                                                  str(total))
    finally:
        if args.keep:
            print(f"kept {instance}")
        else:
            shutil.rmtree(instance, ignore_errors=True)

    report: dict[str, Any] = {"started": started.isoformat(), "git": run.git_revision(), "database": database,
                              "settings": {"certificates": total, "import_workers": args.workers,
                                           "server_workers": args.server_workers, "generator": generator,
                                           "duration_s": args.duration, "connections": args.connections,
                                           "analyze": not args.no_analyze, "analyze_between": args.analyze_between,
                                           "cpus": os.cpu_count()}}
    report["import"] = print_import(imported, total, args, database)
    if "small" in measured and "large" in measured:
        report["hot_paths"] = print_comparison(measured["small"], measured["large"], total)
    report["measurements"] = {label: result_rows(results) for label, results in measured.items()}
    run.RESULTS.mkdir(parents=True, exist_ok=True)
    path = run.RESULTS / f"scale-{started:%Y%m%dT%H%M%SZ}.json"
    path.write_text(json.dumps(report, indent=2, ensure_ascii=False) + "\n")
    print(f"\nwritten {path.relative_to(run.PROJECT_ROOT)}")
    unexpected = any(r.unexpected for results in measured.values() for r in results)
    return 1 if unexpected else 0


if __name__ == "__main__":
    try:
        sys.exit(main())
    except KeyboardInterrupt:
        sys.exit("interrupted; gunicorn stopped")
