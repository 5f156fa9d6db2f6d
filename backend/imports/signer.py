"""Signing a batch's certificates (`Issuer.build_row`: identify, sign, encrypt), in this process or in
forked workers."""

from __future__ import annotations

import dataclasses
import gc
import multiprocessing
import threading
from multiprocessing.connection import Connection
from multiprocessing.process import BaseProcess
from typing import Any, NamedTuple, cast

from sqlalchemy import Table
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.orm.attributes import instance_dict

from backend.issuance.issuer import Issuer, PreparedCertificate
from backend.models import Base

Signed = list[tuple[PreparedCertificate, dict[str, Any]]]  # certificates and their rows, ready to INSERT
RowFailure = tuple[PreparedCertificate, str]  # a certificate whose row could not be built, and why (the error's type)


def _build_each(issuer: Issuer, items: list[PreparedCertificate], batch_id: int) -> list[dict[str, Any] | str]:
    """`build_row` for each item; an item whose row fails (whatever the error) gives the error's type name instead,
    so that one bad row cannot take its chunk, or its batch, down with it."""
    built: list[dict[str, Any] | str] = []
    for item in items:
        try:
            built.append(issuer.build_row(item, origin="imported", import_batch_id=batch_id))
        except SQLAlchemyError:
            raise  # the database's trouble, not the row's (and the session must not be used on)
        except Exception as exc:
            built.append(type(exc).__name__)
    return built


def columns_of(table: Table) -> tuple[str, ...]:
    """The columns a bulk INSERT writes: all but the generated id."""
    return tuple(column.key for column in table.columns if column.key != "id")


CERTIFICATES = Base.metadata.tables["certificate"]
CERTIFICATE_COLUMNS = columns_of(CERTIFICATES)


def values(instance: Any, columns: tuple[str, ...]) -> dict[str, Any]:
    """The column values of an unsaved ORM object, for a Core INSERT (unset columns are NULL)."""
    state = instance_dict(instance)
    return {name: state.get(name) for name in columns}


class _Slot(NamedTuple):
    """A status-list slot's list as `Issuer.build_row` reads it, without the ORM object (workers hold no session)."""

    id: int
    list_number: int


class _Type(NamedTuple):
    """A certificate type as `Issuer.build_row` reads it: types met after the fork reach the workers this way."""

    id: int
    type_code: str
    catalog_version: int


class _AssignedSlots:
    """Stands in for the SlotAllocator in a worker: hands out the slots the parent process took for its rows."""

    def __init__(self, slots: list[tuple[_Slot, int]]) -> None:
        self._slots = iter(slots)

    def take(self) -> tuple[_Slot, int]:
        return next(self._slots)


Job = tuple[list[PreparedCertificate], list[tuple[_Slot, int]]]


def _sign_in_worker(conn: Connection, inherited: list[Connection], issuer: Issuer, batch_id: int) -> None:
    """The body of a forked worker: sign the jobs that come through `conn` until it is closed or sent None.

    It inherits the parent's session but never uses it: `build_row` reads only loaded attributes, and the slots
    and types it is given.
    """
    for other in inherited:  # else, should the parent die, this worker would block for ever on its own pipe
        other.close()
    try:
        while (job := cast(Job | None, conn.recv())) is not None:
            items, slots = job
            try:
                issuer.slots = _AssignedSlots(slots)  # type: ignore[assignment]
                conn.send((True, _build_each(issuer, items, batch_id)))
            except Exception as exc:
                conn.send((False, f"{type(exc).__name__}: {exc}"))
    except EOFError:  # the parent is gone
        pass
    finally:
        conn.close()


def _portable(item: PreparedCertificate) -> PreparedCertificate:
    """The item with its ORM type replaced by plain values, to be pickled to a worker."""
    ctype = item.certificate_type
    return dataclasses.replace(item, certificate_type=cast(Any, _Type(ctype.id, ctype.type_code,
                                                                      ctype.catalog_version)))


Slots = list[tuple[_Slot, int]]  # the status-list slots of a submission's certificates, in order


class Signer:
    """`Issuer.build_row` (identify, sign, encrypt) for each chunk's new certificates.

    The importing process takes the slots of a chunk's certificates in one of its short transactions (`slots_for`),
    submits them (`submit`) and collects them before the next (`collect`): signing holds no lock. Without workers it
    signs in this process at submission, after the commit. With workers it signs in forked processes, one chunk
    behind, while this process stages the last chunk and reads and validates the next: signing is most of the work,
    and one process uses one core. Forking needs the `fork` start method and a single-threaded process (a lock held
    by another thread at fork time would stay held in the child); otherwise it signs here.
    """

    def __init__(self, issuer: Issuer, batch_id: int, workers: int) -> None:
        self.issuer, self.batch_id = issuer, batch_id
        forkable = "fork" in multiprocessing.get_all_start_methods() and threading.active_count() == 1
        self.workers = max(workers, 0) if forkable else 0
        self._started: list[tuple[BaseProcess, Connection]] = []
        self._pending: tuple[list[PreparedCertificate], int] | None = None  # items, workers given a share
        self._signed: Signed = []  # signed here, not yet collected
        self.failures: list[RowFailure] = []  # rows whose building failed since the caller last took them

    def slots_for(self, items: list[PreparedCertificate]) -> Slots:
        """The status-list slots of `items`, taken (and recorded) in the caller's transaction."""
        slots = [(_Slot(status_list.id, status_list.list_number), index)
                 for status_list, index in (self.issuer.slots.take() for _ in items)]
        self.issuer.slots.flush()
        return slots

    def submit(self, items: list[PreparedCertificate], slots: Slots) -> None:
        """Sign `items` with their `slots` (at once without workers; else in the workers, collected later)."""
        if not self.workers:
            issuer, allocator = self.issuer, self.issuer.slots
            issuer.slots = _AssignedSlots(slots)  # type: ignore[assignment]
            try:
                self._signed.extend(self._sorted(items, _build_each(issuer, items, self.batch_id)))
            finally:
                issuer.slots = allocator
            return
        assert self._pending is None, "collect the last submission first"
        if not self._started:
            self._start()
        stride = min(len(self._started), len(items))
        portable = [_portable(item) for item in items]
        self._pending = (items, stride)
        for k in range(stride):
            self._started[k][1].send((portable[k::stride], slots[k::stride]))

    def collect(self) -> Signed:
        """The certificates signed since the last collection (with workers: waits for them)."""
        signed, self._signed = self._signed, []
        return signed + self._collect()

    def _start(self) -> None:
        context = multiprocessing.get_context("fork")
        gc.freeze()  # the children's collector leaves the inherited objects alone (fewer copy-on-write faults)
        try:
            for k in range(self.workers):
                mine, theirs = context.Pipe()
                inherited = [*(opened for _, opened in self._started), mine]
                process = context.Process(target=_sign_in_worker, daemon=True, name=f"ecert-import-{k}",
                                          args=(theirs, inherited, self.issuer, self.batch_id))
                try:
                    process.start()
                except BaseException:
                    mine.close()
                    raise
                finally:
                    theirs.close()
                self._started.append((process, mine))
        finally:
            gc.unfreeze()

    def _collect(self) -> Signed:
        """Wait for the certificates still being signed."""
        if self._pending is None:
            return []
        items, stride = self._pending
        self._pending = None
        rows: list[Any] = [None] * len(items)
        for k in range(stride):
            process, conn = self._started[k]
            try:
                ok, payload = conn.recv()
            except EOFError:
                ok, payload = False, f"exit code {process.exitcode}"
            if not ok:
                self.abort()
                raise RuntimeError(f"import worker failed: {payload}")
            rows[k::stride] = payload
        return self._sorted(items, rows)

    def _sorted(self, items: list[PreparedCertificate], built: list[dict[str, Any] | str]) -> Signed:
        """The signed rows; the failed ones go to `failures`."""
        signed: Signed = []
        for item, row in zip(items, built, strict=True):
            if isinstance(row, str):
                self.failures.append((item, row))
            else:
                signed.append((item, row))
        return signed

    def drain(self) -> Signed:
        """Wait for the certificates still being signed, then let the workers go."""
        signed = self.collect()
        self._stop(kill=False)
        return signed

    def abort(self) -> None:
        """Stop the workers of a failed import; their work is discarded. Anything submitted later is signed here."""
        self._pending, self._signed = None, []
        self._stop(kill=True)
        self.workers = 0

    def _stop(self, *, kill: bool) -> None:
        for process, conn in self._started:
            if kill:
                process.kill()
            else:
                try:
                    conn.send(None)
                except OSError:  # it died already
                    process.kill()
            conn.close()
            process.join()
        self._started = []
