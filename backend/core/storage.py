"""Sealed file storage for objection evidence: a storage interface (a local directory by default, an object store
can replace it) and the sealing with the current data key; the local directory is shared with the import spool."""

from __future__ import annotations

import base64
import os
import re
import secrets
import tempfile
from pathlib import Path
from typing import ClassVar, Protocol

from backend.core.private_files import private_directory
from backend.crypto.encryption import FieldCipher
from backend.errors import NotFound


class EvidenceNotFound(NotFound):
    code = "evidence_not_found"
    message = "证明材料不存在"


class EvidenceStorage(Protocol):
    """Where sealed evidence lives: a local directory by default; an object store can replace it."""

    def put(self, key: str, data: bytes) -> None: ...

    def get(self, key: str) -> bytes: ...

    def delete(self, key: str) -> None: ...


def new_storage_key(objection_public_id: str) -> str:
    return f"{objection_public_id}/{secrets.token_hex(16)}"


class LocalFiles:
    """Files by key under one directory, written under a temporary name and renamed into place, readable by the
    owner only (the local evidence storage and the local import spool)."""

    KEY: ClassVar[re.Pattern[str]]
    KIND: ClassVar[str]

    def __init__(self, root: Path | str) -> None:
        self.root = Path(root)

    def _path(self, key: str) -> Path:
        if not self.KEY.fullmatch(key):  # keys are made here; anything else could walk out of the directory
            raise ValueError(f"invalid {self.KIND} key")
        return self.root / key

    def _temporary(self, key: str) -> tuple[int, str]:
        """A new file (mode 0600) in the directory of `key`, to be renamed to it: its descriptor and path."""
        path = self._path(key)
        private_directory(path.parent)
        return tempfile.mkstemp(dir=path.parent, prefix=".upload-")

    def delete(self, key: str) -> None:
        self._path(key).unlink(missing_ok=True)


class LocalEvidenceStorage(LocalFiles):
    """Evidence files under one directory (by default instance/evidence)."""

    KEY = re.compile(r"[0-9a-f]{32}/[0-9a-f]{32}")
    KIND = "evidence storage"

    def put(self, key: str, data: bytes) -> None:
        fd, temporary = self._temporary(key)
        try:
            with os.fdopen(fd, "wb") as handle:
                handle.write(data)
            os.replace(temporary, self._path(key))
        except BaseException:
            Path(temporary).unlink(missing_ok=True)
            raise

    def get(self, key: str) -> bytes:
        try:
            return self._path(key).read_bytes()
        except FileNotFoundError as exc:
            raise EvidenceNotFound() from exc


class SealedEvidenceStorage:
    """Encrypts evidence under the current data key before it reaches the inner storage (personal data at rest);
    the storage key is the associated data, so a sealed file cannot be moved to another objection."""

    def __init__(self, inner: EvidenceStorage, cipher: FieldCipher) -> None:
        self.inner = inner
        self.cipher = cipher

    def put(self, key: str, data: bytes) -> None:
        self.inner.put(key, self.cipher.encrypt(base64.b64encode(data).decode("ascii"), f"evidence:{key}"))

    def get(self, key: str) -> bytes:
        return base64.b64decode(self.cipher.decrypt(self.inner.get(key), f"evidence:{key}"))

    def delete(self, key: str) -> None:
        self.inner.delete(key)

    def reseal(self, key: str) -> bool:
        """Re-encrypt one stored file under the current data key if it is sealed under an older one (rotation)."""
        blob = self.inner.get(key)
        if not self.cipher.is_stale(blob):
            return False
        self.inner.put(key, self.cipher.reencrypt(blob, f"evidence:{key}"))
        return True
