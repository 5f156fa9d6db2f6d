"""Operator commands (`flask --app wsgi ...`): catalog, keys, clients, audit, jobs, demo. Each commits once."""

from __future__ import annotations

import getpass
import hashlib
import json
import sys
import time
from datetime import timedelta
from pathlib import Path
from typing import Any

import click
from flask import Flask, current_app
from flask.cli import AppGroup
from sqlalchemy.exc import IntegrityError, OperationalError

from backend.audit import chain as audit_service
from backend.catalog import loader as catalog_service
from backend.cli.demo import (
    DEMO_CITIZEN,
    DEMO_COMPANY,
    demo_assertion,
    ensure_demo_certificates,
    ensure_demo_client,
)
from backend.config import PROJECT_ROOT
from backend.core.context import evidence_storage, field_cipher, keystore, now
from backend.crypto.encryption import DecryptionError
from backend.errors import DatabaseBusy, DomainError, database_error
from backend.extensions import db
from backend.identity import clients as clients_service
from backend.identity import login_nonces
from backend.imports import batches as imports_service
from backend.issuance import expiry as expiry_service
from backend.issuance.issuer import Issuer
from backend.jobs import imports as import_runner
from backend.jobs.callbacks import deliver as deliver_callbacks
from backend.kernel.actors import Actor
from backend.keys.data_keys import reencrypt_stale
from backend.keys.keystore import PLATFORM_PURPOSES, PURPOSE_CERTIFICATE
from backend.objections import deadlines as objection_deadlines
from backend.objections import evidence as objection_evidence
from backend.sharing import access_requests as access_requests_service
from backend.sharing import counter_service
from backend.sharing.request_callbacks import claim_due
from backend.wallet import showcodes as showcodes_service

DEMO_CATALOG = PROJECT_ROOT / "catalog" / "xinyang"

EX_TEMPFAIL = 75  # sysexits.h: a temporary failure, worth running again (cron, systemd timers)


class CommandGroup(AppGroup):
    """A group whose commands answer a busy or unreachable database with one clear line, not a traceback: a lock
    held past ECERT_DB_LOCK_TIMEOUT_MS (e.g. by a long import on SQLite) exits 75, to be run again."""

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except OperationalError as exc:
            db.session.rollback()
            error = database_error(exc)
            click.echo(f"错误 [{error.code}]: {error.message}", err=True)
            sys.exit(EX_TEMPFAIL if isinstance(error, DatabaseBusy) else 1)


catalog_cli = CommandGroup("catalog", help="证照目录: load and list departments and certificate types.")
keys_cli = CommandGroup("keys", help="Signing keys: create, rotate, import.")
clients_cli = CommandGroup("clients", help="Department API clients.")
audit_cli = CommandGroup("audit", help="Audit chain: verify and checkpoint.")
jobs_cli = CommandGroup("jobs", help="Scheduled, idempotent maintenance jobs.")
certificates_cli = CommandGroup("certificates", help="Certificates: batch import of files delivered offline.")
demo_cli = CommandGroup("demo", help="Demo data for local development.")


def _operator() -> Actor:
    try:
        name = getpass.getuser()
    except (KeyError, OSError):
        name = "unknown"
    return Actor.operator(name)


def _fail(error: DomainError) -> None:
    db.session.rollback()
    click.echo(f"错误 [{error.code}]: {error.message}", err=True)
    if error.details:
        click.echo(json.dumps(error.details, ensure_ascii=False), err=True)
    sys.exit(1)


def _read_jwk(path: str) -> dict[str, Any]:
    try:
        data = json.loads(Path(path).read_text())
    except (OSError, json.JSONDecodeError) as exc:
        raise click.BadParameter(f"cannot read JWK from {path}: {exc}") from exc
    if not isinstance(data, dict):
        raise click.BadParameter("a JWK file holds one JSON object (a JWK or a JWK Set)")
    return data


@catalog_cli.command("load")
@click.argument("path", type=click.Path(exists=True, file_okay=False, path_type=Path))
def catalog_load(path: Path) -> None:
    """Load departments and certificate types from PATH (departments.yaml + types/*.yaml). Idempotent."""
    try:
        report = catalog_service.load_catalog(db.session(), path, keystore(), actor=_operator(), now=now(),
                                              signing_alg=current_app.config["ECERT_SIGNING_ALG"])
        db.session.commit()
    except DomainError as error:
        _fail(error)
        return
    click.echo(f"departments: {len(report.departments_created)} created, {len(report.departments_updated)} updated; "
               f"types: {len(report.types_created)} created, {len(report.types_updated)} new versions; "
               f"{report.unchanged} unchanged")


@catalog_cli.command("list")
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
def catalog_list(as_json: bool) -> None:
    """Departments (code, name) and the certificate types each may issue."""
    departments = catalog_service.list_departments(db.session())
    rows: list[dict[str, Any]] = [{"code": d.code, "name": d.name, "level": d.level,
             "types": [{"type_code": t.type_code, "name": t.name, "catalog_version": t.catalog_version}
                       for t in d.issuable_types]} for d in departments]
    if as_json:
        click.echo(json.dumps({"departments": rows}, ensure_ascii=False, indent=2))
        return
    for row in rows:
        click.echo(f"{row['code']}  {row['name']}")
        for t in row["types"]:
            click.echo(f"    {t['type_code']}  {t['name']} (v{t['catalog_version']})")


@keys_cli.command("init")
def keys_init() -> None:
    """Create the platform keys and a signing key for every department that has none. Idempotent."""
    store, moment, created = keystore(), now(), []
    alg = current_app.config["ECERT_SIGNING_ALG"]
    for purpose in PLATFORM_PURPOSES:
        try:
            store.active_key(purpose)
        except DomainError:
            created.append(store.create_key(purpose, None, "ES256", moment).kid)
    for dept in catalog_service.list_departments(db.session()):
        try:
            store.active_key(PURPOSE_CERTIFICATE, dept)
        except DomainError:
            created.append(store.create_key(PURPOSE_CERTIFICATE, dept, alg, moment).kid)
    if created:
        audit_service.record_event(db.session(), actor=_operator(), action="keys.initialised", now=moment,
                                   object_type="signing_key", details={"kids": created})
    db.session.commit()
    click.echo(f"{len(created)} key(s) created")


@keys_cli.command("rotate")
@click.option("--dept", "dept_code", help="USCC of the department whose signing key rotates.")
@click.option("--platform", "purpose", type=click.Choice(PLATFORM_PURPOSES), help="Rotate a platform key instead.")
@click.option("--alg", type=click.Choice(["ES256", "EdDSA"]), default=None)
def keys_rotate(dept_code: str | None, purpose: str | None, alg: str | None) -> None:
    """Make a new active key; the old public key stays published so old signatures verify."""
    if bool(dept_code) == bool(purpose):
        raise click.UsageError("give exactly one of --dept or --platform")
    try:
        dept = catalog_service.get_department(db.session(), dept_code) if dept_code else None
        moment = now()
        key = keystore().rotate(purpose or PURPOSE_CERTIFICATE, dept, alg or current_app.config["ECERT_SIGNING_ALG"],
                                moment)
        audit_service.record_event(db.session(), actor=_operator(), action="keys.rotated", now=moment,
                                   object_type="signing_key", object_id=key.kid,
                                   details={"department": dept_code, "purpose": key.purpose, "alg": key.alg})
        db.session.commit()
    except DomainError as error:
        _fail(error)
        return
    click.echo(key.kid)


@keys_cli.command("reencrypt-data")
def keys_reencrypt_data() -> None:
    """Re-encrypt personal data still sealed under an older ECERT_DATA_KEYS version. Idempotent."""
    report = reencrypt_stale(db.session(), field_cipher(), actor=_operator(), now=now())
    db.session.commit()
    click.echo(f"{report.blobs} value(s) in {report.rows} row(s) re-encrypted under data key "
               f"version {field_cipher().current_version}")
    files = objection_evidence.reseal_evidence(db.session(), evidence_storage())
    db.session.rollback()  # read only
    click.echo(f"{files} objection evidence file(s) re-sealed")


@keys_cli.command("import")
@click.option("--dept", "dept_code", required=True, help="USCC of the department that owns the key.")
@click.option("--jwk", "jwk_file", required=True, type=click.Path(exists=True, dir_okay=False))
def keys_import(dept_code: str, jwk_file: str) -> None:
    """Register the public key of a department's own signing system."""
    try:
        dept = catalog_service.get_department(db.session(), dept_code)
        moment = now()
        key = keystore().import_public_key(dept, _read_jwk(jwk_file), moment)
        audit_service.record_event(db.session(), actor=_operator(), action="keys.imported", now=moment,
                                   object_type="signing_key", object_id=key.kid, details={"department": dept_code})
        db.session.commit()
    except DomainError as error:
        _fail(error)
        return
    except ValueError as error:
        db.session.rollback()
        raise click.BadParameter(str(error)) from error
    click.echo(key.kid)


@clients_cli.command("add")
@click.option("--dept", "dept_code", required=True, help="USCC of the department.")
@click.option("--name", required=True)
@click.option("--scope", "scopes", multiple=True, required=True, type=click.Choice(sorted(clients_service.SCOPES)))
@click.option("--jwk", "jwk_file", required=True, type=click.Path(exists=True, dir_okay=False),
              help="Public JWK (or JWK Set) of the client's signing key.")
@click.option("--callback", "callbacks", multiple=True, help="Allowed callback URL prefix (repeatable).")
def clients_add(dept_code: str, name: str, scopes: tuple[str, ...], jwk_file: str, callbacks: tuple[str, ...]) -> None:
    """Register a department business system; prints its client_id."""
    try:
        dept = catalog_service.get_department(db.session(), dept_code)
        client = clients_service.register_client(db.session(), department=dept, name=name, scopes=list(scopes),
                                                 jwks=_read_jwk(jwk_file), callback_allowlist=list(callbacks),
                                                 actor=_operator(), now=now())
        db.session.commit()
    except DomainError as error:
        _fail(error)
        return
    click.echo(client.client_id)


@clients_cli.command("disable")
@click.argument("client_id")
def clients_disable(client_id: str) -> None:
    """Disable a client: its tokens stop working at once."""
    try:
        clients_service.set_client_active(db.session(), client_id, False, actor=_operator(), now=now())
        db.session.commit()
    except DomainError as error:
        _fail(error)


@clients_cli.command("callbacks")
@click.argument("client_id")
@click.argument("urls", nargs=-1)
def clients_callbacks(client_id: str, urls: tuple[str, ...]) -> None:
    """Set the client's callback allow-list to URLS (origins with an optional path prefix; none clears it)."""
    try:
        client = access_requests_service.set_callback_allowlist(
            db.session(), client_id, list(urls), allow_http=current_app.config["ECERT_ENV"] != "production",
            actor=_operator(), now=now())
        db.session.commit()
    except DomainError as error:
        _fail(error)
        return
    click.echo("\n".join(client.callback_allowlist) or "(empty)")


@audit_cli.command("verify")
def audit_verify() -> None:
    """Recompute the whole hash chain against the signed checkpoints; names the first problem and its seq.

    Exit code 0 when intact, 2 when a problem was found, 1 when the master key does not open the platform key (the
    checkpoints could not be checked at all).
    """
    keys = keystore()
    try:
        keys.check_platform_key()
    except DecryptionError:
        db.session.rollback()
        click.echo("audit chain NOT VERIFIED: the master key does not open the platform key, so the signed "
                   "checkpoints cannot be checked", err=True)
        sys.exit(1)
    report = audit_service.verify_chain(db.session(), keys)
    db.session.rollback()
    if report.ok:
        newest = ("no signed checkpoint yet" if report.newest_checkpoint_seq is None else
                  f"{report.checkpoints} signed checkpoints, newest at seq {report.newest_checkpoint_seq}")
        click.echo(f"audit chain OK: {report.checked} events, head seq {report.head_seq}; {newest}")
        return
    # Checkpoint signatures are checked before the walk along the chain: no event was verified yet then.
    verified = "" if report.problem is audit_service.Problem.CHECKPOINT_FORGED else \
        f" ({report.checked} events verified before it)"
    click.echo(f"audit chain BROKEN at seq {report.first_bad_seq}: {report.problem} — {report.explanation()}{verified}",
               err=True)
    sys.exit(2)


@audit_cli.command("checkpoint")
def audit_checkpoint() -> None:
    """Sign the current chain head with the platform key."""
    try:
        cp = audit_service.checkpoint(db.session(), keystore(), actor=_operator(), now=now())
        db.session.commit()
    except DomainError as error:
        _fail(error)
        return
    click.echo(f"checkpoint seq {cp.seq} {cp.chain_hash}")


@audit_cli.command("counter-consents")
@click.option("--since", type=click.DateTime(["%Y-%m-%d"]), help="from this day (UTC), inclusive")
@click.option("--until", type=click.DateTime(["%Y-%m-%d"]), help="to this day (UTC), exclusive")
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
def audit_counter_consents(since: Any, until: Any, as_json: bool) -> None:
    """Consents given at department counters (第十一条), per department: by SMS code and attested by staff."""
    from datetime import UTC

    counts = counter_service.count_counter_consents(db.session(), since=since and since.replace(tzinfo=UTC),
                                                    until=until and until.replace(tzinfo=UTC))
    db.session.rollback()
    rows = [{"department": c.department_code, "sms_code": c.sms_code, "staff_attested": c.staff_attested}
            for c in counts]
    if as_json:
        click.echo(json.dumps(rows, ensure_ascii=False))
        return
    click.echo(f"{'department':<20} {'sms_code':>9} {'staff_attested':>15}")
    for row in rows:
        click.echo(f"{row['department']:<20} {row['sms_code']:>9} {row['staff_attested']:>15}")


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
              help="Callbacks claimed per round; rounds continue until none is due.")
def jobs_callbacks(batch: int) -> None:
    """Deliver due access-request callbacks, retrying failed ones with backoff. Idempotent; safe on two nodes."""
    totals: dict[str, int] = {}
    while True:
        outcomes = deliver_callbacks(lambda: claim_due(db.session(), now=now(), limit=batch))
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
    try:
        report = objection_deadlines.escalate_overdue_objections(
            db.session(), lead_department_code=current_app.config["ECERT_OBJECTION_LEAD_DEPARTMENT"],
            actor=Actor.system("jobs.objections"), now=now())
    except DomainError as error:
        _fail(error)
        return
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
        outcomes = import_runner.run_pending(workers=workers)
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


FILE_SUFFIXES = {".jsonl": "jsonl", ".ndjson": "jsonl", ".csv": "csv"}


@certificates_cli.command("import")
@click.argument("path", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option("--dept", "dept_code", required=True, help="USCC of the issuing department.")
@click.option("--mode", type=click.Choice(imports_service.MODES), default="all", show_default=True,
              help="all: any bad row imports nothing; partial: the good rows are imported.")
@click.option("--format", "file_format", type=click.Choice(imports_service.FORMATS), default=None,
              help="Default: from the extension (.jsonl/.ndjson or .csv).")
@click.option("--workers", type=click.IntRange(0, 16), default=2, show_default=True,
              help="Processes that sign alongside this one (0: sign in this process only).")
def certificates_import(path: Path, dept_code: str, mode: str, file_format: str | None, workers: int) -> None:
    """Import certificates from a JSON Lines or CSV file for a department. Re-running the same file adds nothing."""
    file_format = file_format or FILE_SUFFIXES.get(path.suffix.lower())
    if file_format is None:
        raise click.UsageError("cannot tell the format from the file name: give --format jsonl or --format csv")
    with path.open("rb") as handle:
        digest = hashlib.file_digest(handle, "sha256").hexdigest()
    try:
        department = catalog_service.get_department(db.session(), dept_code)
        issuer = Issuer(db.session(), keystore(), field_cipher(), department,
                        public_url=current_app.config["ECERT_PUBLIC_URL"], actor=_operator(), now=now(),
                        expected=imports_service.MAX_ROWS)
        with path.open("rb") as handle, click.progressbar(length=path.stat().st_size, label="导入中",
                                                          show_percent=True) as bar:
            batch, created = imports_service.import_certificates(
                db.session(), issuer, handle, file_format=file_format, mode=mode,
                idempotency_key=f"cli:{mode}:{digest}",  # the file itself: the same file is imported once per mode
                max_rows=current_app.config["ECERT_MAX_BATCH_ROWS"], workers=workers,
                progress=lambda _rows, done: bar.update(done - bar.pos))
        db.session.commit()
    except DomainError as error:
        _fail(error)
        return
    except IntegrityError:
        db.session.rollback()
        click.echo("错误 [concurrent_conflict]: 并发冲突，请重试", err=True)
        sys.exit(1)
    if not created:
        click.echo(f"该文件已导入过（批次 {batch.public_id}），未重复导入")
    click.echo(f"批次 {batch.public_id}: {batch.status}; 共 {batch.total_rows} 行，导入 {batch.imported_rows}，"
               f"跳过 {batch.skipped_rows}（已存在），失败 {batch.failed_rows}")
    for entry in batch.report[:20]:
        click.echo(f"  第 {entry['row']} 行 {entry['field'] or ''} [{entry['reason']}] {entry['detail']}", err=True)
    if imports_service.report_truncated(batch) or len(batch.report) > 20:
        click.echo("  …（更多问题见 GET /gov/v1/certificates/batches/<id>）", err=True)
    if batch.status == imports_service.FAILED:
        sys.exit(1)


@demo_cli.command("load")
def demo_load() -> None:
    """Load the Xinyang demo catalog and keys, and register a demo client (key under instance/). Idempotent."""
    ctx = click.get_current_context()
    ctx.invoke(catalog_load, path=DEMO_CATALOG)
    ctx.invoke(keys_init)
    session, actor, moment = db.session(), _operator(), now()
    client_id, key_path = ensure_demo_client(session, Path(current_app.instance_path), actor=actor, now=moment)
    issued = ensure_demo_certificates(session, keystore(), field_cipher(),
                                      public_url=current_app.config["ECERT_PUBLIC_URL"], actor=actor, now=moment)
    db.session.commit()
    click.echo(f"demo client {client_id}; private key in {key_path}")
    click.echo(f"{issued} demo certificate(s) issued; log in as the demo citizen with POST /api/v1/auth/login "
               f"{json.dumps({'provider': 'dev', **DEMO_CITIZEN, 'companies': [DEMO_COMPANY]}, ensure_ascii=False)}")


@demo_cli.command("assertion")
def demo_client_assertion() -> None:
    """Print a fresh client assertion of the demo client, for trying the token endpoint with curl."""
    key_path = Path(current_app.instance_path) / "demo-client.json"
    if not key_path.exists():
        raise click.UsageError("run `flask --app wsgi demo load` first")
    client_id, assertion = demo_assertion(key_path, current_app.config["ECERT_PUBLIC_URL"] + "/gov/v1/oauth/token")
    click.echo(json.dumps({"client_id": client_id, "client_assertion": assertion}))


def register(app: Flask) -> None:
    for group in (catalog_cli, keys_cli, clients_cli, audit_cli, jobs_cli, certificates_cli, demo_cli):
        app.cli.add_command(group)
