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
    ImportStaging,
    Notification,
    StatusList,
)
from backend.models.clients import ApiClient, ClientAssertionUse
from backend.models.grants import AccessRequest, Grant, GrantCertificate, Redemption
from backend.models.holders import (
    AuthSession,
    Holder,
    HolderIdentity,
    IdTokenUse,
    LoginNonce,
    RefreshToken,
    Representation,
    UsageRecord,
)
from backend.models.keys import SigningKey
from backend.models.objections import Objection, ObjectionEscalation, ObjectionEvent, ObjectionEvidence
from backend.models.showcodes import ShowCodeUse
from backend.models.staff import StaffAccount, StaffSession

__all__ = [
    "AccessRequest",
    "ApiClient",
    "AuditCheckpoint",
    "AuditEvent",
    "AuditHead",
    "AuthSession",
    "Base",
    "Certificate",
    "CertificateEvent",
    "CertificateType",
    "CertificateTypeVersion",
    "ClientAssertionUse",
    "Department",
    "ExpiryReminder",
    "Grant",
    "GrantCertificate",
    "Holder",
    "HolderIdentity",
    "IdTokenUse",
    "IdempotencyRecord",
    "ImportBatch",
    "ImportStaging",
    "LoginNonce",
    "Notification",
    "Objection",
    "ObjectionEscalation",
    "ObjectionEvent",
    "ObjectionEvidence",
    "Redemption",
    "RefreshToken",
    "Representation",
    "ShowCodeUse",
    "SigningKey",
    "StaffAccount",
    "StaffSession",
    "StatusList",
    "UsageRecord",
    "certificate_type_issuer",
]
