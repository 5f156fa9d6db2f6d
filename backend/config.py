"""Settings from ECERT_* environment variables; safe development defaults; production refuses unsafe ones."""

from __future__ import annotations

import base64
import functools
import json
import os
import secrets
import shutil
import subprocess
from collections.abc import Mapping
from pathlib import Path
from typing import Any

# Settings are imported from here: the parsed values' types and errors are re-exported (X as X).
from backend.config_parsing import OIDC_ALGORITHMS as OIDC_ALGORITHMS
from backend.config_parsing import ConfigError as ConfigError
from backend.config_parsing import OidcIssuer as OidcIssuer
from backend.config_parsing import (
    boolean,
    bounded,
    choice,
    decode_key,
    integer,
    parse_data_keys,
    parse_oidc_providers,
    parse_reminder_days,
)
from backend.core import rate_limit_storage
from backend.core.private_files import FILE_MODE, narrow, private_directory

PROJECT_ROOT = Path(__file__).resolve().parent.parent

ENVIRONMENTS = ("development", "testing", "production")

# Secrets that production must receive from the environment and development may generate.
SECRET_SETTINGS = ("ECERT_MASTER_KEY", "ECERT_SECRET_KEY", "ECERT_DATA_KEYS", "ECERT_BLIND_INDEX_KEY")
# Byte capacity of a version-10 QR at level M (213) less a show-code token (132) and "/v/".
MAX_PUBLIC_URL_BYTES = 213 - 132 - 3

# Where CJK fonts (for certificate card images) usually live, Debian's fonts-noto-cjk first.
CJK_FONT_CANDIDATES = (
    "/usr/share/fonts/opentype/noto/NotoSansCJK-Regular.ttc",  # Debian, Ubuntu: fonts-noto-cjk
    "/usr/share/fonts/truetype/noto/NotoSansCJK-Regular.ttc",
    "/usr/share/fonts/noto-cjk/NotoSansCJK-Regular.ttc",  # Arch: noto-fonts-cjk
    "/usr/share/fonts/google-noto-cjk/NotoSansCJK-Regular.ttc",  # Fedora: google-noto-sans-cjk-ttc-fonts
    "/usr/share/fonts/opentype/noto/NotoSerifCJK-Regular.ttc",
    "/usr/share/fonts/truetype/wqy/wqy-microhei.ttc",
    "/usr/share/fonts/truetype/wqy/wqy-zenhei.ttc",
    "/System/Library/Fonts/PingFang.ttc",  # macOS
)


@functools.cache
def find_cjk_font() -> str | None:
    """Default of `ECERT_CJK_FONT`: a well-known CJK font file, else one fontconfig lists as covering Chinese.

    (`fc-list :lang=zh-cn`, not `fc-match`: fc-match always answers some font, DejaVu included, which would draw
    every Chinese character as the same box.)
    """
    for candidate in CJK_FONT_CANDIDATES:
        if os.path.isfile(candidate):
            return candidate
    fc_list = shutil.which("fc-list")
    if fc_list is None:
        return None
    try:
        listed = subprocess.run([fc_list, "-f", "%{file}\n", ":lang=zh-cn"], capture_output=True, text=True,
                                timeout=10, check=False).stdout
    except (OSError, subprocess.SubprocessError):
        return None
    files = sorted({line.strip() for line in listed.splitlines() if line.strip()})
    regular = [f for f in files if "Regular" in f and "Mono" not in f]
    chosen = regular or files
    return chosen[0] if chosen else None


def _new_key() -> str:
    return base64.urlsafe_b64encode(secrets.token_bytes(32)).decode().rstrip("=")


def _dev_secrets(instance_path: Path) -> dict[str, str]:
    """Read (or create, mode 0600) the development secrets file under instance/."""
    path = instance_path / "secrets.json"
    if path.exists():
        narrow(path, FILE_MODE)  # left world-readable by an older version
        stored: dict[str, str] = json.loads(path.read_text())
        return stored
    private_directory(instance_path)
    generated = {
        "ECERT_MASTER_KEY": _new_key(),
        "ECERT_SECRET_KEY": secrets.token_urlsafe(32),
        "ECERT_DATA_KEYS": f"1:{_new_key()}",
        "ECERT_BLIND_INDEX_KEY": _new_key(),
    }
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, FILE_MODE)
    with os.fdopen(fd, "w") as handle:
        json.dump(generated, handle, indent=2)
    return generated


def load_settings(env: Mapping[str, str] | None = None, overrides: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """Build the Flask config mapping. `overrides` (tests) win over the environment."""
    env = dict(os.environ if env is None else env)
    overrides = dict(overrides or {})
    for key, value in overrides.items():
        if key.startswith("ECERT_") and isinstance(value, str):
            env[key] = value

    environment = env.get("ECERT_ENV", "development")
    if environment not in ENVIRONMENTS:
        raise ConfigError(f"ECERT_ENV must be one of {', '.join(ENVIRONMENTS)}, got {environment!r}")
    production = environment == "production"

    instance_path = Path(env.get("ECERT_INSTANCE_PATH") or PROJECT_ROOT / "instance")
    generated: set[str] = set()
    missing = [name for name in SECRET_SETTINGS if not env.get(name)]
    if missing:
        if production:
            raise ConfigError(f"{missing[0]} is required when ECERT_ENV=production (generated secrets are refused)")
        dev = _dev_secrets(instance_path)
        for name in missing:
            env[name] = dev[name]
            generated.add(name)

    database_url = env.get("ECERT_DATABASE_URL") or f"sqlite:///{instance_path / 'ecert.db'}"
    if database_url.startswith("postgres://"):
        database_url = "postgresql+psycopg://" + database_url.removeprefix("postgres://")
    elif database_url.startswith("postgresql://"):
        database_url = "postgresql+psycopg://" + database_url.removeprefix("postgresql://")

    settings: dict[str, Any] = {
        "ECERT_ENV": environment,
        "ECERT_INSTANCE_PATH": str(instance_path),
        "SQLALCHEMY_DATABASE_URI": database_url,
        "ECERT_REDIS_URL": env.get("ECERT_REDIS_URL") or None,
        "SECRET_KEY": env["ECERT_SECRET_KEY"],
        "ECERT_MASTER_KEY": decode_key("ECERT_MASTER_KEY", env["ECERT_MASTER_KEY"]),
        "ECERT_DATA_KEYS": parse_data_keys(env["ECERT_DATA_KEYS"]),
        "ECERT_BLIND_INDEX_KEY": decode_key("ECERT_BLIND_INDEX_KEY", env["ECERT_BLIND_INDEX_KEY"]),
        "ECERT_GENERATED_SECRETS": sorted(generated),
        "ECERT_PUBLIC_URL": (env.get("ECERT_PUBLIC_URL") or "http://localhost:8000").rstrip("/"),
        # Opt-in even in development: a forgotten ECERT_ENV must not leave "log in as anyone" open.
        "ECERT_DEV_LOGIN": boolean(env.get("ECERT_DEV_LOGIN"), default=False),
        # Login providers: trusted real-name IdPs (oidc) and the WeChat mini-app (wechat; off without an appid).
        "ECERT_OIDC_PROVIDERS": parse_oidc_providers(env.get("ECERT_OIDC_PROVIDERS") or "[]", production=production),
        "ECERT_WECHAT_APPID": env.get("ECERT_WECHAT_APPID") or None,
        "ECERT_WECHAT_SECRET": env.get("ECERT_WECHAT_SECRET") or None,
        "ECERT_WECHAT_API_URL": (env.get("ECERT_WECHAT_API_URL") or "https://api.weixin.qq.com").rstrip("/"),
        # The SMS platform for counter-service one-time codes (第十一条): POST {url} with a bearer key. Unset: a
        # recording fake outside production (development: instance/sms-outbox.jsonl); in production no codes are
        # sent (503 sms_unavailable) and staff attestation remains.
        "ECERT_SMS_URL": env.get("ECERT_SMS_URL") or None,
        "ECERT_SMS_API_KEY": env.get("ECERT_SMS_API_KEY") or None,
        "ECERT_SMS_SIGN": env.get("ECERT_SMS_SIGN") or "信阳电子证照",
        "ECERT_SIGNING_ALG": choice(env, "ECERT_SIGNING_ALG", ("ES256", "EdDSA"), "ES256"),
        "ECERT_ACCESS_TOKEN_TTL": bounded(env, "ECERT_ACCESS_TOKEN_TTL", 600, 60, 900),
        # Seconds a real-name login's word that the holder represents a company (法人) keeps counting (1 min–30 days):
        # then the company's certificates are hidden until a real-name login asserts the representation again.
        "ECERT_REPRESENTATION_MAX_AGE": bounded(env, "ECERT_REPRESENTATION_MAX_AGE", 24 * 3600, 60, 30 * 24 * 3600),
        # Show codes (亮证码): lifetime of one code and when the app should fetch the next one (DESIGN §5).
        "ECERT_SHOW_CODE_TTL": integer(env, "ECERT_SHOW_CODE_TTL", 60),
        "ECERT_SHOW_CODE_REFRESH": integer(env, "ECERT_SHOW_CODE_REFRESH", 30),
        # Days a show-code check stays on record as already seen (show_code_use, purged by `flask jobs purge`): a
        # code lives at most 300 s, so after a day only a re-scan of an old expired code could add a second audit
        # event. The usage history and the audit chain are kept apart and never purged.
        "ECERT_SHOW_CODE_USE_RETENTION_DAYS": bounded(env, "ECERT_SHOW_CODE_USE_RETENTION_DAYS", 30, 1, 3650),
        # Access requests (用证请求): seconds a department's request waits for the holder's answer; its callback's
        # HTTP timeout (seconds) and how many attempts before it is given up (retried by `flask jobs callbacks`).
        "ECERT_ACCESS_REQUEST_TTL": bounded(env, "ECERT_ACCESS_REQUEST_TTL", 600, 60, 3600),
        "ECERT_CALLBACK_TIMEOUT": bounded(env, "ECERT_CALLBACK_TIMEOUT", 3, 1, 30),
        "ECERT_CALLBACK_MAX_ATTEMPTS": bounded(env, "ECERT_CALLBACK_MAX_ATTEMPTS", 8, 1, 50),
        "ECERT_MAX_ASSERTION_LIFETIME": 300,
        "MAX_CONTENT_LENGTH": integer(env, "ECERT_MAX_BODY_BYTES", 1024 * 1024),
        # Batch import files (POST /gov/v1/certificates/batches): their own, larger byte cap and a row cap.
        "ECERT_MAX_BATCH_BYTES": integer(env, "ECERT_MAX_BATCH_BYTES", 64 * 1024 * 1024),
        "ECERT_MAX_BATCH_ROWS": integer(env, "ECERT_MAX_BATCH_ROWS", 100_000),
        # Processes forked to sign batch imports in `flask jobs imports` (0: sign in the job's process).
        "ECERT_IMPORT_WORKERS": integer(env, "ECERT_IMPORT_WORKERS", 0),
        # Batch files wait for `flask jobs imports` in this directory, sealed with the data key. Every node that
        # accepts batches or runs the job must see the same directory (shared storage), or set another storage.
        "ECERT_IMPORT_SPOOL_DIR": env.get("ECERT_IMPORT_SPOOL_DIR") or str(instance_path / "import-spool"),
        # A processing batch whose worker has not reported for this long is taken to be dead and imported again
        # from scratch, at most ECERT_IMPORT_MAX_ATTEMPTS times in all before it fails.
        "ECERT_IMPORT_STALE_SECONDS": bounded(env, "ECERT_IMPORT_STALE_SECONDS", 300, 30, 86_400),
        "ECERT_IMPORT_MAX_ATTEMPTS": bounded(env, "ECERT_IMPORT_MAX_ATTEMPTS", 3, 1, 20),
        # Import queued batches in a thread of the web process, woken by each submission: on by default in
        # development only (`make run` needs no operator); production runs `flask jobs imports` instead.
        "ECERT_IMPORT_IN_PROCESS": boolean(env.get("ECERT_IMPORT_IN_PROCESS"), default=environment == "development"),
        "ECERT_RATELIMIT_DEFAULT": env.get("ECERT_RATELIMIT_DEFAULT", "600 per minute"),
        "ECERT_RATELIMIT_TOKEN": env.get("ECERT_RATELIMIT_TOKEN", "60 per minute"),
        # Objection reports per client and certificate: a report is rare, and each attempt is a try at its checks.
        "ECERT_RATELIMIT_OBJECTION_REPORT": env.get("ECERT_RATELIMIT_OBJECTION_REPORT", "10 per hour"),
        "ECERT_TRUSTED_PROXIES": bounded(env, "ECERT_TRUSTED_PROXIES", 0, 0, 5),
        "ECERT_TRUSTED_PROXIES_SET": bool(env.get("ECERT_TRUSTED_PROXIES")),
        "ECERT_LOG_LEVEL": env.get("ECERT_LOG_LEVEL", "INFO"),
        # A .ttc/.otf/.ttf with Chinese glyphs for card images (None: card.png answers 503 font_unavailable).
        "ECERT_CJK_FONT": env.get("ECERT_CJK_FONT") or find_cjk_font(),
        "ECERT_REMINDER_DAYS": parse_reminder_days(env.get("ECERT_REMINDER_DAYS") or "90,30,7"),
        # Objections (异议): where cleaned evidence images are kept, the working-day calendar for deadlines, and the
        # city administrators (牵头单位) to whom overdue objections are escalated (a department's USCC).
        "ECERT_EVIDENCE_DIR": env.get("ECERT_EVIDENCE_DIR") or str(instance_path / "evidence"),
        "ECERT_HOLIDAY_CALENDAR": env.get("ECERT_HOLIDAY_CALENDAR")
        or str(PROJECT_ROOT / "catalog" / "xinyang" / "holidays.yaml"),
        "ECERT_OBJECTION_LEAD_DEPARTMENT": env.get("ECERT_OBJECTION_LEAD_DEPARTMENT") or "11411500005991632F",
        "ECERT_CLOCK": None,
        # How long a statement waits for a lock another transaction holds (SQLite: the one writer; PostgreSQL:
        # lock_timeout) before it fails; a request then answers 503 database_busy with Retry-After.
        "ECERT_DB_LOCK_TIMEOUT_MS": bounded(env, "ECERT_DB_LOCK_TIMEOUT_MS", 30_000, 10, 600_000),
        # Bound SQL parameters (personal data) never reach logs or tracebacks in production.
        "SQLALCHEMY_ENGINE_OPTIONS": {"pool_pre_ping": True, "hide_parameters": production},
        "JSON_AS_ASCII": False,
    }
    settings["SQLALCHEMY_ENGINE_OPTIONS"]["connect_args"] = _lock_timeout_arguments(
        database_url, settings["ECERT_DB_LOCK_TIMEOUT_MS"])
    redis_url = settings["ECERT_REDIS_URL"]
    settings["RATELIMIT_STORAGE_URI"] = redis_url or f"{rate_limit_storage.SCHEME}://"  # no timer thread per request
    settings["RATELIMIT_HEADERS_ENABLED"] = True
    # Flask-Limiter would put its window's reset time in Retry-After on every answer (and over a 503's own value):
    # it goes to its own header; Retry-After is set only by the answers that ask to retry (429, 503).
    settings["RATELIMIT_HEADER_RETRY_AFTER"] = "X-RateLimit-Retry-After"
    settings.update({k: v for k, v in overrides.items() if not (k.startswith("ECERT_") and isinstance(v, str))})
    check_show_codes(settings)
    if production:
        check_production(settings)
    return settings


def _lock_timeout_arguments(database_url: str, milliseconds: int) -> dict[str, Any]:
    """The driver's connect arguments that bound lock waits: pysqlite's busy timeout, PostgreSQL's lock_timeout."""
    if database_url.startswith("sqlite"):
        return {"timeout": milliseconds / 1000}
    if database_url.startswith("postgresql"):
        return {"options": f"-c lock_timeout={milliseconds}"}
    return {}


def check_show_codes(settings: Mapping[str, Any]) -> None:
    """A show code must die within minutes, and its URL must fit a version-10 QR code (DESIGN §5)."""
    ttl, refresh = settings["ECERT_SHOW_CODE_TTL"], settings["ECERT_SHOW_CODE_REFRESH"]
    if not 10 <= ttl <= 300:
        raise ConfigError(f"ECERT_SHOW_CODE_TTL must be 10..300 seconds, got {ttl}")
    if not 1 <= refresh < ttl:
        raise ConfigError(f"ECERT_SHOW_CODE_REFRESH must be at least 1 and below ECERT_SHOW_CODE_TTL, got {refresh}")
    if len(str(settings["ECERT_PUBLIC_URL"]).encode()) > MAX_PUBLIC_URL_BYTES:
        raise ConfigError(f"ECERT_PUBLIC_URL must be at most {MAX_PUBLIC_URL_BYTES} bytes: longer show-code URLs "
                          "do not fit a version-10 QR code")


def check_production(settings: Mapping[str, Any]) -> None:
    """Refuse to start production on settings that are only fit for development."""
    if settings["ECERT_GENERATED_SECRETS"]:
        raise ConfigError(f"{settings['ECERT_GENERATED_SECRETS'][0]} must come from the environment in production")
    if str(settings["SQLALCHEMY_DATABASE_URI"]).startswith("sqlite"):
        raise ConfigError("ECERT_DATABASE_URL must point to PostgreSQL in production, not SQLite")
    if settings["ECERT_DEV_LOGIN"]:
        raise ConfigError("ECERT_DEV_LOGIN must be off in production")
    if not settings.get("ECERT_TRUSTED_PROXIES_SET"):
        raise ConfigError("ECERT_TRUSTED_PROXIES must be set in production (the number of proxies in front; "
                          "0 when clients connect directly) so rate limits and audit see real client addresses")
    if settings.get("ECERT_WECHAT_APPID"):
        if not settings.get("ECERT_WECHAT_SECRET"):
            raise ConfigError("ECERT_WECHAT_SECRET is required in production when ECERT_WECHAT_APPID is set")
        if not str(settings["ECERT_WECHAT_API_URL"]).startswith("https://"):
            raise ConfigError("ECERT_WECHAT_API_URL must be an https:// URL in production")
    if settings.get("ECERT_SMS_URL"):
        if not str(settings["ECERT_SMS_URL"]).startswith("https://"):
            raise ConfigError("ECERT_SMS_URL must be an https:// URL in production")
        if not settings.get("ECERT_SMS_API_KEY"):
            raise ConfigError("ECERT_SMS_API_KEY is required in production when ECERT_SMS_URL is set")
    if not str(settings["ECERT_PUBLIC_URL"]).startswith("https://"):
        raise ConfigError("ECERT_PUBLIC_URL must be an https:// URL in production")
    if not settings["ECERT_REDIS_URL"]:
        raise ConfigError("ECERT_REDIS_URL is required in production (rate limits shared across servers)")
