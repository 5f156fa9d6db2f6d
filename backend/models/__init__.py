"""SQLAlchemy models, one module per aggregate. Importing this package registers every table."""

from backend.models.audit import AuditCheckpoint, AuditEvent, AuditHead
from backend.models.base import Base
from backend.models.catalog import (
    CertificateType,
    CertificateTypeVersion,
    Department,
    certificate_type_issuer,
)
from backend.models.certificates import (
    Certificate,
    CertificateEvent,
    ExpiryReminder,
    IdempotencyRecord,
    ImportBatch,
    Notification,
    StatusList,
)
from backend.models.clients import ApiClient, ClientAssertionUse
from backend.models.keys import SigningKey

__all__ = [
    "ApiClient",
    "AuditCheckpoint",
    "AuditEvent",
    "AuditHead",
    "Base",
    "Certificate",
    "CertificateEvent",
    "CertificateType",
    "CertificateTypeVersion",
    "ClientAssertionUse",
    "Department",
    "ExpiryReminder",
    "IdempotencyRecord",
    "ImportBatch",
    "Notification",
    "SigningKey",
    "StatusList",
    "certificate_type_issuer",
]
