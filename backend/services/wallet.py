"""What a holder may see: their own certificates and those of the companies they represent."""

from __future__ import annotations

from sqlalchemy import select
from sqlalchemy.orm import Session

from backend.errors import NotFound
from backend.models import Certificate, Holder


def holder_indexes(holder: Holder) -> dict[str, str | None]:
    """Blind index → company code (None for the holder's own certificates)."""
    indexes: dict[str, str | None] = {holder.id_index: None}
    for representation in holder.representations:
        indexes[representation.company_index] = representation.company_code
    return indexes


def find_holder_certificate(session: Session, holder: Holder, public_id: str) -> Certificate:
    """A certificate the holder holds or represents; anyone else's is a 404, never a 403 (no existence oracle)."""
    certificate = session.scalar(select(Certificate).where(Certificate.public_id == public_id))
    if certificate is None or certificate.holder_index not in holder_indexes(holder):
        raise NotFound("证照不存在", code="certificate_not_found")
    return certificate
