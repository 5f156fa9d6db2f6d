"""A type's catalog definition, in the two meanings callers need: as a certificate was issued, or as it is now."""

from __future__ import annotations

import hashlib
from typing import Any, Final

from sqlalchemy import bindparam, select
from sqlalchemy.orm import Session

from backend.core.caches import Memo
from backend.core.db import rows
from backend.crypto.canonical import canonical_json
from backend.models import Certificate, CertificateType, CertificateTypeVersion

_CURRENT: Final = select(CertificateType.definition).where(CertificateType.id == bindparam("type_id"))


def definition_as_issued(session: Session, certificate: Certificate) -> dict[str, Any]:
    """The definition the certificate was issued under (its labels and policy as they were then): the type's
    current one while the catalog version is the same, else that version's (the current one if it is missing)."""
    ctype = certificate.certificate_type
    if certificate.catalog_version != ctype.catalog_version:
        definition = session.scalar(select(CertificateTypeVersion.definition).where(
            CertificateTypeVersion.certificate_type_id == ctype.id,
            CertificateTypeVersion.version == certificate.catalog_version))
        if definition is not None:
            return definition
    return ctype.definition


def current_definition(session: Session, type_id: int, content_hash: str,
                       memo: Memo[str, dict[str, Any]]) -> dict[str, Any]:
    """The type's definition as the catalog holds it now, whose content hash is `content_hash`; read from the
    database only the first time the app's `memo` meets that hash (a hash names one document: never stale)."""
    cached = memo.get(content_hash)
    if cached is not None:
        return cached
    definition: dict[str, Any] = rows.execute(session, _CURRENT, {"type_id": type_id}).scalar_one()
    # Kept only when the row's hash is the document's (the catalog loader writes both together).
    if hashlib.sha256(canonical_json(definition)).hexdigest() == content_hash:
        memo.put(content_hash, definition)
    return definition
