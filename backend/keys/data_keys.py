"""Rotation of personal-data keys: re-encrypt blobs sealed under an older ECERT_DATA_KEYS version."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from backend.crypto.encryption import FieldCipher
from backend.models import Certificate, Holder, Objection

# Model, context prefix, encrypted columns (the context of a blob is "<prefix>:<public_id>:<column>").
ENCRYPTED: tuple[tuple[type[Certificate] | type[Holder] | type[Objection], str, dict[str, str]], ...] = (
    (Certificate, "certificate", {"number_enc": "number", "holder_name_enc": "holder_name",
                                  "holder_code_enc": "holder_code", "face_enc": "face", "sd_jwt_enc": "sd_jwt"}),
    (Holder, "holder", {"id_number_enc": "id_number", "name_enc": "name", "phone_enc": "phone"}),
    (Objection, "objection", {"disputed_enc": "disputed", "description_enc": "description"}),
)


@dataclass
class ReencryptReport:
    rows: int = 0
    blobs: int = 0


def reencrypt_stale(session: Session, cipher: FieldCipher, *, batch_size: int = 500) -> ReencryptReport:
    """Re-seal every blob not under the current data key version, row by row in batches (the caller audits it, like
    every key operation)."""
    report = ReencryptReport()
    for model, prefix, columns in ENCRYPTED:
        last_id = 0
        while True:
            rows: list[Any] = list(session.scalars(select(model).where(model.id > last_id).order_by(model.id)
                                                   .limit(batch_size).with_for_update(skip_locked=True)))
            if not rows:
                break
            for row in rows:
                changed = False
                for column, name in columns.items():
                    blob = getattr(row, column)
                    if blob is not None and cipher.is_stale(blob):
                        setattr(row, column, cipher.reencrypt(blob, f"{prefix}:{row.public_id}:{name}"))
                        report.blobs += 1
                        changed = True
                report.rows += changed
            last_id = rows[-1].id
            session.flush()
    return report
