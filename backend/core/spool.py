"""The import spool (导入暂存): uploaded batch files kept sealed until their import finishes."""

from __future__ import annotations

import base64
import hashlib
import io
import os
import re
import secrets
import struct
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import IO, Any, Protocol

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from backend.core.storage import LocalFiles
from backend.crypto.encryption import DecryptionError, FieldCipher

MAGIC = b"ECSPOOL1"
FRAME_BYTES = 1 << 20
HEAD_BYTES = 64 * 1024  # the start of the file kept in memory for cheap checks (CSV header)
_LENGTH = struct.Struct(">I")
_WRAPPED = struct.Struct(">H")
_KEY = re.compile(r"[0-9]{8}/[0-9a-f]{32}")


class SpoolMissing(Exception):
    """The spooled file is not (or no longer) in the storage."""


class SpoolTooLarge(Exception):
    """The upload went past the byte cap while it was being spooled."""


class SpoolStorage(Protocol):
    """Where sealed files live: a local directory by default; an object store can replace it."""

    def open_write(self, key: str) -> IO[bytes]:
        """A new file under `key`; it appears under `key` only when `publish` is called with the handle."""
        ...

    def publish(self, key: str, handle: IO[bytes]) -> None: ...

    def discard(self, key: str, handle: IO[bytes]) -> None: ...

    def open_read(self, key: str) -> IO[bytes]: ...

    def delete(self, key: str) -> None: ...

    def keys_older_than(self, moment: datetime) -> Iterator[str]: ...


def new_spool_key(now: datetime) -> str:
    """A random key under the day it was made (so a sweep of leftovers can skip recent days cheaply)."""
    return f"{now:%Y%m%d}/{secrets.token_hex(16)}"


class LocalSpoolStorage(LocalFiles):
    """Spooled files under one directory (ECERT_IMPORT_SPOOL_DIR)."""

    KEY = _KEY
    KIND = "spool"

    def open_write(self, key: str) -> IO[bytes]:
        fd, temporary = self._temporary(key)
        os.close(fd)
        return open(temporary, "wb")  # closed by publish or discard

    def publish(self, key: str, handle: IO[bytes]) -> None:
        handle.flush()
        os.fsync(handle.fileno())
        handle.close()
        os.replace(handle.name, self._path(key))

    def discard(self, key: str, handle: IO[bytes]) -> None:
        handle.close()
        Path(handle.name).unlink(missing_ok=True)

    def open_read(self, key: str) -> IO[bytes]:
        try:
            return self._path(key).open("rb")
        except FileNotFoundError as exc:
            raise SpoolMissing(key) from exc

    def keys_older_than(self, moment: datetime) -> Iterator[str]:
        """Keys (and abandoned temporary uploads, as their paths) last written before `moment`."""
        if not self.root.is_dir():
            return
        cutoff = moment.timestamp()
        for day in sorted(self.root.iterdir()):
            if not day.is_dir() or not re.fullmatch(r"[0-9]{8}", day.name):
                continue
            for path in day.iterdir():
                try:
                    old = path.stat().st_mtime < cutoff
                except FileNotFoundError:
                    continue
                if old and _KEY.fullmatch(f"{day.name}/{path.name}"):
                    yield f"{day.name}/{path.name}"
                elif old and path.name.startswith(".upload-"):
                    path.unlink(missing_ok=True)  # an upload whose process died before it was published


@dataclass(frozen=True)
class Spooled:
    """What spooling learnt about the plaintext on the way: its size, SHA-256, start, and whether it has any text."""

    key: str
    size: int
    sha256: str
    head: bytes
    blank: bool  # nothing but whitespace (and a BOM)


def _nonce(sequence: int, last: bool) -> bytes:
    return sequence.to_bytes(11, "big") + (b"\x01" if last else b"\x00")


class SealedSpool:
    """Seals files into a `SpoolStorage` with the data key, and opens them again as plaintext streams."""

    def __init__(self, storage: SpoolStorage, cipher: FieldCipher) -> None:
        self.storage = storage
        self.cipher = cipher

    def write(self, key: str, source: IO[bytes], *, max_bytes: int) -> Spooled:
        """Read `source` to its end, sealing it under `key`; more than `max_bytes` raises SpoolTooLarge and leaves
        nothing behind. Exceptions of `source` (e.g. a body past the server's cap) pass through, likewise."""
        file_key = AESGCM.generate_key(bit_length=256)
        aead, context = AESGCM(file_key), f"spool:{key}".encode()
        wrapped = self.cipher.encrypt(base64.b64encode(file_key).decode("ascii"), f"spool:{key}")
        digest, size, head, blank = hashlib.sha256(), 0, bytearray(), True
        handle = self.storage.open_write(key)
        try:
            handle.write(MAGIC + _WRAPPED.pack(len(wrapped)) + wrapped)
            sequence, pending = 0, _read_full(source, FRAME_BYTES)
            while True:
                following = _read_full(source, FRAME_BYTES) if pending else b""
                size += len(pending)
                if size > max_bytes:
                    raise SpoolTooLarge()
                digest.update(pending)
                if len(head) < HEAD_BYTES:
                    head += pending[:HEAD_BYTES - len(head)]
                if blank and pending.removeprefix(b"\xef\xbb\xbf" if sequence == 0 else b"").strip():
                    blank = False
                last = not following
                sealed = aead.encrypt(_nonce(sequence, last), pending, context)
                handle.write(_LENGTH.pack(len(sealed)) + sealed)
                if last:
                    break
                sequence, pending = sequence + 1, following
            self.storage.publish(key, handle)
        except BaseException:
            self.storage.discard(key, handle)
            raise
        return Spooled(key, size, digest.hexdigest(), bytes(head), blank)

    def open(self, key: str) -> SpoolReader:
        """The plaintext of the file under `key`, as a stream; raises SpoolMissing if it is not there, and the
        stream raises DecryptionError on any tampering (including a file cut short)."""
        handle = self.storage.open_read(key)
        try:
            if handle.read(len(MAGIC)) != MAGIC:
                raise DecryptionError("not a sealed spool file")
            (length,) = _WRAPPED.unpack(_read_exact(handle, _WRAPPED.size))
            file_key = base64.b64decode(self.cipher.decrypt(_read_exact(handle, length), f"spool:{key}"))
        except BaseException:
            handle.close()
            raise
        return SpoolReader(handle, AESGCM(file_key), f"spool:{key}".encode())

    def delete(self, key: str) -> None:
        self.storage.delete(key)


def _read_full(source: IO[bytes], size: int) -> bytes:
    """Up to `size` bytes; fewer only at the end (a request stream may answer short reads)."""
    parts, wanted = [], size
    while wanted:
        data = source.read(wanted)
        if not data:
            break
        parts.append(data)
        wanted -= len(data)
    return b"".join(parts)


def _read_exact(handle: IO[bytes], size: int) -> bytes:
    data = handle.read(size)
    if len(data) != size:
        raise DecryptionError("sealed spool file is cut short")
    return data


class SpoolReader(io.RawIOBase):
    """The plaintext of a sealed spool file, frame by frame."""

    def __init__(self, handle: IO[bytes], aead: AESGCM, context: bytes) -> None:
        self._handle, self._aead, self._context = handle, aead, context
        self._sequence, self._buffer, self._offset, self._done = 0, b"", 0, False

    def readable(self) -> bool:
        return True

    def _next_frame(self) -> None:
        header = self._handle.read(_LENGTH.size)
        if len(header) != _LENGTH.size:
            raise DecryptionError("sealed spool file is cut short")
        (length,) = _LENGTH.unpack(header)
        if length > FRAME_BYTES + 16:
            raise DecryptionError("sealed spool frame too long")
        sealed = _read_exact(self._handle, length)
        for last in (False, True):
            try:
                self._buffer = self._aead.decrypt(_nonce(self._sequence, last), sealed, self._context)
            except InvalidTag:
                continue
            self._done, self._offset = last, 0
            self._sequence += 1
            if last and self._handle.read(1):
                raise DecryptionError("data after the last frame of a sealed spool file")
            return
        raise DecryptionError("sealed spool frame failed authentication")

    def readinto(self, buffer: Any) -> int:
        while self._offset >= len(self._buffer):
            if self._done:
                return 0
            self._next_frame()
        n = min(len(buffer), len(self._buffer) - self._offset)
        buffer[:n] = self._buffer[self._offset:self._offset + n]
        self._offset += n
        return n

    def close(self) -> None:
        if not self.closed:
            self._handle.close()
        super().close()
