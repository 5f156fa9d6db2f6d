"""Demo data for `make run`: a department client whose private key is kept under instance/ (development only)."""

from __future__ import annotations

import json
import os
import time
import uuid
from datetime import datetime
from pathlib import Path
from typing import Any

import jwt
from cryptography.hazmat.primitives.asymmetric import ec
from jwt.algorithms import ECAlgorithm
from sqlalchemy import select
from sqlalchemy.orm import Session

from backend.catalog.loader import get_department
from backend.core.private_files import private_directory
from backend.crypto.jwk import public_jwk
from backend.errors import Conflict
from backend.identity.clients import SCOPES, register_client
from backend.issuance.certificates import issue_direct
from backend.issuance.issuer import CertificateInput, Issuer
from backend.kernel.actors import Actor
from backend.keys.deps import Deps
from backend.models import ApiClient

DEMO_DEPARTMENT = "11411500MB1C629765"  # 信阳市市场监督管理局
DEMO_CLIENT_NAME = "市场监管业务系统（演示）"


def ensure_demo_client(session: Session, instance_path: Path, *, actor: Actor, now: datetime) -> tuple[str, Path]:
    key_path = instance_path / "demo-client.json"
    if key_path.exists():
        stored = json.loads(key_path.read_text())
        if session.scalar(select(ApiClient).where(ApiClient.client_id == stored["client_id"])) is not None:
            return str(stored["client_id"]), key_path
    private = ec.generate_private_key(ec.SECP256R1())
    jwk = public_jwk(private.public_key())
    client = register_client(
        session,
        department=get_department(session, DEMO_DEPARTMENT),
        name=DEMO_CLIENT_NAME,
        scopes=sorted(SCOPES),
        jwks=jwk,
        actor=actor,
        now=now,
    )
    private_directory(instance_path)
    fd = os.open(key_path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as handle:
        json.dump({"client_id": client.client_id, "private_jwk": ECAlgorithm.to_jwk(private, as_dict=True)}, handle)
    return client.client_id, key_path


DEMO_CITIZEN = {"name": "张伟", "id_type": "111", "id_number": "411502200001010010"}
DEMO_COMPANY = {"name": "信阳毛尖茶业有限公司", "code": "91411502000000027D"}
_CIVIL_AFFAIRS = "114115000059925712"  # 信阳市民政局


def _demo_certificates() -> list[tuple[str, CertificateInput]]:
    """(issuing department, certificate) pairs: a company's licences and a citizen's marriage certificate."""
    person, company = DEMO_CITIZEN, DEMO_COMPANY
    return [
        (
            DEMO_DEPARTMENT,
            CertificateInput(
                type_code="11411500MB1C629765001",
                certificate_number="DEMO-YYZZ-0001",
                holder_name=company["name"],
                holder_code_type="001",
                holder_code=company["code"],
                issued_on="2024-03-01",
                valid_from="2024-03-01",
                valid_until=None,
                fields={
                    "company_name": company["name"],
                    "uscc": company["code"],
                    "entity_type": "有限责任公司（自然人投资或控股）",
                    "legal_representative": person["name"],
                    "registered_capital": "500万元人民币",
                    "established_on": "2018-05-12",
                    "address": "河南省信阳市浉河区茶韵路 18 号",
                    "business_scope": "茶叶种植、加工、销售",
                },
            ),
        ),
        (
            DEMO_DEPARTMENT,
            CertificateInput(
                type_code="11411500MB1C629765002",
                certificate_number="DEMO-SPJY-0001",
                holder_name=company["name"],
                holder_code_type="001",
                holder_code=company["code"],
                issued_on="2022-01-10",
                valid_from="2022-01-10",
                fields={
                    "operator_name": company["name"],
                    "uscc": company["code"],
                    "legal_representative": person["name"],
                    "address": "河南省信阳市浉河区茶韵路 18 号",
                    "business_premises": "河南省信阳市浉河区茶韵路 18 号一层",
                    "business_format": "食品销售经营者",
                    "business_items": "预包装食品（含茶叶）销售",
                    "supervising_agency": "信阳市浉河区市场监督管理局",
                    "supervisor": "赵强",
                    "complaint_hotline": "12315",
                },
            ),
        ),
        (
            _CIVIL_AFFAIRS,
            CertificateInput(
                type_code="114115000059925712001",
                certificate_number="DEMO-JHZ-0001",
                holder_name=person["name"],
                holder_code_type="111",
                holder_code=person["id_number"],
                issued_on="2025-05-20",
                valid_from="2025-05-20",
                valid_until=None,
                fields={
                    "holder_name": person["name"],
                    "registered_on": "2025-05-20",
                    "certificate_no": "DEMO-JHZ-0001",
                    "party_a_name": person["name"],
                    "party_a_gender": "男",
                    "party_a_nationality": "中国",
                    "party_a_birth_date": "2000-01-01",
                    "party_a_id_number": person["id_number"],
                    "party_b_name": "李娜",
                    "party_b_gender": "女",
                    "party_b_nationality": "中国",
                    "party_b_birth_date": "2001-03-08",
                    "party_b_id_number": "411502200103080028",
                    "registration_office": "信阳市浉河区民政局婚姻登记处",
                },
            ),
        ),
    ]


def ensure_demo_certificates(deps: Deps, *, actor: Actor, now: datetime) -> int:
    """Issue the demo certificates that are not there yet (matched by certificate number); returns how many."""
    session, created = deps.session, 0
    for department_code, data in _demo_certificates():
        department = get_department(session, department_code)
        issuer = Issuer(deps, department, actor=actor, now=now)
        try:
            with session.begin_nested():
                issue_direct(session, issuer, data)
            created += 1
        except Conflict:
            continue  # issued by an earlier `demo load`
    return created


def demo_assertion(key_path: Path, token_endpoint: str) -> tuple[str, str]:
    """A fresh client assertion signed with the demo client's key: (client_id, assertion)."""
    stored: dict[str, Any] = json.loads(key_path.read_text())
    private = ECAlgorithm.from_jwk(stored["private_jwk"])
    if not isinstance(private, ec.EllipticCurvePrivateKey):
        raise ValueError(f"{key_path} does not hold a private EC key")
    issued = int(time.time())
    assertion = jwt.encode(
        {
            "iss": stored["client_id"],
            "sub": stored["client_id"],
            "aud": token_endpoint,
            "iat": issued,
            "exp": issued + 120,
            "jti": uuid.uuid4().hex,
        },
        private,
        algorithm="ES256",
    )
    return str(stored["client_id"]), assertion
