"""Running queued batch imports: `flask --app wsgi jobs imports`, and in development a thread of the web process."""

from __future__ import annotations

import logging
import threading
from collections import Counter
from collections.abc import Callable
from datetime import timedelta

from flask import Flask, current_app
from sqlalchemy.exc import OperationalError, SQLAlchemyError

from backend.core.context import deps, import_spool, now
from backend.core.spool import SealedSpool, SpoolMissing
from backend.crypto.encryption import DecryptionError
from backend.errors import DomainError, database_error
from backend.extensions import db
from backend.imports import batches as imports_service
from backend.imports import jobs as import_jobs
from backend.imports.jobs import BatchFileUnreadable, ClaimLost, ImportFailed, ImportInterrupted
from backend.issuance.issuer import Issuer
from backend.kernel.actors import Actor
from backend.models import Department, ImportBatch

log = logging.getLogger("ecert.imports")

LEFTOVER_AGE = timedelta(hours=1)  # a sealed file no batch refers to, older than this, is deleted
POLL_SECONDS = 30.0  # the development thread also looks for work (e.g. a batch to reclaim) this often


def run_pending(*, workers: int | None = None, limit: int | None = None) -> Counter[str]:
    """One pass: claim and import batches until none is queued (or `limit` were handled). Needs an app context.

    Answers how many batches ended how: completed, failed (a row's problem is in the report; an unexpected error
    fails the batch at once as `import_failed`), interrupted (the database busy or unreachable: rolled back and left
    to be claimed again once stale), lost (another worker took it over).
    """
    config = current_app.config
    worker = import_jobs.worker_name()
    stale_after = timedelta(seconds=config["ECERT_IMPORT_STALE_SECONDS"])
    outcomes: Counter[str] = Counter()
    delete_leftovers()
    while limit is None or sum(outcomes.values()) < limit:
        try:
            batch = import_jobs.claim_next(db.session(), worker=worker, now=now(), stale_after=stale_after)
            db.session.commit()
        except SQLAlchemyError:  # e.g. SQLite's write lock held by a long import elsewhere: try on the next pass
            db.session.rollback()
            log.warning("could not claim an import batch; trying again later", exc_info=True)
            break
        if batch is None:
            break
        outcomes[import_batch(batch.id, worker, workers=config["ECERT_IMPORT_WORKERS"] if workers is None
                              else workers)] += 1
    return outcomes


def import_batch(batch_id: int, worker: str, *, workers: int = 0) -> str:
    """Import one batch that `worker` has claimed (and committed the claim of); answers the outcome."""
    session, config = db.session(), current_app.config
    batch = session.get(ImportBatch, batch_id)
    assert batch is not None
    context = {"batch": batch.public_id, "worker": worker, "attempt": batch.attempts}
    actor = import_jobs.batch_actor(session, batch)
    publishing = batch.publishing_since is not None  # decided to publish: it completes, whoever submitted it
    try:  # the client that submitted it must still be allowed to issue (it may have been disabled since)
        if not publishing:
            import_jobs.check_submitter(session, batch)
    except DomainError as error:
        log.warning("import batch refused: its client may no longer issue", extra={"fields": {
            **context, "error": error.code}})
        return _fail(batch, error, worker, actor)
    if batch.attempts > config["ECERT_IMPORT_MAX_ATTEMPTS"]:
        log.error("import batch interrupted too often; failed", extra={"fields": context})
        return _fail(batch, ImportInterrupted(), worker, actor)
    if batch.attempts > 1:
        log.warning("import batch claimed again after its worker stopped reporting", extra={"fields": context})
    log.info("import batch started", extra={"fields": context})
    spool = import_spool()

    def still_held() -> None:  # first in each of the import's transactions
        import_jobs.keep_claim(session, batch, worker=worker, now=now())

    def before_finish() -> None:  # in the last transaction, before anything is published
        import_jobs.check_submitter(session, batch)  # a client disabled during a long import stops it too

    def issuer() -> Issuer:
        department = session.get(Department, batch.department_id)
        assert department is not None
        return Issuer(deps(), department, actor=actor, now=now(), expected=imports_service.MAX_ROWS)

    steps = imports_service.Steps(commit=session.commit, begin=still_held)
    try:
        if publishing:  # its worker stopped while publishing: publish the rest of what it staged
            imports_service.resume_publishing(session, issuer(), batch, steps=steps)
        else:
            if batch.spool_key is None:
                raise SpoolMissing(batch.public_id)
            with spool.open(batch.spool_key) as source:
                imports_service.process_batch(session, issuer(), batch, source, max_rows=config["ECERT_MAX_BATCH_ROWS"],
                                              workers=workers, before_finish=before_finish, steps=steps)
        spool_key, batch.spool_key = batch.spool_key, None
        session.commit()
    except DomainError as error:  # the file as a whole (header, encoding, too many rows, no rows); the client
        session.rollback()
        return _fail(batch, error, worker, actor)
    except (SpoolMissing, DecryptionError, imports_service.SpooledFileChanged):
        session.rollback()
        log.error("spooled batch file missing, unreadable or failing its integrity check",
                  extra={"fields": context}, exc_info=True)
        return _fail(batch, BatchFileUnreadable(), worker, actor)
    except ClaimLost:
        session.rollback()
        log.warning("import batch taken over by another worker; this import stopped (the other goes on)",
                    extra={"fields": context})
        return "lost"
    except OperationalError as error:  # the database busy or gone: the same file may well import later
        session.rollback()
        log.warning("import batch interrupted by the database; to be claimed again once stale and started afresh",
                    extra={"fields": {**context, "error": database_error(error).code}}, exc_info=True)
        return "interrupted"
    except Exception:  # not a row's problem (those go to the report), not the file's: it would fail again
        session.rollback()
        log.exception("import batch failed unexpectedly; rolled back", extra={"fields": context})
        return _fail(batch, ImportFailed(), worker, actor)
    _delete_quietly(spool, spool_key)
    log.info("import batch finished", extra={"fields": {**context, "status": batch.status}})
    return str(batch.status)


def _fail(batch: ImportBatch, error: DomainError, worker: str, actor: Actor) -> str:
    """Fail a claimed batch as a whole, in a transaction of its own, and delete its file."""
    session = db.session()
    try:
        import_jobs.keep_claim(session, batch, worker=worker, now=now())
    except ClaimLost:
        session.rollback()
        return "lost"
    spool_key, batch.spool_key = batch.spool_key, None
    imports_service.fail_batch(session, batch, error, actor=actor, now=now())
    session.commit()
    if spool_key is not None:
        _delete_quietly(import_spool(), spool_key)
    return imports_service.FAILED


def _delete_quietly(spool: SealedSpool, key: str | None) -> None:
    if key is None:
        return
    try:
        spool.delete(key)
    except OSError:  # left for delete_leftovers
        log.warning("could not delete a spooled batch file", exc_info=True)


def delete_leftovers() -> int:
    """Delete sealed files that no batch waits for any more (a request or a job died between writing the file and
    committing): only files older than LEFTOVER_AGE, so an upload being committed right now is left alone."""
    spool, session, deleted = import_spool(), db.session(), 0
    for key in list(spool.storage.keys_older_than(now() - LEFTOVER_AGE)):
        if not import_jobs.is_referenced(session, key):
            _delete_quietly(spool, key)
            deleted += 1
    session.rollback()  # only read
    return deleted


# -- the development runner -------------------------------------------------------------------------------------

class InProcessRunner:
    """A daemon thread of the web process that imports queued batches: woken after each submission's commit,
    and every POLL_SECONDS (batches left from before a restart, dead workers' batches). Development only, unless
    ECERT_IMPORT_IN_PROCESS is set: in production operators run `flask jobs imports`."""

    def __init__(self, app: Flask) -> None:
        self.app = app
        self._wake = threading.Event()
        self._lock = threading.Lock()
        self._thread: threading.Thread | None = None
        self._stopping = False

    def wake(self) -> None:
        self.start()
        self._wake.set()

    def start(self) -> None:
        with self._lock:
            if not self._stopping and (self._thread is None or not self._thread.is_alive()):
                self._thread = threading.Thread(target=self._loop, name="ecert-imports", daemon=True)
                self._thread.start()

    def stop(self, timeout: float | None = None) -> None:
        """Let the thread end after the batch it is importing (tests; a daemon thread ends with the process)."""
        with self._lock:
            self._stopping = True
            thread = self._thread
        self._wake.set()
        if thread is not None:
            thread.join(timeout)

    def _loop(self) -> None:
        while not self._stopping:
            self.run_once()
            self._wake.wait(POLL_SECONDS)
            self._wake.clear()

    def run_once(self) -> Counter[str]:
        with self.app.app_context():
            try:
                return run_pending()
            except Exception:
                db.session.rollback()
                log.exception("in-process import runner failed; trying again later")
                return Counter()
            finally:
                db.session.remove()


def in_process_runner(app: Flask) -> InProcessRunner | None:
    """The app's development runner, or None when ECERT_IMPORT_IN_PROCESS is off."""
    if not app.config["ECERT_IMPORT_IN_PROCESS"]:
        return None
    runner: InProcessRunner | None = app.extensions.get("ecert.import_runner")
    if runner is None:
        real_app = getattr(app, "_get_current_object", lambda: app)()  # the app itself, not the `current_app` proxy
        runner = app.extensions["ecert.import_runner"] = InProcessRunner(real_app)
    return runner


def start_in_process() -> None:
    """Start the current app's development runner, if it has one (it picks up batches queued before a restart)."""
    runner = in_process_runner(current_app)
    if runner is not None:
        runner.start()


def wake_after_response() -> Callable[[], None] | None:
    """What wakes the current app's development runner once a submission's response is out, if it has one."""
    runner = in_process_runner(current_app)
    return runner.wake if runner is not None else None
