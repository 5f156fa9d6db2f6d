"""Personal-data key rotation: old blobs keep reading; `keys reencrypt-data` moves them to the newest key."""

from __future__ import annotations

import base64
import secrets

from sqlalchemy import select

from backend.app import create_app
from backend.core.context import field_cipher
from backend.extensions import db
from backend.identity.citizens import holder_name
from backend.issuance.certificates import decrypt
from backend.models import Certificate, Holder
from tests.conftest import TEST_SECRETS, _settings
from tests.factories import certificate_body


def test_rotating_the_data_key_keeps_old_data_readable_and_reencrypts_it(app, _migrated, tmp_path, dept_client,
                                                                          login, clock):
    response = dept_client.http.post("/gov/v1/certificates", json=certificate_body(), headers=dept_client.headers())
    assert response.status_code == 201
    login(name="王芳")
    new_key = base64.urlsafe_b64encode(secrets.token_bytes(32)).decode()
    rotated = create_app(_settings(_migrated, tmp_path / "rotated", ECERT_CLOCK=clock,
                                   ECERT_DATA_KEYS=f"{TEST_SECRETS['ECERT_DATA_KEYS']},2:{new_key}"))
    runner = rotated.test_cli_runner()
    with rotated.app_context():
        cipher = field_cipher()
        assert cipher.current_version == 2
        certificate = db.session.scalar(select(Certificate))
        assert not cipher.is_stale(b"\x00\x02" + b"x" * 30) and cipher.is_stale(certificate.face_enc)
        before = decrypt(cipher, certificate)
        db.session.rollback()

    first = runner.invoke(args=["keys", "reencrypt-data"])
    assert first.exit_code == 0, first.output
    assert "re-encrypted under data key version 2" in first.output
    assert not first.output.startswith("0 ")
    second = runner.invoke(args=["keys", "reencrypt-data"])
    assert second.output.startswith("0 value(s)")

    with rotated.app_context():
        cipher = field_cipher()
        certificate = db.session.scalar(select(Certificate))
        holder = db.session.scalar(select(Holder))
        blobs = [certificate.number_enc, certificate.holder_name_enc, certificate.holder_code_enc,
                 certificate.face_enc, certificate.sd_jwt_enc, holder.id_number_enc, holder.name_enc]
        assert not any(cipher.is_stale(blob) for blob in blobs)
        assert decrypt(cipher, certificate) == before
        assert holder_name(cipher, holder) == "王芳"
