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

from backend.models import ApiClient
from backend.security.jwk import public_jwk
from backend.services.actors import Actor
from backend.services.catalog import get_department
from backend.services.clients import SCOPES, register_client

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
    client = register_client(session, department=get_department(session, DEMO_DEPARTMENT), name=DEMO_CLIENT_NAME,
                             scopes=sorted(SCOPES), jwks=jwk, actor=actor, now=now)
    instance_path.mkdir(parents=True, exist_ok=True)
    fd = os.open(key_path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as handle:
        json.dump({"client_id": client.client_id, "private_jwk": ECAlgorithm.to_jwk(private, as_dict=True)}, handle)
    return client.client_id, key_path


def demo_assertion(key_path: Path, token_endpoint: str) -> tuple[str, str]:
    """A fresh client assertion signed with the demo client's key: (client_id, assertion)."""
    stored: dict[str, Any] = json.loads(key_path.read_text())
    private = ECAlgorithm.from_jwk(stored["private_jwk"])
    if not isinstance(private, ec.EllipticCurvePrivateKey):
        raise ValueError(f"{key_path} does not hold a private EC key")
    issued = int(time.time())
    assertion = jwt.encode({"iss": stored["client_id"], "sub": stored["client_id"], "aud": token_endpoint,
                            "iat": issued, "exp": issued + 120, "jti": uuid.uuid4().hex}, private, algorithm="ES256")
    return str(stored["client_id"]), assertion
