"""Signing a batch's certificates (`Issuer.build_row`: identify, sign, encrypt), in this process or in forked workers.

Signing is most of an import's work and one Python process uses one core, so an import may fork workers that
sign one chunk while the importing process reads, validates and stores the next.
"""

from __future__ import annotations

import multiprocessing
import threading
from multiprocessing.connection import Connection
from multiprocessing.process import BaseProcess
from typing import Any, NamedTuple

from sqlalchemy import Table
from sqlalchemy.orm.attributes import instance_dict

from backend.models import Base
from backend.services.issuance import Issuer, PreparedCertificate

Signed = list[tuple[PreparedCertificate, dict[str, Any]]]  # certificates and their rows, ready to INSERT


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


class _AssignedSlots:
    """Stands in for the SlotAllocator in a worker: hands out the slots the parent process took for its rows."""

    def __init__(self, slots: list[tuple[_Slot, int]]) -> None:
        self._slots = iter(slots)

    def take(self) -> tuple[_Slot, int]:
        return next(self._slots)


def _sign_in_worker(conn: Connection, inherited: list[Connection], issuer: Issuer, items: list[PreparedCertificate],
                    slots: list[tuple[_Slot, int]], batch_id: int) -> None:
    """The body of a forked worker. It inherits the parent's session but never uses it: `build_row` reads only loaded
    attributes and the slots it is given."""
    for receiver in inherited:  # else, should the parent die, this worker would block for ever on its own pipe
        receiver.close()
    try:
        issuer.slots = _AssignedSlots(slots)  # type: ignore[assignment]
        conn.send((True, [issuer.build_row(item, origin="imported", import_batch_id=batch_id) for item in items]))
    except BaseException as exc:
        conn.send((False, f"{type(exc).__name__}: {exc}"))
    finally:
        conn.close()


class Signer:
    """`Issuer.build_row` (identify, sign, encrypt) for each chunk's new certificates.

    Without workers it signs in this process. With workers it signs in forked processes, one chunk behind, while
    this process reads, validates and stores: signing is most of the work, and one process uses one core. Forking
    needs the `fork` start method and a single-threaded process (a lock held by another thread at fork time would
    stay held in the child); otherwise it signs here.
    """

    def __init__(self, issuer: Issuer, batch_id: int, workers: int) -> None:
        self.issuer, self.batch_id = issuer, batch_id
        forkable = "fork" in multiprocessing.get_all_start_methods() and threading.active_count() == 1
        self.workers = max(workers, 0) if forkable else 0
        self._pending: tuple[list[PreparedCertificate], list[tuple[BaseProcess, Connection]]] | None = None

    def submit(self, items: list[PreparedCertificate]) -> Signed:
        """Start signing `items`; returns what is signed by now (with workers: the previous submission)."""
        issuer = self.issuer
        if not self.workers:
            rows = [issuer.build_row(item, origin="imported", import_batch_id=self.batch_id) for item in items]
            issuer.slots.flush()
            return list(zip(items, rows, strict=True))
        slots = [(_Slot(status_list.id, status_list.list_number), index)
                 for status_list, index in (issuer.slots.take() for _ in items)]
        issuer.slots.flush()
        signed = self.drain()
        context = multiprocessing.get_context("fork")
        stride = min(self.workers, len(items))
        started: list[tuple[BaseProcess, Connection]] = []
        self._pending = (items, started)
        for k in range(stride):
            receiver, sender = context.Pipe(duplex=False)
            inherited = [*(opened for _, opened in started), receiver]
            process = context.Process(target=_sign_in_worker, daemon=True, name=f"ecert-import-{k}",
                                      args=(sender, inherited, issuer, items[k::stride], slots[k::stride],
                                            self.batch_id))
            try:
                process.start()
            except BaseException:
                receiver.close()
                raise
            finally:
                sender.close()
            started.append((process, receiver))
        return signed

    def drain(self) -> Signed:
        """Wait for the certificates still being signed."""
        if self._pending is None:
            return []
        items, started = self._pending
        rows: list[Any] = [None] * len(items)
        for k, (process, receiver) in enumerate(started):
            try:
                ok, payload = receiver.recv()
            except EOFError:
                ok, payload = False, f"exit code {process.exitcode}"
            if not ok:
                self.abort()
                raise RuntimeError(f"import worker failed: {payload}")
            rows[k::len(started)] = payload
        self._reap(kill=False)
        return list(zip(items, rows, strict=True))

    def abort(self) -> None:
        """Stop the workers of a failed import; their work is discarded."""
        self._reap(kill=True)

    def _reap(self, *, kill: bool) -> None:
        if self._pending is not None:
            for process, receiver in self._pending[1]:
                receiver.close()
                if kill:
                    process.kill()
                process.join()
            self._pending = None


