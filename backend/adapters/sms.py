"""SMS gateway (短信网关): one-time codes for consent at a department's counter (第十一条)."""

from __future__ import annotations

import http.client
import json
import logging
import os
import threading
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Protocol

import phonenumbers

from backend.adapters import DEFAULT_TIMEOUT, AdapterUnavailable
from backend.core.private_files import private_directory

log = logging.getLogger("ecert.adapters.sms")

MAX_ANSWER_BYTES = 16 * 1024
DEFAULT_REGION = "CN"


class SmsUnavailable(AdapterUnavailable):
    """The gateway could not be reached or refused the message; the message holds neither number nor text."""


class SmsGateway(Protocol):
    """Sends one text message to one mobile number in E.164 form (+8613812345678)."""

    def send(self, phone: str, text: str) -> None:
        """Raises SmsUnavailable when the message was not accepted."""
        ...


def mobile_number(value: str, region: str = DEFAULT_REGION) -> str | None:
    """The E.164 form of a valid mobile number (a bare number is read as mainland China's), or None.

    Fixed lines are refused: they cannot receive a text message.
    """
    if not isinstance(value, str) or not 5 <= len(value) <= 32:
        return None
    try:
        number = phonenumbers.parse(value, region)
    except phonenumbers.NumberParseException:
        return None
    mobile = (phonenumbers.PhoneNumberType.MOBILE, phonenumbers.PhoneNumberType.FIXED_LINE_OR_MOBILE)
    if not phonenumbers.is_valid_number(number) or phonenumbers.number_type(number) not in mobile:
        return None
    return phonenumbers.format_number(number, phonenumbers.PhoneNumberFormat.E164)


def mask_phone(phone: str) -> str:
    """For staff and audit: the national number's first 3 and last 4 digits (138****5678)."""
    national = phone.removeprefix("+86") if phone.startswith("+86") else phone.lstrip("+")
    if len(national) <= 7:
        return "*" * len(national)
    return f"{national[:3]}{'*' * (len(national) - 7)}{national[-4:]}"


@dataclass(frozen=True)
class HttpSmsGateway:
    """POST {url} with JSON {"phone", "sign", "text"} and `Authorization: Bearer <api_key>`; any 2xx is accepted.

    The city's SMS platform adds the signature (短信签名, e.g. 【信阳电子证照】) it has registered for `sign`.
    """

    url: str
    api_key: str = field(repr=False)
    sign: str
    timeout: float = DEFAULT_TIMEOUT

    def send(self, phone: str, text: str) -> None:
        body = json.dumps({"phone": phone, "sign": self.sign, "text": text}, ensure_ascii=False).encode()
        request = urllib.request.Request(self.url, data=body, method="POST", headers={
            "Content-Type": "application/json; charset=utf-8", "Accept": "application/json",
            "Authorization": f"Bearer {self.api_key}"})
        try:
            with urllib.request.urlopen(request, timeout=self.timeout) as response:
                status = response.status
                response.read(MAX_ANSWER_BYTES)
        except urllib.error.HTTPError as exc:
            # HTTPError keeps the URL and may echo the request: only its status travels on.
            log.warning("sms gateway refused a message", extra={"fields": {"status": exc.code}})
            raise SmsUnavailable(f"HTTP status {exc.code}") from None
        except (urllib.error.URLError, http.client.HTTPException, OSError, ValueError) as exc:
            reason = getattr(exc, "reason", None) or type(exc).__name__
            log.warning("sms gateway unreachable", extra={"fields": {"reason": str(reason)}})
            raise SmsUnavailable(f"unreachable: {reason}") from None
        if not 200 <= status < 300:
            log.warning("sms gateway refused a message", extra={"fields": {"status": status}})
            raise SmsUnavailable(f"HTTP status {status}")


@dataclass(frozen=True)
class SmsMessage:
    phone: str
    text: str
    sent_at: datetime


@dataclass
class FakeSmsGateway:
    """Records messages instead of sending them: tests read `messages`; `failing` makes every send fail.

    With `outbox` (development), each message is also appended to that file as a JSON line (created mode 0600):
    the only way a developer without an SMS platform can read a code.
    """

    outbox: Path | None = None
    failing: bool = False
    messages: list[SmsMessage] = field(default_factory=list)
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def send(self, phone: str, text: str) -> None:
        if self.failing:
            raise SmsUnavailable("fake gateway set to fail")
        message = SmsMessage(phone, text, datetime.now(UTC))
        with self._lock:
            self.messages.append(message)
            if self.outbox is not None:
                private_directory(self.outbox.parent)
                fd = os.open(self.outbox, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
                with os.fdopen(fd, "a", encoding="utf-8") as handle:
                    handle.write(json.dumps({"phone": phone, "text": text, "sent_at": message.sent_at.isoformat()},
                                            ensure_ascii=False) + "\n")

    def sent_to(self, phone: str) -> list[str]:
        """The texts sent to `phone`, oldest first."""
        return [m.text for m in self.messages if m.phone == phone]


def gateway_from_settings(settings: Any) -> SmsGateway | None:
    """The configured gateway: HTTP when ECERT_SMS_URL is set; else a fake outside production (in development it
    writes instance/sms-outbox.jsonl); else None (production without an SMS platform: codes cannot be sent)."""
    url = settings.get("ECERT_SMS_URL")
    if url:
        return HttpSmsGateway(url=url, api_key=settings.get("ECERT_SMS_API_KEY") or "",
                              sign=settings.get("ECERT_SMS_SIGN") or "", timeout=DEFAULT_TIMEOUT)
    environment = settings.get("ECERT_ENV")
    if environment == "production":
        return None
    outbox = Path(settings["ECERT_INSTANCE_PATH"]) / "sms-outbox.jsonl" if environment == "development" else None
    return FakeSmsGateway(outbox=outbox)
