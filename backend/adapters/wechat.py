"""The WeChat mini-app platform's code-to-session API (code2Session): a login `code` becomes the user's openid."""

from __future__ import annotations

import json
import logging
import re
from dataclasses import dataclass, field
from urllib.parse import urlencode

from backend.adapters import DEFAULT_TIMEOUT, AdapterUnavailable, http_get

log = logging.getLogger("ecert.adapters.wechat")

MAX_ANSWER_BYTES = 16 * 1024
_OPENID = re.compile(r"[A-Za-z0-9_-]{1,128}")
# errcodes that mean "the platform is busy", not "this code is bad": the caller may retry.
_TRANSIENT_ERRCODES = {-1}


class WechatUnavailable(AdapterUnavailable):
    """The platform could not be reached or answered something unusable."""


class WechatLoginRejected(Exception):
    """The platform refused the code (invalid, used, expired, or the user is restricted)."""

    def __init__(self, errcode: int) -> None:
        super().__init__(f"code2Session refused the code: errcode {errcode}")
        self.errcode = errcode


@dataclass(frozen=True)
class WechatClient:
    """Calls `GET {api_url}/sns/jscode2session` for one mini-app (`appid`)."""

    appid: str
    secret: str = field(repr=False)
    api_url: str = "https://api.weixin.qq.com"
    timeout: float = DEFAULT_TIMEOUT

    def code_to_session(self, code: str) -> str:
        """The openid behind a mini-app login code (wx.login). Raises WechatLoginRejected or WechatUnavailable."""
        query = urlencode({"appid": self.appid, "secret": self.secret, "js_code": code,
                           "grant_type": "authorization_code"})
        try:
            body = http_get(f"{self.api_url.rstrip('/')}/sns/jscode2session?{query}", timeout=self.timeout,
                            max_bytes=MAX_ANSWER_BYTES)
        except AdapterUnavailable as exc:
            log.warning("wechat code2session unreachable", extra={"fields": {"appid": self.appid, "reason": str(exc)}})
            raise WechatUnavailable(str(exc)) from None
        try:
            answer = json.loads(body)
        except (ValueError, UnicodeDecodeError):
            answer = None
        if not isinstance(answer, dict):
            log.warning("wechat code2session answered no JSON object", extra={"fields": {"appid": self.appid}})
            raise WechatUnavailable("answer is not a JSON object")
        errcode = answer.get("errcode", 0)
        if errcode not in (0, None):
            # errmsg is not logged: it is free text from the far side. The errcode says enough.
            code_number = errcode if isinstance(errcode, int) and not isinstance(errcode, bool) else -1
            log.warning("wechat code2session refused", extra={"fields": {"appid": self.appid, "errcode": code_number}})
            if code_number in _TRANSIENT_ERRCODES:
                raise WechatUnavailable(f"platform busy: errcode {code_number}")
            raise WechatLoginRejected(code_number)
        openid = answer.get("openid")
        if not isinstance(openid, str) or not _OPENID.fullmatch(openid):
            log.warning("wechat code2session answered no usable openid", extra={"fields": {"appid": self.appid}})
            raise WechatUnavailable("answer has no usable openid")
        return openid
