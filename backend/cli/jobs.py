"""`flask jobs ...`: scheduled, idempotent maintenance jobs (purge, callbacks, expiry, reminders, imports)."""

from __future__ import annotations

import sys
import time
from datetime import timedelta

import click
from flask import current_app

from backend.cli.base import CommandGroup, failing_cleanly
from backend.core.context import now
from backend.core.launcher import job_launcher
from backend.extensions import db
from backend.identity import clients as clients_service
from backend.identity import login_nonces
from backend.issuance import expiry as expiry_service
from backend.kernel.actors import Actor
from backend.objections import deadlines as objection_deadlines
from backend.sharing.request_callbacks import due_callbacks
from backend.wallet import showcodes as showcodes_service

jobs_cli = CommandGroup("jobs", help="Scheduled, idempotent maintenance jobs.")


@jobs_cli.command("purge")
@click.option("--batch", type=click.IntRange(1, 10_000), default=1000, show_default=True,
              help="Show-code check records deleted per transaction; rounds continue until none is old enough.")
def jobs_purge(batch: int) -> None:
    """Forget expired client-assertion ids, citizen login nonces, accepted-ID-token entries and show-code check
    records older than ECERT_SHOW_CODE_USE_RETENTION_DAYS. Idempotent; safe on two nodes at once."""
    moment = now()
    removed = clients_service.purge_used_assertions(db.session(), now=moment)
    login_state = login_nonces.purge_login_state(db.session(), now=moment)
    db.session.commit()
    click.echo(f"{removed} expired assertion id(s) removed")
    click.echo(f"{login_state} expired login nonce(s) and ID-token replay entries removed")
    days = current_app.config["ECERT_SHOW_CODE_USE_RETENTION_DAYS"]
    cutoff, checks = moment - timedelta(days=days), 0
    while True:  # one commit per batch: no lock outlives a batch
        deleted = showcodes_service.purge_show_code_uses(db.session(), before=cutoff, limit=batch)
        db.session.commit()
        checks += deleted
        if deleted < batch:
            break
    click.echo(f"{checks} show-code check record(s) older than {days} day(s) removed")


@jobs_cli.command("callbacks")
@click.option("--batch", type=click.IntRange(1, 1000), default=100, show_default=True,
              help="Due callbacks looked up per round (each claimed as it is posted); rounds continue until none is "
                   "due.")
def jobs_callbacks(batch: int) -> None:
    """Deliver due access-request callbacks, retrying failed ones with backoff. Idempotent; safe on two nodes."""
    totals: dict[str, int] = {}
    while True:
        outcomes = job_launcher().run("callbacks", due=lambda: due_callbacks(db.session(), now=now(), limit=batch))
        for outcome, number in outcomes.items():
            totals[outcome] = totals.get(outcome, 0) + number
        if sum(outcomes.values()) < batch:
            break
    click.echo(f"{totals.get('delivered', 0)} callback(s) delivered, {totals.get('retry', 0)} to retry, "
               f"{totals.get('abandoned', 0)} given up")


@jobs_cli.command("expire")
def jobs_expire() -> None:
    """Mark certificates past their valid_until (China time) as expired. Idempotent; safe on two nodes at once."""
    # One commit per run: the expiries, their events, notifications and the run's audit event land together.
    expired = expiry_service.expire_certificates(db.session(), actor=Actor.system("jobs.expire"), now=now())
    db.session.commit()
    click.echo(f"{expired} certificate(s) expired")


@jobs_cli.command("remind")
def jobs_remind() -> None:
    """Remind holders before expiry (ECERT_REMINDER_DAYS) and send each issuing department a digest. Idempotent."""
    sent = expiry_service.send_expiry_reminders(db.session(), actor=Actor.system("jobs.remind"), now=now(),
                                                horizons=current_app.config["ECERT_REMINDER_DAYS"])
    db.session.commit()
    click.echo(f"{sent} expiry reminder(s) sent")


@jobs_cli.command("objections")
def jobs_objections() -> None:
    """Escalate overdue objections to the city administrators (牵头单位), once per level. Idempotent; safe on two
    nodes at once."""
    with failing_cleanly():
        report = objection_deadlines.escalate_overdue_objections(
            db.session(), lead_department_code=current_app.config["ECERT_OBJECTION_LEAD_DEPARTMENT"],
            actor=Actor.system("jobs.objections"), now=now())
    db.session.commit()
    click.echo(f"{report.total} overdue objection(s) escalated ({report.acknowledge} not acknowledged, "
               f"{report.resolve} not resolved in time)")


@jobs_cli.command("imports")
@click.option("--watch", is_flag=True, help="Keep looking for queued batches until stopped (a service), instead of "
                                            "one pass.")
@click.option("--interval", type=click.IntRange(1, 3600), default=5, show_default=True,
              help="With --watch: seconds between looks when the queue is empty.")
@click.option("--workers", type=click.IntRange(0, 16), default=None,
              help="Processes that sign alongside this one (default: ECERT_IMPORT_WORKERS).")
def jobs_imports(watch: bool, interval: int, workers: int | None) -> None:
    """Import queued batches (POST /gov/v1/certificates/batches) one by one; reclaims batches whose worker died.
    Safe on several nodes at once: each batch is claimed by one worker."""
    interrupted = 0
    while True:
        outcomes = job_launcher().run("imports", workers=workers)
        db.session.remove()
        interrupted += outcomes["interrupted"]
        if outcomes or not watch:
            click.echo(f"{outcomes['completed']} batch(es) completed, {outcomes['failed']} failed, "
                       f"{outcomes['interrupted']} interrupted (retried once stale), {outcomes['lost']} taken over")
        if not watch:
            break
        time.sleep(interval)
    if interrupted:
        sys.exit(1)
