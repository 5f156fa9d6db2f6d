"""Login providers: real-name login with ID tokens of trusted IdPs (oidc), mini-app quick login (wechat), dev.

Everything external is local: the IdPs' keys are generated here (one JWKS in a file, one served over HTTP), and
the WeChat code-to-session API is a real HTTP server on 127.0.0.1, so the real adapters run unchanged.
"""

from __future__ import annotations

import base64
import hashlib
import io
import json
import logging
import threading
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, HTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl, urlsplit

import jwt
import pytest
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from jwt.algorithms import ECAlgorithm, RSAAlgorithm

from backend.adapters import AdapterUnavailable
from backend.adapters.jwks import JwksCache
from backend.config import ConfigError, load_settings
from backend.core.context import field_cipher, keystore
from backend.core.edge import JsonFormatter
from backend.extensions import db
from backend.identity.citizens import subject_index
from backend.identity.login_nonces import NonceOutcome, consume_login_nonce
from backend.models import AuditEvent, AuthSession, HolderIdentity, IdTokenUse, LoginNonce, Representation
from tests.conftest import FakeClock
from tests.factories import company_code, resident_id

NONCE = "n-0S6_WzA2Mj"
APPID = "wx8f3e2a1b9c0d4e5f"
APP_SECRET = "wechat-app-secret-7c1d9e"
PERSON = resident_id(seq=417)
ISSUER_A = "https://idp.henan.gov.cn/realname"
ISSUER_B = "https://auth.xinyang.gov.cn/oidc"


# ---------------------------------------------------------------------------------------------------------------
# Local stand-ins for the outside world
# ---------------------------------------------------------------------------------------------------------------

Route = Callable[[dict[str, str]], tuple[int, bytes]]


class LocalHttpServer:
    """A real HTTP server on 127.0.0.1 in a thread: GET routes by path; remembers every request it got."""

    def __init__(self) -> None:
        self.routes: dict[str, Route] = {}
        self.requests: list[tuple[str, dict[str, str]]] = []
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                parts = urlsplit(self.path)
                query = dict(parse_qsl(parts.query))
                outer.requests.append((parts.path, query))
                route = outer.routes.get(parts.path)
                status, body = route(query) if route else (404, b"{}")
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, format: str, *args: Any) -> None:  # the query holds the secret: stay quiet
                pass

        self._server = HTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self._server.server_port}"
        self._thread = threading.Thread(target=self._server.serve_forever, kwargs={"poll_interval": 0.02},
                                        daemon=True)
        self._thread.start()
        self._running = True

    def stop(self) -> None:
        """Shut down and close the port: later connections are refused."""
        if self._running:
            self._server.shutdown()
            self._server.server_close()
            self._thread.join()
            self._running = False


@pytest.fixture
def remote() -> Iterator[LocalHttpServer]:
    server = LocalHttpServer()
    yield server
    server.stop()


@dataclass
class FakeWechat:
    """The mini-app platform's jscode2session: known codes answer an openid, refused ones an errcode."""

    server: LocalHttpServer
    openids: dict[str, str] = field(default_factory=dict)
    errcodes: dict[str, int] = field(default_factory=dict)

    def answer(self, query: dict[str, str]) -> tuple[int, bytes]:
        if query.get("appid") != APPID or query.get("secret") != APP_SECRET:
            return 200, json.dumps({"errcode": 40125, "errmsg": "invalid appsecret"}).encode()
        code = query.get("js_code", "")
        if code in self.openids and query.get("grant_type") == "authorization_code":
            return 200, json.dumps({"openid": self.openids.pop(code), "session_key": "c2Vzc2lvbi1rZXk="}).encode()
        errcode = self.errcodes.get(code, 40029)
        return 200, json.dumps({"errcode": errcode, "errmsg": f"invalid code, rid: {uuid.uuid4().hex[:8]}"}).encode()

    def new_code(self, openid: str) -> str:
        """A one-time login code the mini-app would get from wx.login() for this WeChat user."""
        code = "wx" + uuid.uuid4().hex
        self.openids[code] = openid
        return code

    def calls(self) -> list[dict[str, str]]:
        return [query for path, query in self.server.requests if path == "/sns/jscode2session"]


@pytest.fixture
def wechat(remote: LocalHttpServer) -> FakeWechat:
    fake = FakeWechat(remote)
    remote.routes["/sns/jscode2session"] = fake.answer
    return fake


@dataclass
class TestIdP:
    """A trusted identity provider: its signing key, its public JWKS, and ID tokens for a person."""

    issuer: str
    client_id: str
    alg: str
    private_key: Any
    clock: FakeClock
    kid: str = field(default_factory=lambda: uuid.uuid4().hex[:12])
    claim_names: dict[str, str] = field(default_factory=dict)
    # Where the app gets a nonce for its authentication request (POST /api/v1/auth/nonce; set by `http`).
    nonce_source: Callable[[], str] | None = None

    __test__ = False  # not a test class

    def new_nonce(self) -> str:
        assert self.nonce_source is not None, "use the `http` fixture: nonces come from the platform"
        return self.nonce_source()

    def jwks(self) -> dict[str, Any]:
        exporter = ECAlgorithm if self.alg.startswith("ES") else RSAAlgorithm
        public = exporter.to_jwk(self.private_key.public_key(), as_dict=True)
        return {"keys": [{**public, "kid": self.kid, "use": "sig", "alg": self.alg}]}

    def claims(self, **overrides: Any) -> dict[str, Any]:
        issued = int(self.clock().timestamp())
        real_name = {"name": "张伟", "id_type": "111", "id_number": PERSON, "assurance_level": "loa3",
                     "companies": []}
        claims: dict[str, Any] = {
            "iss": self.issuer, "sub": f"sub-{PERSON[-6:]}", "aud": self.client_id, "iat": issued,
            "exp": issued + 300, "nonce": overrides["nonce"] if "nonce" in overrides else self.new_nonce(),
            **{self.claim_names.get(k, k if k != "assurance_level" else "acr"): v for k, v in real_name.items()},
        }
        claims.update(overrides)
        return {k: v for k, v in claims.items() if v is not None}

    def token(self, *, key: Any = None, alg: str | None = None, headers: dict[str, Any] | None = None,
              **overrides: Any) -> str:
        return jwt.encode(self.claims(**overrides), key or self.private_key, algorithm=alg or self.alg,
                          headers={"kid": self.kid, **(headers or {})})

    def login(self, token: str | None = None, **extra: Any) -> dict[str, Any]:
        """The app's login request; `nonce` (optional in the API) may be passed in `extra`."""
        return {"provider": "oidc", "issuer": self.issuer, "id_token": token or self.token(), **extra}


@pytest.fixture
def idp_a(clock: FakeClock) -> TestIdP:
    """The province's real-name IdP: ES256, default claim names, JWKS in a file."""
    return TestIdP(ISSUER_A, "ecert-xinyang", "ES256", ec.generate_private_key(ec.SECP256R1()), clock)


@pytest.fixture(scope="module")
def rsa_key() -> rsa.RSAPrivateKey:
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)  # slow to make: once per module


@pytest.fixture
def idp_b(clock: FakeClock, rsa_key: rsa.RSAPrivateKey) -> TestIdP:
    """The city's own IdP: RS256, its own claim names, JWKS served over HTTP."""
    names = {"name": "real_name", "id_number": "cert_no", "assurance_level": "loa", "companies": "legal_entities"}
    return TestIdP(ISSUER_B, "xy-ecert-miniapp", "RS256", rsa_key, clock, claim_names=names)


@pytest.fixture
def wechat_enabled() -> bool:
    """Parametrize with False for a deployment without the mini-app."""
    return True


@pytest.fixture
def app_settings(tmp_path: Path, idp_a: TestIdP, idp_b: TestIdP, remote: LocalHttpServer, wechat: FakeWechat,
                 wechat_enabled: bool) -> dict[str, Any]:
    """Both IdPs trusted (A through a JWKS file, B through a JWKS URL) and the mini-app against the fake platform."""
    jwks_file = tmp_path / "idp-a-jwks.json"
    jwks_file.write_text(json.dumps(idp_a.jwks()))
    remote.routes["/idp-b/jwks"] = lambda query: (200, json.dumps(idp_b.jwks()).encode())
    settings = {
        "ECERT_OIDC_PROVIDERS": json.dumps([
            {"issuer": idp_a.issuer, "client_id": idp_a.client_id, "jwks_file": str(jwks_file)},
            {"issuer": idp_b.issuer, "client_id": idp_b.client_id, "jwks_uri": f"{remote.url}/idp-b/jwks",
             "algorithms": ["RS256"], "claims": idp_b.claim_names},
        ]),
    }
    if wechat_enabled:
        settings.update({"ECERT_WECHAT_APPID": APPID, "ECERT_WECHAT_SECRET": APP_SECRET,
                         "ECERT_WECHAT_API_URL": remote.url})
    return settings


@pytest.fixture
def platform_key(app: Any, clock: FakeClock) -> None:
    """The platform key that signs citizen access tokens."""
    with app.app_context():
        keystore().create_key("platform", None, "ES256", clock())
        db.session.commit()


def fetch_nonce(http: Any) -> str:
    response = http.post("/api/v1/auth/nonce")
    assert response.status_code == 200, response.get_json()
    return str(response.get_json()["nonce"])


@pytest.fixture
def http(client: Any, platform_key: None, idp_a: TestIdP, idp_b: TestIdP) -> Any:
    """The API client; the IdPs' tokens carry nonces it fetched from the platform, as the app would."""
    idp_a.nonce_source = idp_b.nonce_source = lambda: fetch_nonce(client)
    return client


def me(http: Any, response: Any) -> dict[str, Any]:
    assert response.status_code == 200, response.get_json()
    answer = http.get("/api/v1/me", headers={"Authorization": f"Bearer {response.get_json()['access_token']}"})
    assert answer.status_code == 200
    return dict(answer.get_json())


def refused_logins(app: Any) -> list[AuditEvent]:
    with app.app_context():
        return list(db.session.scalars(db.select(AuditEvent).where(AuditEvent.action == "citizen.login_refused")))


def unsigned_token(claims: dict[str, Any], kid: str, alg: str = "none") -> str:
    def part(document: dict[str, Any]) -> str:
        return base64.urlsafe_b64encode(json.dumps(document).encode()).decode().rstrip("=")

    return f"{part({'alg': alg, 'typ': 'JWT', 'kid': kid})}.{part(claims)}."


def stored_subject(app: Any, subject: str) -> str:
    """What holder_identity.subject holds for a provider's subject: its keyed digest."""
    with app.app_context():
        return subject_index(field_cipher(), subject)


# ---------------------------------------------------------------------------------------------------------------
# oidc: the happy paths
# ---------------------------------------------------------------------------------------------------------------


def test_id_token_of_a_trusted_idp_logs_the_person_in_with_real_name_claims(app, http, idp_a):
    response = http.post("/api/v1/auth/login", json=idp_a.login())
    body = response.get_json()
    assert response.status_code == 200, body
    assert body["expires_in"] <= 900 and body["refresh_token"]
    profile = me(http, response)
    assert profile["name"] == "张伟"
    assert profile["id_type"] == "111"
    assert profile["assurance_level"] == "loa3"
    assert PERSON not in json.dumps(profile)
    with app.app_context():
        identity = db.session.scalar(db.select(HolderIdentity))
        assert identity.provider == f"oidc:{ISSUER_A}"
        assert identity.subject == stored_subject(app, f"sub-{PERSON[-6:]}") != f"sub-{PERSON[-6:]}"
        assert db.session.scalar(db.select(AuthSession.provider)) == f"oidc:{ISSUER_A}"


def test_companies_the_person_represents_appear_in_me(http, idp_a):
    tea, food = company_code(), company_code()
    token = idp_a.token(companies=[{"code": tea, "name": "信阳毛尖茶业有限公司", "role": "legal_representative"},
                                   {"code": food, "name": "信阳老街饭店有限公司", "role": "authorised_agent"}])
    profile = me(http, http.post("/api/v1/auth/login", json=idp_a.login(token)))
    assert sorted((c["code"], c["name"], c["role"]) for c in profile["companies"]) == sorted([
        (tea, "信阳毛尖茶业有限公司", "legal_representative"), (food, "信阳老街饭店有限公司", "authorised_agent")])


def test_two_configured_idps_both_log_the_same_person_in(app, http, idp_a, idp_b, remote):
    first = me(http, http.post("/api/v1/auth/login", json=idp_a.login()))
    second = me(http, http.post("/api/v1/auth/login", json=idp_b.login(idp_b.token(sub="xy-31337"))))
    assert first["id"] == second["id"]  # one holder, found again through the blind index of the ID number
    assert second["assurance_level"] == "loa3"  # read from the mapped claim "loa"
    assert any(path == "/idp-b/jwks" for path, _ in remote.requests)
    with app.app_context():
        providers = set(db.session.scalars(db.select(HolderIdentity.provider)))
        assert providers == {f"oidc:{ISSUER_A}", f"oidc:{ISSUER_B}"}


def test_idp_keys_fetched_over_http_are_cached_between_logins(http, idp_b, remote):
    for _ in range(3):
        assert http.post("/api/v1/auth/login", json=idp_b.login()).status_code == 200
    assert [path for path, _ in remote.requests].count("/idp-b/jwks") == 1


def test_oidc_session_refresh_rotates_and_reuse_of_an_old_token_revokes_the_family(app, http, idp_a):
    first = http.post("/api/v1/auth/login", json=idp_a.login()).get_json()
    rotated = http.post("/api/v1/auth/refresh", json={"refresh_token": first["refresh_token"]})
    assert rotated.status_code == 200
    reused = http.post("/api/v1/auth/refresh", json={"refresh_token": first["refresh_token"]})
    assert reused.get_json()["error"]["code"] == "refresh_token_reused"
    assert http.post("/api/v1/auth/refresh", json={"refresh_token": rotated.get_json()["refresh_token"]}).status_code \
        == 401
    with app.app_context():
        assert db.session.scalar(db.select(AuthSession.revoked_reason)) == "refresh_token_reuse"


def test_missing_assurance_level_and_id_type_take_their_defaults(http, idp_a):
    profile = me(http, http.post("/api/v1/auth/login", json=idp_a.login(idp_a.token(acr=None, id_type=None))))
    assert (profile["id_type"], profile["assurance_level"]) == ("111", "unspecified")


# ---------------------------------------------------------------------------------------------------------------
# oidc: every failed check is a 401 with its own reason, and audited
# ---------------------------------------------------------------------------------------------------------------

FOREIGN_KEY = ec.generate_private_key(ec.SECP256R1())


def _login_body(idp: TestIdP, case: str) -> dict[str, Any]:
    now = int(idp.clock().timestamp())
    bodies: dict[str, Callable[[], dict[str, Any]]] = {
        "foreign_key": lambda: idp.login(idp.token(key=FOREIGN_KEY)),
        "alg_none": lambda: idp.login(unsigned_token(idp.claims(), idp.kid)),
        "hs256": lambda: idp.login(idp.token(key="k" * 32, alg="HS256")),
        "unknown_kid": lambda: idp.login(idp.token(headers={"kid": "rotated-away"})),
        "wrong_iss": lambda: idp.login(idp.token(iss="https://idp.example.com")),
        "unknown_issuer": lambda: {**idp.login(), "issuer": "https://idp.example.com"},
        "wrong_aud": lambda: idp.login(idp.token(aud="another-relying-party")),
        "several_aud_without_azp": lambda: idp.login(idp.token(aud=[idp.client_id, "another-relying-party"])),
        "expired": lambda: idp.login(idp.token(iat=now - 120, exp=now - 1)),
        "iat_in_future": lambda: idp.login(idp.token(iat=now + 120, exp=now + 400)),
        "too_old": lambda: idp.login(idp.token(iat=now - 700, exp=now + 300)),
        "nonce_mismatch": lambda: idp.login(nonce="another-nonce-123"),
        "missing_nonce": lambda: idp.login(idp.token(nonce=None)),
        "missing_sub": lambda: idp.login(idp.token(sub=None)),
        "missing_id_number": lambda: idp.login(idp.token(id_number=None)),
        "bad_id_number_check_character": lambda: idp.login(idp.token(
            id_number=PERSON[:-1] + ("0" if PERSON[-1] != "0" else "1"))),
        "company_id_type": lambda: idp.login(idp.token(id_type="001", id_number=company_code())),
        "invalid_company_code": lambda: idp.login(idp.token(companies=[{"code": "91411502MA0000000X",
                                                                        "name": "某公司"}])),
        "garbage": lambda: idp.login("not.a.jwt"),
    }
    return bodies[case]()


@pytest.mark.parametrize(("case", "reason", "details"), [
    ("foreign_key", "bad_signature", {}),
    ("alg_none", "unsupported_alg", {}),
    ("hs256", "unsupported_alg", {}),
    ("unknown_kid", "unknown_key", {}),
    ("wrong_iss", "wrong_issuer", {}),
    ("unknown_issuer", "unknown_issuer", {}),
    ("wrong_aud", "wrong_audience", {}),
    ("several_aud_without_azp", "wrong_authorized_party", {}),
    ("expired", "expired", {}),
    ("iat_in_future", "issued_in_future", {}),
    ("too_old", "too_old", {}),
    ("nonce_mismatch", "nonce_mismatch", {}),
    ("missing_nonce", "nonce_mismatch", {}),
    ("missing_sub", "missing_claim", {"claim": "sub"}),
    ("missing_id_number", "missing_claim", {"claim": "id_number"}),
    ("bad_id_number_check_character", "invalid_claim", {"claim": "id_number", "check": "bad_check_character"}),
    ("company_id_type", "invalid_claim", {"claim": "id_type", "check": "not_a_person_id_type"}),
    ("invalid_company_code", "invalid_claim", {"claim": "companies"}),
    ("garbage", "malformed", {}),
])
def test_id_token_failing_a_check_is_refused_with_its_reason_and_audited(app, http, idp_a, case, reason, details):
    response = http.post("/api/v1/auth/login", json=_login_body(idp_a, case))
    assert response.status_code == 401, response.get_json()
    error = response.get_json()["error"]
    assert error["code"] == "invalid_id_token"
    assert error["details"]["reason"] == reason
    assert details.items() <= error["details"].items()
    assert PERSON not in json.dumps(error)
    [event] = refused_logins(app)
    assert event.outcome == "failure"
    assert event.details["reason"] == reason
    assert event.object_id == (ISSUER_A if case != "unknown_issuer" else "unknown")
    with app.app_context():
        assert db.session.scalar(db.select(db.func.count()).select_from(HolderIdentity)) == 0


def test_refused_attempt_audit_names_the_subject_but_never_the_token(app, http, idp_a):
    token = idp_a.token(aud="another-relying-party")
    assert http.post("/api/v1/auth/login", json=idp_a.login(token)).status_code == 401
    [event] = refused_logins(app)
    # A short prefix of the subject's keyed digest: attempts can be correlated, the subject is not disclosed.
    assert event.details == {"reason": "wrong_audience", "subject": stored_subject(app, f"sub-{PERSON[-6:]}")[:12]}
    assert event.actor_id == "unknown" and event.source_ip == "127.0.0.1"
    assert token not in json.dumps(event.details)


def test_idp_keys_out_of_reach_answer_503(http, idp_b, remote):
    remote.stop()
    response = http.post("/api/v1/auth/login", json=idp_b.login())
    assert response.status_code == 503
    assert response.get_json()["error"]["code"] == "idp_unavailable"


def test_algorithm_outside_the_idps_configured_list_is_refused(http, idp_b):
    # IdP B is configured for RS256 only; a token that names ES256 is refused before any key is tried.
    token = jwt.encode(idp_b.claims(), FOREIGN_KEY, algorithm="ES256", headers={"kid": idp_b.kid})
    response = http.post("/api/v1/auth/login", json=idp_b.login(token))
    assert response.get_json()["error"]["details"]["reason"] == "unsupported_alg"


# ---------------------------------------------------------------------------------------------------------------
# oidc: the platform issues the nonce, it is used once, and an ID token logs in once
# ---------------------------------------------------------------------------------------------------------------

LOGIN = "/api/v1/auth/login"


def refusal(response: Any) -> tuple[int, str, str]:
    error = response.get_json()["error"]
    return response.status_code, error["code"], error.get("details", {}).get("reason", "")


def count(app: Any, model: Any) -> int:
    with app.app_context():
        return int(db.session.scalar(db.select(db.func.count()).select_from(model)) or 0)


def test_the_platform_issues_nonces_and_stores_only_their_hash(app, http):
    response = http.post("/api/v1/auth/nonce")
    assert response.status_code == 200
    body = response.get_json()
    assert body["expires_in"] == 600
    assert len(body["nonce"]) >= 32 and body["nonce"] != fetch_nonce(http)
    with app.app_context():
        stored = set(db.session.scalars(db.select(LoginNonce.nonce_hash)))
    assert len(stored) == 2 and body["nonce"] not in stored
    assert hashlib.sha256(body["nonce"].encode()).hexdigest() in stored


def test_a_leaked_id_token_does_not_log_in_a_second_time(app, http, idp_a):
    token = idp_a.token()
    assert http.post(LOGIN, json=idp_a.login(token)).status_code == 200

    replayed = http.post(LOGIN, json=idp_a.login(token))

    assert refusal(replayed) == (401, "invalid_id_token", "replayed")
    assert count(app, AuthSession) == 1
    [event] = refused_logins(app)
    assert event.details["reason"] == "replayed" and event.object_id == ISSUER_A


def test_a_second_id_token_carrying_a_used_nonce_is_refused(app, http, idp_a, clock):
    nonce = fetch_nonce(http)
    assert http.post(LOGIN, json=idp_a.login(idp_a.token(nonce=nonce, jti="first-token-0001"))).status_code == 200
    clock.advance(seconds=20)

    again = http.post(LOGIN, json=idp_a.login(idp_a.token(nonce=nonce, jti="second-token-0002")))

    assert refusal(again) == (401, "invalid_id_token", "nonce_used")
    assert count(app, AuthSession) == 1


def test_a_nonce_the_platform_never_issued_is_refused(app, http, idp_a):
    # The old flow: the app made up the nonce and sent it along with the token. Now the platform must know it.
    token = idp_a.token(nonce=NONCE)
    response = http.post(LOGIN, json=idp_a.login(token, nonce=NONCE))
    assert refusal(response) == (401, "invalid_id_token", "nonce_mismatch")
    assert count(app, AuthSession) == 0


def test_an_expired_nonce_is_refused_even_in_a_fresh_id_token(http, idp_a, clock):
    nonce = fetch_nonce(http)
    clock.advance(minutes=10)
    response = http.post(LOGIN, json=idp_a.login(idp_a.token(nonce=nonce)))
    assert refusal(response) == (401, "invalid_id_token", "nonce_mismatch")


def test_a_nonce_in_the_request_body_must_be_the_one_in_the_id_token(http, idp_a):
    nonce = fetch_nonce(http)
    token = idp_a.token(nonce=nonce)
    assert refusal(http.post(LOGIN, json=idp_a.login(token, nonce=fetch_nonce(http)))) == \
        (401, "invalid_id_token", "nonce_mismatch")
    assert http.post(LOGIN, json=idp_a.login(token, nonce=nonce)).status_code == 200


def test_a_login_refused_after_the_nonce_check_leaves_the_nonce_usable(app, http, idp_a, wechat):
    nonce = fetch_nonce(http)
    wechat.errcodes["refused-code"] = 40029
    refused = http.post(LOGIN, json=idp_a.login(idp_a.token(nonce=nonce, jti="try-one-0001"),
                                                 wechat_code="refused-code"))
    assert refusal(refused)[:2] == (401, "wechat_login_failed")
    assert count(app, IdTokenUse) == 0  # rolled back with the refused login

    retried = http.post(LOGIN, json=idp_a.login(idp_a.token(nonce=nonce, jti="try-two-0002")))

    assert retried.status_code == 200


def test_logins_racing_with_one_nonce_let_exactly_one_through(app, http, clock):
    nonce = fetch_nonce(http)
    racers = 6
    start = threading.Barrier(racers)
    outcomes: list[NonceOutcome] = []
    failures: list[BaseException] = []

    def race() -> None:
        try:
            with app.app_context():
                start.wait(timeout=30)
                outcomes.append(consume_login_nonce(db.session, nonce, now=clock()))
                db.session.commit()
        except BaseException as exc:  # reported by the main thread
            failures.append(exc)

    threads = [threading.Thread(target=race) for _ in range(racers)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=120)
    assert failures == []
    assert sorted(o.value for o in outcomes) == ["accepted"] + ["used"] * (racers - 1)


@pytest.mark.parametrize("app_settings", [{}])
def test_no_nonce_where_no_identity_provider_is_trusted(app, http, app_settings):
    response = http.post("/api/v1/auth/nonce")
    assert response.status_code == 403
    assert response.get_json()["error"]["code"] == "provider_unavailable"
    assert count(app, LoginNonce) == 0


def test_purge_forgets_expired_nonces_and_replay_entries(app, http, idp_a, runner, clock):
    assert http.post(LOGIN, json=idp_a.login()).status_code == 200  # a used nonce and a replay entry
    fetch_nonce(http)  # never used
    clock.advance(minutes=5)
    fetch_nonce(http)  # still valid at the purge
    clock.advance(minutes=6)

    result = runner.invoke(args=["jobs", "purge"])

    assert result.exit_code == 0, result.output
    assert "3 expired login nonce(s)" in result.output  # two nonces and one replay entry
    assert (count(app, LoginNonce), count(app, IdTokenUse)) == (1, 0)
    assert "0 expired login nonce(s)" in runner.invoke(args=["jobs", "purge"]).output  # idempotent


# ---------------------------------------------------------------------------------------------------------------
# Audit rows never carry what the caller typed (NUL bytes broke PostgreSQL), nor a subject in the clear
# ---------------------------------------------------------------------------------------------------------------


def test_an_unknown_issuer_with_nul_bytes_is_audited_as_unknown(app, http, idp_a):
    response = http.post(LOGIN, json={**idp_a.login(), "issuer": "https://idp.example.com/\x00evil"})
    assert refusal(response) == (401, "invalid_id_token", "unknown_issuer")
    [event] = refused_logins(app)
    assert event.object_id == "unknown"
    assert "evil" not in json.dumps(event.details)


@pytest.mark.parametrize("alg", ["ES256\x00", "\x00", "x" * 300, "HS256 "])
def test_an_unrecognised_alg_is_audited_as_unrecognised(app, http, idp_a, alg):
    response = http.post(LOGIN, json=idp_a.login(unsigned_token(idp_a.claims(), idp_a.kid, alg=alg)))
    assert refusal(response) == (401, "invalid_id_token", "unsupported_alg")
    assert response.get_json()["error"]["details"]["alg"] == "unrecognised"
    [event] = refused_logins(app)
    assert (event.object_id, event.details["alg"]) == (ISSUER_A, "unrecognised")


def test_a_recognised_alg_outside_the_configuration_is_named(app, http, idp_a):
    response = http.post(LOGIN, json=idp_a.login(idp_a.token(key="k" * 32, alg="HS256")))
    assert response.get_json()["error"]["details"]["alg"] == "HS256"


def test_login_subjects_are_stored_and_audited_only_as_keyed_digests(app, http, idp_a, wechat):
    subject = PERSON  # some IdPs use the ID number as `sub`
    assert http.post(LOGIN, json=idp_a.login(idp_a.token(sub=subject),
                                             wechat_code=wechat.new_code("oPENid-1"))).status_code == 200
    assert http.post("/api/v1/auth/login", json={"provider": "dev", "name": "张伟", "id_type": "111",
                                                 "id_number": PERSON}).status_code == 200
    assert http.post(LOGIN, json=idp_a.login(idp_a.token(sub=subject, aud="another"))).status_code == 401
    with app.app_context():
        stored = set(db.session.scalars(db.select(HolderIdentity.subject)))
        audited = json.dumps([e.details for e in db.session.scalars(db.select(AuditEvent))], ensure_ascii=False)
        objects = json.dumps([e.object_id for e in db.session.scalars(db.select(AuditEvent))])
    assert stored == {stored_subject(app, s) for s in (subject, "oPENid-1", f"111:{PERSON}")}
    for text in (PERSON, "oPENid-1"):
        assert text not in audited and text not in objects
    assert stored_subject(app, subject)[:12] in audited


def test_subjects_differing_only_in_case_stay_two_identities(app, http, idp_a):
    assert http.post(LOGIN, json=idp_a.login(idp_a.token(sub="Subject-A"))).status_code == 200
    other = idp_a.token(sub="subject-a", name="李娜", id_number=resident_id(seq=418))
    assert http.post(LOGIN, json=idp_a.login(other)).status_code == 200
    assert count(app, HolderIdentity) == 2


# ---------------------------------------------------------------------------------------------------------------
# Represented companies: asserted by real-name logins only, and only for a while
# ---------------------------------------------------------------------------------------------------------------


def test_quick_login_does_not_renew_represented_companies(app, http, idp_a, wechat, clock):
    tea = [{"code": (code := company_code()), "name": "信阳毛尖茶业有限公司"}]
    asserted = clock().isoformat()
    bound = me(http, http.post(LOGIN, json=idp_a.login(idp_a.token(companies=tea),
                                                       wechat_code=wechat.new_code("oPENid-1"))))
    assert [(c["code"], c["asserted_at"], c["current"]) for c in bound["companies"]] == [(code, asserted, True)]
    clock.advance(hours=24, seconds=1)

    quick = me(http, http.post(LOGIN, json={"provider": "wechat", "code": wechat.new_code("oPENid-1")}))

    assert [(c["code"], c["asserted_at"], c["current"]) for c in quick["companies"]] == [(code, asserted, False)]
    with app.app_context():
        assert db.session.scalar(db.select(Representation.asserted_at)).isoformat() == asserted
    renewed = me(http, http.post(LOGIN, json=idp_a.login(idp_a.token(companies=tea))))
    assert [(c["asserted_at"], c["current"]) for c in renewed["companies"]] == [(clock().isoformat(), True)]


# ---------------------------------------------------------------------------------------------------------------
# JWKS cache: refetch on an unknown kid, at most once a minute
# ---------------------------------------------------------------------------------------------------------------


def test_unknown_kid_refetches_the_key_set_at_most_once_per_minute(remote):
    published = {"keys": [{"kty": "EC", "kid": "k1"}]}
    remote.routes["/jwks"] = lambda query: (200, json.dumps(published).encode())
    moment = [1000.0]
    cache = JwksCache.from_url(f"{remote.url}/jwks", source="test", monotonic=lambda: moment[0])

    def fetches() -> int:
        return [path for path, _ in remote.requests].count("/jwks")

    assert [k["kid"] for k in cache.keys_for("k1")] == ["k1"] and fetches() == 1
    published["keys"].append({"kty": "EC", "kid": "k2"})  # the IdP rotates
    moment[0] += 10
    assert cache.keys_for("k2") == [] and fetches() == 1  # too soon after the last fetch
    moment[0] += 51
    assert [k["kid"] for k in cache.keys_for("k2")] == ["k2"] and fetches() == 2
    moment[0] += 5
    for _ in range(20):
        assert cache.keys_for("made-up") == []
    assert fetches() == 2


def test_key_set_stays_usable_while_the_idp_is_down_and_oversized_sets_are_refused(remote):
    remote.routes["/jwks"] = lambda query: (200, json.dumps({"keys": [{"kty": "EC", "kid": "k1"}]}).encode())
    moment = [0.0]
    cache = JwksCache.from_url(f"{remote.url}/jwks", source="test", monotonic=lambda: moment[0])
    assert cache.keys_for("k1")
    remote.routes["/jwks"] = lambda query: (500, b"{}")
    moment[0] += 7200  # past the cache lifetime: refetch fails, the stale set is still used
    assert cache.keys_for("k1")
    remote.routes["/huge"] = lambda query: (200, b'{"keys": [' + b" " * 70_000 + b"]}")
    with pytest.raises(AdapterUnavailable, match="larger"):
        JwksCache.from_url(f"{remote.url}/huge", source="test").keys_for(None)


# ---------------------------------------------------------------------------------------------------------------
# wechat: bound by a real-name login, then quick login
# ---------------------------------------------------------------------------------------------------------------


def test_realname_login_with_a_wechat_code_binds_the_account_for_quick_login(app, http, idp_a, wechat):
    bound = me(http, http.post("/api/v1/auth/login", json=idp_a.login(wechat_code=wechat.new_code("oPENid-1"))))
    quick = http.post("/api/v1/auth/login", json={"provider": "wechat", "code": wechat.new_code("oPENid-1")})
    assert me(http, quick)["id"] == bound["id"]
    assert [(q["appid"], q["secret"], q["grant_type"]) for q in wechat.calls()] == [
        (APPID, APP_SECRET, "authorization_code")] * 2
    with app.app_context():
        identity = db.session.scalar(db.select(HolderIdentity).where(HolderIdentity.provider == f"wechat:{APPID}"))
        assert identity.subject == stored_subject(app, "oPENid-1")
        latest = db.session.scalars(db.select(AuthSession).order_by(AuthSession.id.desc())).first()
        assert latest.provider == f"wechat:{APPID}"
        actions = db.session.scalars(db.select(AuditEvent.action)).all()
        assert "citizen.identity_bound" in actions


def test_wechat_session_keeps_the_time_of_the_last_real_name_login(app, http, idp_a, wechat, clock):
    real_name_at = clock()
    assert http.post("/api/v1/auth/login", json=idp_a.login(wechat_code=wechat.new_code("oPENid-1"))).status_code == 200
    clock.advance(hours=2)
    assert http.post("/api/v1/auth/login", json={"provider": "wechat",
                                                 "code": wechat.new_code("oPENid-1")}).status_code == 200
    with app.app_context():
        quick = db.session.scalar(db.select(AuthSession).where(AuthSession.provider == f"wechat:{APPID}"))
        # Step-up checks (require_recent_login) see the real-name login, not the quick one.
        assert quick.auth_time == real_name_at
        assert quick.created_at == clock()


def test_wechat_login_of_an_unbound_account_requires_real_name_login_first(app, http, wechat):
    response = http.post("/api/v1/auth/login", json={"provider": "wechat", "code": wechat.new_code("oNEWcomer")})
    assert response.status_code == 401
    assert response.get_json()["error"]["code"] == "realname_required"
    [event] = refused_logins(app)
    assert event.details == {"reason": "realname_required"}
    with app.app_context():
        assert db.session.scalar(db.select(db.func.count()).select_from(AuthSession)) == 0


def test_a_new_wechat_account_replaces_the_holders_old_one(app, http, idp_a, wechat):
    for openid in ("oOLD-account", "oNEW-account"):
        assert http.post("/api/v1/auth/login", json=idp_a.login(wechat_code=wechat.new_code(openid))).status_code == 200
    old = http.post("/api/v1/auth/login", json={"provider": "wechat", "code": wechat.new_code("oOLD-account")})
    assert old.get_json()["error"]["code"] == "realname_required"


def test_wechat_account_bound_to_someone_else_is_not_rebound(http, idp_a, wechat):
    assert http.post("/api/v1/auth/login", json=idp_a.login(wechat_code=wechat.new_code("oSHARED"))).status_code == 200
    other = idp_a.token(sub="someone-else", name="李娜", id_number=resident_id(seq=418))
    response = http.post("/api/v1/auth/login", json=idp_a.login(other, wechat_code=wechat.new_code("oSHARED")))
    assert response.status_code == 401
    assert response.get_json()["error"]["code"] == "identity_conflict"


@pytest.mark.parametrize(("errcode", "status", "code"), [
    (40029, 401, "wechat_login_failed"),  # invalid code
    (40163, 401, "wechat_login_failed"),  # code already used
    (45011, 401, "wechat_login_failed"),  # the user is rate-limited by the platform
    (-1, 503, "wechat_unavailable"),  # platform busy
])
def test_code_refused_by_the_platform_is_refused_here(app, http, wechat, errcode, status, code):
    wechat.errcodes["refused-code"] = errcode
    response = http.post("/api/v1/auth/login", json={"provider": "wechat", "code": "refused-code"})
    assert response.status_code == status
    assert response.get_json()["error"]["code"] == code
    if status == 401:
        assert response.get_json()["error"]["details"] == {"errcode": errcode}
        [event] = refused_logins(app)
        assert event.details == {"reason": "wechat_login_failed", "errcode": errcode}


def test_unreachable_platform_is_503_for_quick_login_and_for_binding(http, idp_a, wechat, remote):
    remote.stop()
    quick = http.post("/api/v1/auth/login", json={"provider": "wechat", "code": "any-code"})
    assert (quick.status_code, quick.get_json()["error"]["code"]) == (503, "wechat_unavailable")
    assert quick.headers["Retry-After"] == "30"
    binding = http.post("/api/v1/auth/login", json=idp_a.login(wechat_code="any-code"))
    assert (binding.status_code, binding.get_json()["error"]["code"]) == (503, "wechat_unavailable")


def test_app_secret_login_codes_and_session_key_never_reach_the_logs(app, http, idp_a, wechat):
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(JsonFormatter())
    handler.setLevel(logging.DEBUG)
    ecert = logging.getLogger("ecert")
    ecert.addHandler(handler)
    previous = ecert.level
    ecert.setLevel(logging.DEBUG)
    codes = [wechat.new_code("oPENid-1"), wechat.new_code("oPENid-1"), "refused-code-0001"]
    try:
        http.post("/api/v1/auth/login", json=idp_a.login(wechat_code=codes[0]))
        http.post("/api/v1/auth/login", json={"provider": "wechat", "code": codes[1]})
        http.post("/api/v1/auth/login", json={"provider": "wechat", "code": codes[2]})
    finally:
        ecert.removeHandler(handler)
        ecert.setLevel(previous)
    logged = stream.getvalue()
    assert "wechat code2session refused" in logged and "/api/v1/auth/login" in logged  # the capture works
    for secret in (APP_SECRET, "c2Vzc2lvbi1rZXk=", *codes):
        assert secret not in logged
    with app.app_context():
        audited = json.dumps([e.details for e in db.session.scalars(db.select(AuditEvent))], ensure_ascii=False)
    for secret in (APP_SECRET, *codes):
        assert secret not in audited


# ---------------------------------------------------------------------------------------------------------------
# Which providers a deployment offers
# ---------------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("app_settings", [{}])
@pytest.mark.parametrize("body", [
    {"provider": "oidc", "issuer": ISSUER_A, "id_token": "x.y.z", "nonce": NONCE},
    {"provider": "wechat", "code": "0a1b2c"},
])
def test_provider_not_configured_is_unavailable(http, app_settings, body):
    response = http.post("/api/v1/auth/login", json=body)
    assert response.status_code == 403
    error = response.get_json()["error"]
    assert (error["code"], error["details"]) == ("provider_unavailable", {"provider": body["provider"]})


@pytest.mark.parametrize("wechat_enabled", [False])
def test_binding_a_wechat_account_needs_the_wechat_provider(http, wechat_enabled, idp_a, wechat):
    assert http.post("/api/v1/auth/login", json=idp_a.login()).status_code == 200
    response = http.post("/api/v1/auth/login", json=idp_a.login(wechat_code=wechat.new_code("oPENid-1")))
    assert response.status_code == 403
    assert response.get_json()["error"]["code"] == "provider_unavailable"
    assert response.get_json()["error"]["details"] == {"provider": "wechat"}
    assert wechat.calls() == []


@pytest.mark.parametrize("app_settings", [{"ECERT_DEV_LOGIN": "0"}])
def test_dev_provider_is_refused_when_dev_login_is_off(http, app_settings):
    response = http.post("/api/v1/auth/login", json={"provider": "dev", "name": "张伟", "id_type": "111",
                                                     "id_number": PERSON})
    assert response.status_code == 403
    assert response.get_json()["error"]["code"] == "provider_disabled"


def test_login_body_is_a_documented_union_chosen_by_provider(client):
    document = client.get("/openapi.json").get_json()
    body = document["paths"]["/api/v1/auth/login"]["post"]["requestBody"]["content"]["application/json"]["schema"]
    schema = document["components"]["schemas"][body["$ref"].rsplit("/", 1)[-1]]
    assert schema["discriminator"]["propertyName"] == "provider"
    assert set(schema["discriminator"]["mapping"]) == {"dev", "oidc", "wechat"}
    assert len(schema["oneOf"]) == 3
    assert "503" in document["paths"]["/api/v1/auth/login"]["post"]["responses"]


def test_unknown_fields_and_a_malformed_wechat_code_are_rejected(http, idp_a):
    extra = http.post("/api/v1/auth/login", json={**idp_a.login(), "acr": "loa4"})
    assert extra.status_code == 422
    bad_code = http.post("/api/v1/auth/login", json={"provider": "wechat", "code": "a b&c=d"})
    assert bad_code.status_code == 422


# ---------------------------------------------------------------------------------------------------------------
# Settings
# ---------------------------------------------------------------------------------------------------------------


def _env(tmp_path: Path, **extra: str) -> dict[str, str]:
    return {"ECERT_INSTANCE_PATH": str(tmp_path), **extra}


@pytest.mark.parametrize(("entries", "named"), [
    ("{not json", "not valid JSON"),
    ('{"issuer": "https://a"}', "must be a JSON list"),
    ('[{"client_id": "x", "jwks_uri": "https://a/jwks"}]', "entry 1: 'issuer'"),
    ('[{"issuer": "https://a", "jwks_uri": "https://a/jwks"}]', r"entry 1 \(https://a\): 'client_id'"),
    ('[{"issuer": "https://a", "client_id": "x"}]', "exactly one of 'jwks_uri' and 'jwks_file'"),
    ('[{"issuer": "https://a", "client_id": "x", "jwks_file": "/nonexistent/jwks.json"}]', "'jwks_file'"),
    ('[{"issuer": "https://a", "client_id": "x", "jwks_uri": "file:///etc/passwd"}]', "'jwks_uri'"),
    ('[{"issuer": "https://a", "client_id": "x", "jwks_uri": "https://a/jwks", "algorithms": ["HS256"]}]',
     "'algorithms'"),
    ('[{"issuer": "https://a", "client_id": "x", "jwks_uri": "https://a/jwks", "algorithms": ["none"]}]',
     "'algorithms'"),
    ('[{"issuer": "https://a", "client_id": "x", "jwks_uri": "https://a/jwks", "claims": {"phone": "tel"}}]',
     "'claims'"),
    ('[{"issuer": "https://a", "client_id": "x", "jwks_uri": "https://a/jwks", "secret": "s"}]', "unknown key"),
    ('[{"issuer": "https://a", "client_id": "x", "jwks_uri": "https://a/jwks"},'
     ' {"issuer": "https://a", "client_id": "y", "jwks_uri": "https://a/jwks"}]', "entry 2: issuer https://a"),
])
def test_oidc_provider_settings_are_validated_and_the_faulty_entry_named(tmp_path, entries, named):
    with pytest.raises(ConfigError, match=f"ECERT_OIDC_PROVIDERS.*{named}|{named}"):
        load_settings(env=_env(tmp_path, ECERT_OIDC_PROVIDERS=entries))


def test_oidc_provider_settings_fill_in_defaults(tmp_path):
    settings = load_settings(env=_env(tmp_path, ECERT_OIDC_PROVIDERS=json.dumps([
        {"issuer": "https://a", "client_id": "x", "jwks_uri": "https://a/jwks", "claims": {"id_number": "cert_no"}}])))
    [issuer] = settings["ECERT_OIDC_PROVIDERS"]
    assert issuer.algorithms == ("ES256", "RS256", "EdDSA")
    assert issuer.claims["id_number"] == "cert_no" and issuer.claims["assurance_level"] == "acr"


PRODUCTION_KEY = base64.urlsafe_b64encode(b"k" * 32).decode()
PRODUCTION = {
    "ECERT_ENV": "production", "ECERT_DATABASE_URL": "postgresql://ecert@db.internal/ecert",
    "ECERT_REDIS_URL": "redis://cache.internal:6379/0", "ECERT_TRUSTED_PROXIES": "1", "ECERT_PUBLIC_URL": "https://ecert.xinyang.gov.cn",
    "ECERT_MASTER_KEY": PRODUCTION_KEY, "ECERT_SECRET_KEY": "s" * 40, "ECERT_DATA_KEYS": f"1:{PRODUCTION_KEY}",
    "ECERT_BLIND_INDEX_KEY": PRODUCTION_KEY,
}


@pytest.mark.parametrize(("extra", "named"), [
    ({"ECERT_WECHAT_APPID": APPID}, "ECERT_WECHAT_SECRET"),
    ({"ECERT_WECHAT_APPID": APPID, "ECERT_WECHAT_SECRET": APP_SECRET, "ECERT_WECHAT_API_URL": "http://127.0.0.1:9"},
     "ECERT_WECHAT_API_URL"),
    ({"ECERT_OIDC_PROVIDERS": '[{"issuer": "http://idp", "client_id": "x", "jwks_uri": "https://idp/jwks"}]'},
     "'issuer' must be https"),
    ({"ECERT_OIDC_PROVIDERS": '[{"issuer": "https://idp", "client_id": "x", "jwks_uri": "http://idp/jwks"}]'},
     "'jwks_uri' must be an https"),
])
def test_production_refuses_unsafe_login_provider_settings(tmp_path, extra, named):
    with pytest.raises(ConfigError, match=named):
        load_settings(env=_env(tmp_path, **PRODUCTION, **extra))


def test_production_accepts_wechat_with_its_secret_and_runs_without_an_appid(tmp_path):
    with_wechat = load_settings(env=_env(tmp_path, **PRODUCTION, ECERT_WECHAT_APPID=APPID,
                                         ECERT_WECHAT_SECRET=APP_SECRET))
    assert with_wechat["ECERT_WECHAT_API_URL"] == "https://api.weixin.qq.com"
    assert load_settings(env=_env(tmp_path, **PRODUCTION))["ECERT_WECHAT_APPID"] is None
