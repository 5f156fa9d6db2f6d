"""Two app nodes on one PostgreSQL database and one Redis: two gunicorn servers and two job runners (separate
processes, separate instance directories, the same secrets and import spool) run every `flask jobs …` command at
once. Nothing is imported twice, no job is done twice, and a rate limit counts the requests to both nodes together.

Skipped unless ECERT_TEST_DATABASE_URL names a PostgreSQL server and ECERT_TEST_REDIS_URL a Redis database (.ci/run
sets both for its PostgreSQL run). The scenario runs once for the module (20–30 s on a busy 2-core machine); each
test checks one promise. The nodes' processes: node_support.py and node_jobs.py.
"""

from __future__ import annotations

import json
import os
import re
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

import pytest
import sqlalchemy as sa
from cryptography.hazmat.primitives.asymmetric import ec
from flask_migrate import upgrade

from backend.app import create_app
from backend.audit.chain import verify_chain
from backend.catalog.loader import get_department, load_catalog
from backend.config import PROJECT_ROOT
from backend.core.context import keystore
from backend.crypto.jwk import public_jwk
from backend.extensions import db
from backend.identity.clients import register_client
from backend.kernel.actors import Actor
from backend.kernel.china_time import china_today
from backend.models import (
    AccessRequest,
    AuditEvent,
    Certificate,
    CertificateEvent,
    ExpiryReminder,
    ImportBatch,
    Notification,
    ObjectionEscalation,
)
from backend.models.objections import ObjectionEvent
from backend.sharing.access_requests import set_callback_allowlist
from tests.app.node_support import COPIES, JOBS, Answer, Node, client_address, free_port, node_env
from tests.conftest import CIVIL_AFFAIRS, DEMO_CATALOG, SAMR, Citizen, DeptClient, FakeClock, _settings
from tests.factories import BUSINESS_LICENCE, FOOD_LICENCE, certificate_body, resident_id
from tests.sharing.access_request_support import Receiver, ask_body, start_receiver
from tests.support import marriage_of, public_id_of, throwaway_postgres

ADMIN_URL = os.environ.get("ECERT_TEST_DATABASE_URL", "")
REDIS_URL = os.environ.get("ECERT_TEST_REDIS_URL", "")
if not (ADMIN_URL.startswith("postgresql") and REDIS_URL):  # one skip for the module, not one per check
    pytest.skip("needs PostgreSQL (ECERT_TEST_DATABASE_URL) and Redis (ECERT_TEST_REDIS_URL)", allow_module_level=True)

BATCHES = "/gov/v1/certificates/batches"
TOKEN_LIMIT = 6  # token requests per minute and client address, counted across both nodes
SMALL_BATCHES = 12
SEEDED_CALLBACKS, LIVE_CALLBACKS = 10, 6
SUBMITTED, ACCEPTED = 4, 2  # overdue objections still waiting to be accepted, and accepted but unresolved
LAPSED, HORIZONS = -3, {3: 7, 20: 30, 60: 90}  # valid_until − today (days) → the reminder horizon due
VALIDITY: list[int | None] = [LAPSED, 3, 20, 60, 200, None]  # cycled through the rows; None: 长期
SAID = {  # what each job says it did
    "imports": r"(\d+) batch\(es\) completed, (\d+) failed, (\d+) interrupted .*, (\d+) taken over",
    "callbacks": r"(\d+) callback\(s\) delivered, (\d+) to retry, (\d+) given up",
    "objections": r"(\d+) overdue objection\(s\) escalated",
    "expire": r"(\d+) certificate\(s\) expired",
    "remind": r"(\d+) expiry reminder\(s\) sent",
}


# -- the people and systems -----------------------------------------------------------------------------------

def wall_clock() -> datetime:
    return datetime.now(UTC)


def token(node: Node, dept: DeptClient, client_address: str | None = None) -> Answer:
    """POST /gov/v1/oauth/token with a client assertion signed now (the nodes' clock is the real one)."""
    form = {"grant_type": "client_credentials",
            "client_assertion_type": "urn:ietf:params:oauth:client-assertion-type:jwt-bearer",
            "client_assertion": dept.assertion()}
    return node.request("POST", "/gov/v1/oauth/token", urlencode(form),
                        {"Content-Type": "application/x-www-form-urlencoded"}, client_address)


def citizen_token(node: Node) -> str:
    answer = node.send_json("/api/v1/auth/login", {"provider": "dev", "name": "张伟", "id_type": "111",
                                                    "id_number": resident_id(), "companies": []})
    assert answer.status == 200, answer.body
    return str(answer.json()["access_token"])


def ask_and_decline(asker: Node, holder: Node, dept_token: str, callback_url: str) -> str:
    """A department asks on one node, a holder declines on the other: that node posts the callback after its
    response (unless a job claims it first). Answers the request's id."""
    asked = asker.send_json("/gov/v1/access-requests", ask_body(callback_url=callback_url), dept_token)
    assert asked.status == 201, asked.body
    request_id = str(asked.json()["id"])
    declined = holder.send_json(f"/api/v1/access-requests/{request_id}/decline", {}, citizen_token(holder))
    assert declined.status == 200, declined.body
    return request_id


# -- the batches ----------------------------------------------------------------------------------------------

@dataclass
class Batch:
    """A file the department submits, and what its report must say of its rows (by row number)."""

    name: str
    mode: str
    rows: list[dict[str, Any]]
    bad: set[int] = field(default_factory=set)  # rows that fail, whoever imports first
    duplicate: set[int] = field(default_factory=set)  # rows repeating an earlier row's number (duplicate_in_file)
    shared: set[int] = field(default_factory=set)  # rows another batch has too (see `Pair`)
    id: str = ""

    def data(self) -> bytes:
        return b"".join(json.dumps(row, ensure_ascii=False).encode() + b"\n" for row in self.rows)


@dataclass
class Pair:
    """Two partial batches with `shared` rows under the same numbers: whichever publishes first imports them; the
    other skips them (same content) or fails them as `certificate_number_taken` (other content)."""

    first: Batch
    second: Batch
    same_content: bool


def licence(offset: int | None, today: date) -> dict[str, Any]:
    """A licence valid until `offset` days from today (None: 长期, a business licence), issued 400 days ago."""
    issued = (today - timedelta(days=400)).isoformat()
    if offset is None:
        return certificate_body(BUSINESS_LICENCE, issued_on=issued, valid_from=issued)
    return certificate_body(FOOD_LICENCE, issued_on=issued, valid_from=issued,
                            valid_until=(today + timedelta(days=offset)).isoformat())


def licences(count: int, today: date) -> list[dict[str, Any]]:
    return [licence(VALIDITY[n % len(VALIDITY)], today) for n in range(count)]


def other_content(row: dict[str, Any]) -> dict[str, Any]:
    return {**row, "fields": {**row["fields"], "legal_representative": "周志强"}}


def make_batches(today: date) -> tuple[list[Batch], list[Pair], Batch]:
    """Small batches first (the job runners claim them in quick succession), then partial ones (two pairs sharing
    rows, one with a repeated number and an invalid row), all-or-nothing ones (one with an invalid row: imports
    nothing), and one to be sent to both nodes at once under one key."""
    identical, clashing = licences(10, today), licences(10, today)
    first = Batch("p1", "partial", [*identical, *licences(230, today)])
    first.rows += [other_content(first.rows[20]), licence(3, today)]
    first.rows[-1]["holder"] = {**first.rows[-1]["holder"], "code": "91411502MA00000000"}  # a wrong check digit
    first.duplicate, first.bad, first.shared = {len(first.rows) - 1}, {len(first.rows)}, set(range(1, 11))
    second = Batch("p2", "partial", [*licences(240, today), *identical], shared=set(range(241, 251)))
    third = Batch("p3", "partial", [*licences(600, today), *clashing], shared=set(range(601, 611)))
    fourth = Batch("p4", "partial", [*(other_content(row) for row in clashing), *licences(240, today)],
                   shared=set(range(1, 11)))
    broken = Batch("a2", "all", licences(100, today))
    broken.rows[50] = {**broken.rows[50], "issued_on": "2026-02-30"}
    broken.bad = {51}
    small = [Batch(f"s{n}", ("partial", "all")[n % 2], licences(12, today)) for n in range(SMALL_BATCHES)]
    batches = [*small, first, second, third, fourth, Batch("p5", "partial", licences(240, today)),
               Batch("a1", "all", licences(300, today)), broken]
    twice = Batch("a3", "all", licences(120, today))
    return batches, [Pair(first, second, True), Pair(third, fourth, False)], twice


def submit(node: Node, dept_token: str, batch: Batch, key: str) -> Answer:
    return node.request("POST", f"{BATCHES}?mode={batch.mode}", batch.data(), {
        "Authorization": f"Bearer {dept_token}", "Content-Type": "application/x-ndjson", "Idempotency-Key": key})


# -- the scenario ---------------------------------------------------------------------------------------------

@dataclass
class Cluster:
    nodes: list[Node]
    app: Any  # an app of this process on the same database, for reading it
    receiver: Receiver
    batches: list[Batch]
    pairs: list[Pair]
    twice: Batch
    twice_statuses: list[int]
    reports: dict[str, dict[str, Any]]
    rounds: list[dict[str, dict[str, list[dict[str, Any]]]]]  # per round: node → job → outcome of each copy
    callbacks: list[str]  # access requests whose callback is due (seeded and decided during the first round)
    escalations: int  # expected
    spool: Path
    counts_after_round: list[dict[str, int]]
    samr: DeptClient
    today: date

    def scalar(self, query: Any) -> Any:
        return scalar(self.app, query)

    def rows(self, query: Any) -> list[Any]:
        with self.app.app_context():
            return list(db.session.execute(query))


def scalar(app: Any, query: Any) -> Any:
    with app.app_context():
        return db.session.scalar(query)


@pytest.fixture(scope="module")
def fresh_database() -> Iterator[str]:
    with throwaway_postgres(ADMIN_URL, "ecert_nodes") as url:
        yield url


def seed(app: Any, clock: FakeClock, callback_url: str) -> tuple[DeptClient, list[str], int]:
    """Thirty days ago, through this process's app: the catalog and keys; 市场监督管理局's system (issues, asks
    holders, with a callback allow-list) and declined requests whose callbacks wait for the job; objections to
    民政局 left unanswered (SUBMITTED) or accepted and unresolved (ACCEPTED), all past their deadlines now."""
    http = app.test_client()
    with app.app_context():
        store = keystore()
        load_catalog(db.session, DEMO_CATALOG, store, actor=Actor.operator("test"), now=clock())
        store.create_key("platform", None, "ES256", clock())
        store.create_key("wallet", None, "ES256", clock())
        db.session.commit()

    def client(code: str, scopes: list[str]) -> DeptClient:
        private = ec.generate_private_key(ec.SECP256R1())
        with app.app_context():
            registered = register_client(db.session, department=get_department(db.session, code), name="业务系统",
                                         scopes=scopes, jwks=public_jwk(private.public_key()),
                                         actor=Actor.operator("test"), now=clock())
            db.session.commit()
            return DeptClient(registered.client_id, code, private, http, clock, scopes)

    samr, civil = client(SAMR, ["issue", "request"]), client(CIVIL_AFFAIRS, ["issue", "objections"])
    with app.app_context():
        set_callback_allowlist(db.session(), samr.client_id, [callback_url], allow_http=True,
                               actor=Actor.operator("test"), now=clock())
        db.session.commit()
    asker, declines = samr.headers(), []
    for _ in range(SEEDED_CALLBACKS):
        asked = http.post("/gov/v1/access-requests", json=ask_body(callback_url=callback_url), headers=asker)
        assert asked.status_code == 201, asked.get_json()
        holder = login(http)
        # Not closed: a server would post the callback after the response; here it waits for `jobs callbacks`.
        declined = http.post(f"/api/v1/access-requests/{asked.get_json()['id']}/decline", headers=holder.headers)
        assert declined.status_code == 200, declined.get_json()
        declines.append(str(asked.get_json()["id"]))
    queue = civil.headers()
    for n in range(SUBMITTED + ACCEPTED):
        holder = login(http)
        held = marriage_of(holder, app, civil)
        filed = http.post("/api/v1/objections", headers=holder.headers, content_type="multipart/form-data", data={
            "certificate_id": public_id_of(app, held.identifier), "description": "对方姓名登记有误",
            "disputed": json.dumps([{"field": "party_b_name", "claimed_value": "李娜娜"}], ensure_ascii=False)})
        assert filed.status_code == 201, filed.get_json()
        if n >= SUBMITTED:
            accepted = http.post(f"/gov/v1/objections/{filed.get_json()['id']}/accept", json={}, headers=queue)
            assert accepted.status_code == 200, accepted.get_json()
    return samr, declines, 2 * SUBMITTED + ACCEPTED  # unanswered: both levels; accepted: resolving only


def login(http: Any) -> Citizen:
    number = resident_id()
    response = http.post("/api/v1/auth/login", json={"provider": "dev", "name": "张伟", "id_type": "111",
                                                      "id_number": number, "companies": []})
    assert response.status_code == 200, response.get_json()
    body = response.get_json()
    return Citizen(http, "张伟", number, body["access_token"], body["refresh_token"])


COUNTED: dict[str, Callable[[], Any]] = {
    "certificates": lambda: sa.select(sa.func.count()).select_from(Certificate),
    "expired events": lambda: sa.select(sa.func.count()).select_from(CertificateEvent)
    .where(CertificateEvent.event == "expired"),
    "reminders": lambda: sa.select(sa.func.count()).select_from(ExpiryReminder),
    "notifications": lambda: sa.select(sa.func.count()).select_from(Notification),
    "escalations": lambda: sa.select(sa.func.count()).select_from(ObjectionEscalation),
    "audit events": lambda: sa.select(sa.func.count()).select_from(AuditEvent),
}


def submit_batches(nodes: list[Node], dept_token: str, today: date) -> tuple[list[Batch], list[Pair], Batch,
                                                                             list[int]]:
    """Every batch to either node in turn, then one file to both at once under one key; answers the batches and
    the statuses of that race."""
    batches, pairs, twice = make_batches(today)
    for n, batch in enumerate(batches):
        answer = submit(nodes[n % 2], dept_token, batch, f"two-nodes-{batch.name}")
        assert answer.status == 202, answer.body
        batch.id = str(answer.json()["id"])
    answers: list[Answer] = []
    senders = [threading.Thread(target=lambda node=node: answers.append(
        submit(node, dept_token, twice, "two-nodes-twice"))) for node in nodes]
    for sender in senders:
        sender.start()
    for sender in senders:
        sender.join()
    twice.id = next(str(answer.json()["id"]) for answer in answers if answer.status == 202)
    return batches, pairs, twice, sorted(answer.status for answer in answers)


def run_rounds(app: Any, nodes: list[Node], live_decisions: Callable[[], None]
               ) -> tuple[list[dict[str, dict[str, list[dict[str, Any]]]]], list[dict[str, int]]]:
    """Three rounds of every job on both nodes at once (the first with `live_decisions` made meanwhile); answers
    what the jobs said in each and the database's counts after each."""
    rounds, counts = [], []
    for number in range(3):
        for node in nodes:
            node.go()
        if number == 0:
            live_decisions()
        rounds.append({node.name: node.round_results() for node in nodes})
        counts.append({name: int(scalar(app, query())) for name, query in COUNTED.items()})
    return rounds, counts


@pytest.fixture(scope="module")
def cluster(fresh_database: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    root = tmp_path_factory.mktemp("nodes")
    clock = FakeClock(wall_clock() - timedelta(days=30))
    app = create_app(_settings(fresh_database, root / "tests", ECERT_CLOCK=clock,
                               ECERT_IMPORT_SPOOL_DIR=str(root / "shared" / "import-spool")))
    receiver_run = start_receiver()
    receiver = next(receiver_run)
    callback_url = f"{receiver.base}/ecert"
    address = client_address()
    nodes = [Node(name, free_port(), node_env(name, root, database_url=fresh_database, redis_url=REDIS_URL,
                                              ECERT_RATELIMIT_TOKEN=f"{TOKEN_LIMIT} per minute"),
                  (root / f"{name}.log").open("wb"), address) for name in ("node-a", "node-b")]
    try:
        with app.app_context():
            upgrade(directory=str(PROJECT_ROOT / "migrations"))
        for node in nodes:  # they start while this process seeds the database
            node.start()
        seeded, callbacks, escalations = seed(app, clock, callback_url)
        assert receiver.received == []  # the seeded callbacks wait for the job
        with app.app_context():
            db.engine.dispose()
        deadline = time.monotonic() + 120
        for node in nodes:
            node.wait_ready(deadline)
        samr = DeptClient(seeded.client_id, seeded.department_code, seeded.private_key, seeded.http,
                          wall_clock, seeded.scopes)  # type: ignore[arg-type]  # the nodes' clock is the real one
        issued = token(nodes[0], samr)
        assert issued.status == 200, issued.body
        dept_token = str(issued.json()["access_token"])
        today = china_today(wall_clock())
        batches, pairs, twice, twice_statuses = submit_batches(nodes, dept_token, today)

        def live_decisions() -> None:  # while both nodes' jobs run, the deciding node posts the callback itself
            callbacks.extend(ask_and_decline(nodes[n % 2], nodes[(n + 1) % 2], dept_token, callback_url)
                             for n in range(LIVE_CALLBACKS))

        rounds, counts = run_rounds(app, nodes, live_decisions)
        reports = {}
        for n, batch in enumerate([*batches, twice]):
            answer = nodes[n % 2].request("GET", f"{BATCHES}/{batch.id}",
                                          headers={"Authorization": f"Bearer {dept_token}"})
            assert answer.status == 200, answer.body
            reports[batch.name] = answer.json()
        yield Cluster(nodes, app, receiver, batches, pairs, twice, twice_statuses, reports, rounds, callbacks,
                      escalations, root / "shared" / "import-spool", counts, samr, today)
    finally:
        for node in nodes:
            node.stop()
        for node in nodes:
            node.wait()
            node.log.close()
        with app.app_context():
            db.session.remove()
            db.engine.dispose()
        receiver_run.close()


# -- the checks -----------------------------------------------------------------------------------------------

def said(cluster: Cluster, job: str) -> list[int]:
    """The counts `flask jobs JOB` printed, added up over both nodes and every round."""
    totals: list[int] = []
    for results in cluster.rounds:
        for jobs in results.values():
            for outcome in jobs[job]:
                found = re.search(SAID[job], outcome["output"])
                assert found, outcome
                numbers = [int(number) for number in found.groups()]
                totals = [a + b for a, b in zip(totals, numbers, strict=True)] if totals else numbers
    return totals


def _failed_rows(report: dict[str, Any], reason: str | None = None) -> set[int]:
    return {entry["row"] for entry in report["report"] if reason is None or entry["reason"] == reason}


def _audited_count(cluster: Cluster, action: str) -> int:
    return sum(int(details["count"]) for (details,) in cluster.rows(
        sa.select(AuditEvent.details).where(AuditEvent.action == action)))


def test_every_job_ran_on_both_nodes_in_every_round_without_an_error(cluster):
    for number, results in enumerate(cluster.rounds, 1):
        assert set(results) == {"node-a", "node-b"}
        for node, jobs in results.items():
            assert set(jobs) == JOBS and {len(copies) for copies in jobs.values()} == {COPIES}
            failed = {job: copies for job, copies in jobs.items() if any(copy["exit"] != 0 for copy in copies)}
            assert failed == {}, (number, node)


def test_the_nodes_logged_no_error(cluster):
    for node in cluster.nodes:
        text = Path(node.log.name).read_text(errors="replace")
        assert "Traceback" not in text, node.name
        assert not [line for line in text.splitlines() if '"level": "ERROR"' in line or "[ERROR]" in line], node.name


def test_each_batch_was_claimed_once_and_each_node_imported_some(cluster):
    batches = cluster.rows(sa.select(ImportBatch.public_id, ImportBatch.attempts, ImportBatch.claimed_by))
    assert sorted(public_id for public_id, _, _ in batches) == sorted(b.id for b in [*cluster.batches, cluster.twice])
    assert {attempts for _, attempts, _ in batches} == {1}  # never taken over
    importers = {int(str(claimed_by).rsplit(":", 2)[1]) for _, _, claimed_by in batches}
    assert importers == {node.runner_pid for node in cluster.nodes}
    finished = cluster.rows(sa.select(AuditEvent.object_id).where(AuditEvent.action == "certificate.batch_imported"))
    assert Counter(object_id for (object_id,) in finished) == Counter(public_id for public_id, _, _ in batches)
    failed = [batch for batch in cluster.batches if batch.mode == "all" and batch.bad]
    assert said(cluster, "imports") == [len(batches) - len(failed), len(failed), 0, 0]  # none interrupted, taken over


def test_a_file_sent_to_both_nodes_at_once_under_one_key_is_one_batch(cluster):
    # The loser of the race on the key answers 409 (try again: then 200 with the batch), or it came second: 200.
    assert cluster.twice_statuses in ([200, 202], [202, 409])
    report = cluster.reports[cluster.twice.name]
    assert (report["status"], report["imported_rows"]) == ("completed", len(cluster.twice.rows))


def test_each_batch_reports_its_rows_and_shared_rows_went_to_one_batch_of_each_pair(cluster):
    lost: set[str] = set()  # the batch of each pair that published its shared rows second
    for pair in cluster.pairs:
        first, second = (cluster.reports[b.name] for b in (pair.first, pair.second))
        if pair.same_content:
            assert sorted([first["skipped_rows"], second["skipped_rows"]]) == [0, len(pair.first.shared)]
            lost.add(pair.first.name if first["skipped_rows"] else pair.second.name)
        else:
            taken = [_failed_rows(r, "certificate_number_taken") for r in (first, second)]
            assert sorted(taken, key=len) == [set(), (pair.first.shared if taken[0] else pair.second.shared)]
            lost.add(pair.first.name if taken[0] else pair.second.name)
    same = {b.name for pair in cluster.pairs if pair.same_content for b in (pair.first, pair.second)}
    for batch in cluster.batches:
        report = cluster.reports[batch.name]
        failing = batch.bad | batch.duplicate | (batch.shared if batch.name in lost and batch.name not in same
                                                 else set())
        skipped = len(batch.shared) if batch.name in lost and batch.name in same else 0
        assert report["total_rows"] == len(batch.rows), batch.name
        assert _failed_rows(report) == failing and report["failed_rows"] == len(failing), batch.name
        assert _failed_rows(report, "duplicate_in_file") == batch.duplicate, batch.name
        if batch.mode == "all" and failing:
            assert (report["status"], report["imported_rows"], report["skipped_rows"]) == ("failed", 0, 0)
        else:
            assert report["status"] == "completed", batch.name
            assert (report["imported_rows"], report["skipped_rows"]) == \
                (len(batch.rows) - len(failing) - skipped, skipped), batch.name


def test_every_certificate_was_imported_exactly_once(cluster):
    imported = {batch.name: cluster.reports[batch.name]["imported_rows"] for batch in [*cluster.batches,
                                                                                       cluster.twice]}
    per_batch = dict(cluster.rows(sa.select(ImportBatch.public_id, sa.func.count(Certificate.id))
                                  .join(Certificate, Certificate.import_batch_id == ImportBatch.id)
                                  .group_by(ImportBatch.public_id)))
    assert {b.name: per_batch.get(b.id, 0) for b in [*cluster.batches, cluster.twice]} == imported
    numbers = {row["certificate_number"] for batch in [*cluster.batches, cluster.twice]
               if not (batch.mode == "all" and batch.bad)
               for n, row in enumerate(batch.rows, 1) if n not in batch.bad | batch.duplicate}
    assert cluster.scalar(sa.select(sa.func.count()).select_from(Certificate).where(
        Certificate.import_batch_id.is_not(None))) == len(numbers) == sum(imported.values())
    twice = (Certificate.certificate_type_id, Certificate.issuer_department_id, Certificate.number_index)
    assert cluster.rows(sa.select(*twice).group_by(*twice).having(sa.func.count() > 1)) == []
    assert cluster.rows(sa.select(CertificateEvent.certificate_id).where(CertificateEvent.event == "issued")
                        .group_by(CertificateEvent.certificate_id).having(sa.func.count() > 1)) == []
    issued = cluster.rows(sa.select(Notification.certificate_id).where(Notification.kind == "certificate_issued")
                          .group_by(Notification.certificate_id).having(sa.func.count() > 1))
    assert issued == []


def test_the_spool_is_empty_once_every_batch_finished(cluster):
    assert [path for path in cluster.spool.rglob("*") if path.is_file()] == []


def test_each_callback_was_delivered_once(cluster):
    received = Counter(json.loads(item.body)["request_id"] for item in cluster.receiver.received)
    assert received == Counter(cluster.callbacks)
    assert len(cluster.callbacks) == len(set(cluster.callbacks)) == SEEDED_CALLBACKS + LIVE_CALLBACKS
    states = cluster.rows(sa.select(AccessRequest.callback_delivered_at.is_not(None), AccessRequest.callback_attempts,
                                    AccessRequest.callback_next_at))
    assert Counter((delivered, attempts, next_at) for delivered, attempts, next_at in states) == \
        Counter({(True, 1, None): len(cluster.callbacks)})
    delivered = cluster.rows(sa.select(AuditEvent.object_id)
                             .where(AuditEvent.action == "access_request.callback_delivered"))
    assert Counter(object_id for (object_id,) in delivered) == received
    by_jobs, retried, given_up = said(cluster, "callbacks")  # the rest were posted by the deciding node
    assert SEEDED_CALLBACKS <= by_jobs <= len(cluster.callbacks) and retried == given_up == 0


def test_each_overdue_objection_was_escalated_once_per_level(cluster):
    expected = cluster.escalations
    assert cluster.scalar(sa.select(sa.func.count()).select_from(ObjectionEscalation)) == expected
    assert cluster.scalar(sa.select(sa.func.count()).select_from(ObjectionEvent)
                          .where(ObjectionEvent.event == "escalated")) == expected
    assert cluster.scalar(sa.select(sa.func.count()).select_from(Notification)
                          .where(Notification.kind.like("objection_overdue_%"))) == 2 * expected  # lead and handler
    assert cluster.scalar(sa.select(sa.func.count()).select_from(AuditEvent)
                          .where(AuditEvent.action == "objection.escalated")) == expected
    assert said(cluster, "objections") == [expected]


def test_each_lapsed_certificate_was_expired_once(cluster):
    lapsed = dict(cluster.rows(sa.select(Certificate.id, Certificate.status)
                               .where(Certificate.valid_until < cluster.today)))
    assert lapsed and set(lapsed.values()) == {"expired"}
    events = cluster.rows(sa.select(CertificateEvent.certificate_id).where(CertificateEvent.event == "expired"))
    assert Counter(certificate_id for (certificate_id,) in events) == Counter(list(lapsed))
    told = cluster.rows(sa.select(Notification.certificate_id).where(Notification.kind == "certificate_expired"))
    assert Counter(certificate_id for (certificate_id,) in told) == Counter(list(lapsed))
    assert _audited_count(cluster, "certificate.expired") == len(lapsed)
    assert said(cluster, "expire") == [len(lapsed)]


def test_each_certificate_expiring_soon_was_reminded_once_at_its_nearest_horizon(cluster):
    within = (Certificate.valid_until >= cluster.today, Certificate.valid_until <= cluster.today + timedelta(days=90))
    soon = {certificate_id: (identifier, (valid_until - cluster.today).days) for certificate_id, identifier, valid_until
            in cluster.rows(sa.select(Certificate.id, Certificate.identifier, Certificate.valid_until).where(*within))}
    assert soon
    reminders = cluster.rows(sa.select(ExpiryReminder.certificate_id, ExpiryReminder.horizon_days))
    assert sorted(reminders) == sorted((certificate_id, HORIZONS[days]) for certificate_id, (_, days) in soon.items())
    told = cluster.rows(sa.select(Notification.certificate_id).where(Notification.kind == "expiry_reminder"))
    assert Counter(certificate_id for (certificate_id,) in told) == Counter(list(soon))
    digests = cluster.rows(sa.select(Notification.data).where(Notification.kind == "department_expiry_digest"))
    listed = Counter(item["identifier"] for (data,) in digests for item in data["certificates"])
    assert listed == Counter(identifier for identifier, _ in soon.values())
    # One whole digest per department, not one part per node that ran the job at the same moment.
    per_department = Counter(department for (department,) in cluster.rows(
        sa.select(Notification.department_id).where(Notification.kind == "department_expiry_digest")))
    assert per_department and set(per_department.values()) == {1}, per_department
    assert _audited_count(cluster, "certificate.expiry_reminded") == len(soon)
    assert said(cluster, "remind") == [len(soon)]


def test_running_every_job_again_on_both_nodes_changes_nothing(cluster):
    *_, second, third = cluster.counts_after_round
    assert third == second


def test_the_audit_chain_of_both_nodes_is_intact(cluster):
    with cluster.app.app_context():
        report = verify_chain(db.session(), keystore())
        assert report.ok, report.explanation()
        assert report.checked == report.head_seq


def test_a_rate_limit_counts_the_requests_to_both_nodes_together(cluster):
    address = client_address()
    form = urlencode({"grant_type": "client_credentials",
                      "client_assertion_type": "urn:ietf:params:oauth:client-assertion-type:jwt-bearer",
                      "client_assertion": "not.a.jwt"})
    answers = [cluster.nodes[n % 2].request("POST", "/gov/v1/oauth/token", form,
                                            {"Content-Type": "application/x-www-form-urlencoded"}, address)
               for n in range(TOKEN_LIMIT + 2)]
    assert [a.status for a in answers] == [401] * TOKEN_LIMIT + [429, 429]
    assert [int(a.headers["X-RateLimit-Remaining"]) for a in answers[:TOKEN_LIMIT]] == \
        list(range(TOKEN_LIMIT - 1, -1, -1))
    assert all(0 < int(a.headers["Retry-After"]) <= 60 for a in answers[TOKEN_LIMIT:])
    # Another client address has its own count, on either node.
    assert token(cluster.nodes[1], cluster.samr).status == 200
