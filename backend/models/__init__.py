"""SQLAlchemy models, one module per aggregate. Importing this package registers every table."""

from backend.models.audit import AuditCheckpoint, AuditEvent, AuditHead
from backend.models.base import Base
from backend.models.catalog import (
    CertificateType,
    CertificateTypeVersion,
    Department,
    certificate_type_issuer,
)
from backend.models.clients import ApiClient, ClientAssertionUse
from backend.models.keys import SigningKey

__all__ = [
    "ApiClient",
    "AuditCheckpoint",
    "AuditEvent",
    "AuditHead",
    "Base",
    "CertificateType",
    "CertificateTypeVersion",
    "ClientAssertionUse",
    "Department",
    "SigningKey",
    "certificate_type_issuer",
]
