"""SQLAlchemy models, one module per business area. Importing this package registers every table."""

from backend.models.audit import AuditCheckpoint, AuditEvent, AuditHead, UsageRecord
from backend.models.base import Base
from backend.models.catalog import (
    CertificateType,
    CertificateTypeVersion,
    Department,
    certificate_type_issuer,
)
from backend.models.identity import (
    ApiClient,
    AuthSession,
    ClientAssertionUse,
    Holder,
    HolderIdentity,
    IdTokenUse,
    LoginNonce,
    RefreshToken,
    Representation,
    StaffAccount,
    StaffSession,
)
from backend.models.imports import ImportBatch, ImportStaging
from backend.models.issuance import Certificate, CertificateEvent, ExpiryReminder, IdempotencyRecord
from backend.models.keys import SigningKey, StatusList
from backend.models.notifications import Notification
from backend.models.objections import Objection, ObjectionEscalation, ObjectionEvent, ObjectionEvidence
from backend.models.sharing import AccessRequest, Grant, GrantCertificate, Redemption
from backend.models.wallet import ShowCodeUse

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
