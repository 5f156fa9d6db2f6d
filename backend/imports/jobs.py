"""The queue of batch imports: claiming a batch for one worker, keeping the claim, and giving up on it."""

from __future__ import annotations

import os
import secrets
import socket
from datetime import datetime, timedelta

from sqlalchemy import and_, or_, select, update
from sqlalchemy.orm import Session

from backend.errors import DomainError
from backend.imports.batches import PROCESSING, QUEUED
from backend.kernel.actors import Actor
from backend.models import ApiClient, Department, ImportBatch


class ClaimLost(Exception):
    """Another worker took the batch over (this one was thought dead): its import must be rolled back."""


# A failed batch stays failed, and the same Idempotency-Key answers it again: a resubmission needs a new key.
class ImportInterrupted(DomainError):
    code = "import_interrupted"
    status = 500
    message = "导入多次中断，批次已失败，请使用新的 Idempotency-Key 重新提交"


class ImportFailed(DomainError):
    """The import raised an error that is neither a row's nor the file's: failed at once (and logged with the batch
    id), not retried, since the same file would fail the same way again. An all-or-nothing batch that fails so
    after it decided to publish keeps what its steps published (imported_rows says how many)."""

    code = "import_failed"
    status = 500
    message = ("导入时发生内部错误，批次已失败，已导入的证照数见 imported_rows"
               "（全部导入（all）模式下，开始发布前失败的批次未导入任何证照）；"
               "请联系平台运维，或使用新的 Idempotency-Key 重新提交（已导入的证照不会重复导入）")


class BatchFileUnreadable(DomainError):
    code = "batch_file_unreadable"
    status = 500
    message = "暂存的批量文件无法读取，批次已失败，请使用新的 Idempotency-Key 重新提交"


class ClientDisabled(DomainError):
    """The client that submitted a queued batch was disabled before the batch was imported."""

    code = "client_disabled"
    status = 403
    message = "提交该批次的业务系统已停用，批次未导入"


class ClientScopeRevoked(DomainError):
    """The client that submitted a queued batch no longer holds the `issue` scope."""

    code = "client_scope_revoked"
    status = 403
    message = "提交该批次的业务系统已不再具有签发（issue）权限，批次未导入"


def worker_name() -> str:
    """This worker, as recorded on the batches it claims: host, process and a random part."""
    return f"{socket.gethostname()[:50]}:{os.getpid()}:{secrets.token_hex(4)}"


def claim_next(session: Session, *, worker: str, now: datetime, stale_after: timedelta) -> ImportBatch | None:
    """The oldest queued batch, or a processing one whose worker stopped reporting, now claimed by `worker`."""
    claimable = or_(ImportBatch.status == QUEUED,
                    and_(ImportBatch.status == PROCESSING, ImportBatch.heartbeat_at < now - stale_after))
    for _ in range(20):  # on SQLite (no row locks) another worker may win between the look and the update
        found = session.execute(select(ImportBatch.id, ImportBatch.status, ImportBatch.attempts).where(claimable)
                                .order_by(ImportBatch.created_at, ImportBatch.id).limit(1)
                                .with_for_update(skip_locked=True)).first()
        if found is None:
            return None
        won = session.execute(
            update(ImportBatch)
            .where(ImportBatch.id == found.id, ImportBatch.status == found.status,
                   ImportBatch.attempts == found.attempts)
            .values(status=PROCESSING, claimed_by=worker, attempts=found.attempts + 1, heartbeat_at=now,
                    processed_rows=0, processed_bytes=0)
            .execution_options(synchronize_session=False)).rowcount  # type: ignore[attr-defined]
        if won == 1:
            batch = session.get(ImportBatch, found.id)
            assert batch is not None
            session.refresh(batch)
            return batch
    return None


def keep_claim(session: Session, batch: ImportBatch, *, worker: str, now: datetime) -> None:
    """Check, in the importing transaction, that `worker` still holds the batch, and hold it to the commit (the row
    stays locked on PostgreSQL, so no one can claim it in between). Raises ClaimLost otherwise."""
    held = session.execute(
        update(ImportBatch)
        .where(ImportBatch.id == batch.id, ImportBatch.claimed_by == worker, ImportBatch.status == PROCESSING)
        .values(heartbeat_at=now)
        .execution_options(synchronize_session=False)).rowcount  # type: ignore[attr-defined]
    if held != 1:
        raise ClaimLost(batch.public_id)


def batch_actor(session: Session, batch: ImportBatch) -> Actor:
    """The one who submitted the batch: its certificates and audit events name them, as a synchronous import would
    have. For a batch a client submitted, the client as it is now (read afresh from the database)."""
    department_code = session.scalar(select(Department.code).where(Department.id == batch.department_id))
    if batch.api_client_id is None:  # an operator's (CLI) batch: the label is all there is
        kind, _, name = batch.submitted_by.partition(":")
        return Actor(kind=kind, id=name, department_code=department_code)
    client_id = session.scalar(select(ApiClient.client_id).where(ApiClient.id == batch.api_client_id))
    return Actor(kind="client", id=str(client_id), department_code=department_code)


def check_submitter(session: Session, batch: ImportBatch) -> None:
    """A batch a client submitted is imported only while that client may still issue for the batch's department:
    active, holding the `issue` scope (as a request would need). Raises ClientDisabled or ClientScopeRevoked.
    Read afresh from the database (not the session's cached client), so a change committed meanwhile counts."""
    if batch.api_client_id is None:
        return
    client = session.execute(select(ApiClient.active, ApiClient.scopes, ApiClient.department_id)
                             .where(ApiClient.id == batch.api_client_id)).one()
    if not client.active or client.department_id != batch.department_id:
        raise ClientDisabled()
    if "issue" not in (client.scopes or []):
        raise ClientScopeRevoked()


def is_referenced(session: Session, spool_key: str) -> bool:
    """Whether a batch still waits for the spooled file (else the file is a leftover to delete)."""
    return session.scalar(select(ImportBatch.id).where(ImportBatch.spool_key == spool_key).limit(1)) is not None
