"""The SMS adapter (a local fake receiver stands in for the city's SMS platform) and how a holder's mobile number
gets registered (the IdP's phone_number claim; the dev provider's phone)."""

from __future__ import annotations

import json
import secrets
import socket
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, HTTPServer
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa

from backend.adapters.sms import (
    FakeSmsGateway,
    HttpSmsGateway,
    SmsUnavailable,
    gateway_from_settings,
    mask_phone,
    mobile_number,
)
from backend.config import ConfigError, OidcIssuer, load_settings
from backend.core.context import field_cipher
from backend.crypto.encryption import FieldCipher
from backend.extensions import db
from backend.identity.id_tokens import real_name
from backend.kernel.actors import Actor
from backend.kernel.ids import holder_index
from backend.models import Holder
from tests.factories import resident_id
from tests.settings_support import production
from tests.support import field_errors


class SmsPlatform:
    """A local HTTP receiver playing the city's SMS platform: records each POST, answers `status`."""

    def __init__(self) -> None:
        self.received: list[tuple[dict[str, str], dict[str, Any]]] = []
        self.status = 200
        platform = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers["Content-Length"]))
                platform.received.append((dict(self.headers), json.loads(body)))
                self.send_response(platform.status)
                self.send_header("Content-Type", "application/json")
                self.end_headers()
                self.wfile.write(b'{"ok": true}')

            def log_message(self, format: str, *args: Any) -> None:  # the body holds a code: stay quiet
                pass

        self.server = HTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_port}/sms/send"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def platform() -> Iterator[SmsPlatform]:
    running = SmsPlatform()
    yield running
    running.stop()


@pytest.mark.parametrize(("given", "expected"), [
    ("13812345678", "+8613812345678"), ("+86 138 1234 5678", "+8613812345678"), ("138-1234-5678", "+8613812345678"),
    ("0376-6221234", None),  # a fixed line in Xinyang: cannot receive a text
    ("12345", None), ("not a number", None), ("", None), ("1" * 40, None),
])
def test_only_mobile_numbers_are_accepted_in_e164(given, expected):
    assert mobile_number(given) == expected


def test_a_phone_is_masked_to_its_first_three_and_last_four_digits():
    assert mask_phone("+8613812345678") == "138****5678"


def test_the_http_gateway_posts_number_sign_and_text_with_its_key(platform):
    gateway = HttpSmsGateway(url=platform.url, api_key="sms-key-1", sign="信阳电子证照")

    gateway.send("+8613812345678", "您的验证码为123456")

    [(headers, body)] = platform.received
    assert headers["Authorization"] == "Bearer sms-key-1"
    assert body == {"phone": "+8613812345678", "sign": "信阳电子证照", "text": "您的验证码为123456"}
    assert "sms-key-1" not in repr(gateway)


@pytest.mark.parametrize("status", [400, 500, 503])
def test_a_refusing_platform_raises_without_url_number_or_text(platform, status):
    platform.status = status
    gateway = HttpSmsGateway(url=platform.url, api_key="k", sign="s")

    with pytest.raises(SmsUnavailable) as raised:
        gateway.send("+8613812345678", "验证码为654321")

    assert str(raised.value) == f"HTTP status {status}"


def test_an_unreachable_platform_raises_sms_unavailable():
    with socket.socket() as sock:  # a port nobody listens on
        sock.bind(("127.0.0.1", 0))
        url = f"http://127.0.0.1:{sock.getsockname()[1]}/sms/send"

    with pytest.raises(SmsUnavailable) as raised:
        HttpSmsGateway(url=url, api_key="k", sign="s", timeout=2).send("+8613812345678", "验证码为654321")

    assert "127.0.0.1" not in str(raised.value) and "654321" not in str(raised.value)


def test_the_development_fake_writes_an_outbox_only_its_owner_reads(tmp_path):
    outbox = tmp_path / "sms-outbox.jsonl"
    fake = FakeSmsGateway(outbox=outbox)

    fake.send("+8613812345678", "验证码为111111")

    assert json.loads(outbox.read_text())["text"] == "验证码为111111"
    assert outbox.stat().st_mode & 0o077 == 0
    assert fake.sent_to("+8613812345678") == ["验证码为111111"]


def test_the_gateway_follows_the_settings(tmp_path):
    http = gateway_from_settings({"ECERT_SMS_URL": "https://sms.example.gov.cn/send", "ECERT_SMS_API_KEY": "k",
                                  "ECERT_SMS_SIGN": "信阳电子证照", "ECERT_ENV": "production"})
    assert isinstance(http, HttpSmsGateway) and http.sign == "信阳电子证照"
    assert gateway_from_settings({"ECERT_ENV": "production", "ECERT_INSTANCE_PATH": str(tmp_path)}) is None
    development = gateway_from_settings({"ECERT_ENV": "development", "ECERT_INSTANCE_PATH": str(tmp_path)})
    assert isinstance(development, FakeSmsGateway) and development.outbox == Path(tmp_path) / "sms-outbox.jsonl"
    testing = gateway_from_settings({"ECERT_ENV": "testing", "ECERT_INSTANCE_PATH": str(tmp_path)})
    assert isinstance(testing, FakeSmsGateway) and testing.outbox is None


# -- how a holder's mobile number is registered -------------------------------------------------------------------

IDP = OidcIssuer(issuer="https://idp.example.gov.cn", client_id="ecert", jwks_uri=None, jwks_file="unused",
                 algorithms=("ES256",))


def _claims(**extra: Any) -> dict[str, Any]:
    return {"sub": "subject-1", "name": "张伟", "id_type": "111", "id_number": resident_id(), **extra}


@pytest.mark.parametrize(("extra", "phone"), [
    ({"phone_number": "+86 138 1234 5678", "phone_number_verified": True}, "+8613812345678"),
    ({"phone_number": "13812345678"}, "+8613812345678"),
    ({"phone_number": "13812345678", "phone_number_verified": False}, None),  # the IdP says it is unverified
    ({"phone_number": "0376-6221234"}, None),  # not a mobile number: the login goes on without it
    ({"phone_number": 13812345678}, None),
    ({}, None),
])
def test_the_idps_phone_number_claim_becomes_the_registered_phone(extra, phone):
    cipher = FieldCipher({1: secrets.token_bytes(32)}, secrets.token_bytes(32))

    identity = real_name(IDP, _claims(**extra), cipher=cipher, actor=Actor(kind="citizen", id="unknown"))

    assert identity.phone == phone


def _stored_phone(app: Any, id_number: str) -> str | None:
    with app.app_context():
        cipher = field_cipher()
        holder = db.session.scalar(sa.select(Holder).where(Holder.id_index == holder_index(cipher, "111", id_number)))
        assert holder is not None
        if holder.phone_enc is None:
            return None
        return cipher.decrypt(holder.phone_enc, f"holder:{holder.public_id}:phone")


def _dev_login(client: Any, id_number: str, **extra: Any) -> Any:
    return client.post("/api/v1/auth/login", json={"provider": "dev", "name": "张伟", "id_type": "111",
                                                    "id_number": id_number, **extra})


def test_a_login_registers_the_phone_encrypted_and_a_login_without_one_keeps_it(app, client, catalog):
    number = resident_id()
    assert _dev_login(client, number, phone="13812345678").status_code == 200
    with app.app_context():
        stored = db.session.scalar(sa.select(Holder.phone_enc))
    assert stored is not None and b"13812345678" not in stored

    assert _dev_login(client, number).status_code == 200
    assert _stored_phone(app, number) == "+8613812345678"
    assert _dev_login(client, number, phone="13987654321").status_code == 200
    assert _stored_phone(app, number) == "+8613987654321"


def test_a_dev_login_with_an_unusable_phone_is_refused_naming_the_field(client, catalog):
    response = _dev_login(client, resident_id(), phone="0376-6221234")

    assert field_errors(response) == {"phone": "invalid_mobile_number"}


@pytest.mark.parametrize(("changes", "named"), [
    ({"ECERT_SMS_URL": "http://sms.example.gov.cn/send", "ECERT_SMS_API_KEY": "k"}, "ECERT_SMS_URL"),
    ({"ECERT_SMS_URL": "https://sms.example.gov.cn/send"}, "ECERT_SMS_API_KEY"),
])
def test_production_refuses_an_unsafe_sms_platform(tmp_path, changes, named):
    with pytest.raises(ConfigError, match=named):
        load_settings(production(tmp_path, **changes))


def test_production_accepts_an_https_sms_platform_with_its_key(tmp_path):
    settings = load_settings(production(tmp_path, ECERT_SMS_URL="https://sms.example.gov.cn/send",
                                        ECERT_SMS_API_KEY="k", ECERT_SMS_SIGN="信阳市电子证照"))

    gateway = gateway_from_settings(settings)

    assert isinstance(gateway, HttpSmsGateway) and gateway.url == "https://sms.example.gov.cn/send"
    assert gateway.sign == "信阳市电子证照"
