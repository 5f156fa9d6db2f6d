"""Shared fixtures: one migrated database per test run (SQLite file or PostgreSQL), emptied between tests.

Set ECERT_TEST_DATABASE_URL=postgresql://…/postgres to run the suite on PostgreSQL: a fresh database
is created for the run and dropped afterwards.
"""

from __future__ import annotations

import base64
import os
import secrets
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import jwt
import pytest
import sqlalchemy as sa
from cryptography.hazmat.primitives.asymmetric import ec
from flask.testing import FlaskClient, FlaskCliRunner
from flask_migrate import upgrade
from flask_openapi3 import OpenAPI

from backend.app import create_app
from backend.audit.chain import GENESIS
from backend.catalog.loader import get_department, load_catalog
from backend.config import PROJECT_ROOT
from backend.core.context import keystore
from backend.crypto.jwk import public_jwk
from backend.extensions import db
from backend.identity.clients import register_client
from backend.kernel.actors import Actor
from backend.models import Base
from tests.support import Department, throwaway_postgres
from tests.web.console_support import Staff, make_staff

DEMO_CATALOG = PROJECT_ROOT / "catalog" / "xinyang"
SAMR = "11411500MB1C629765"  # 信阳市市场监督管理局
CIVIL_AFFAIRS = "114115000059925712"  # 信阳市民政局
DISABILITY_FEDERATION = "13411500005993726Q"  # 信阳市残疾人联合会
START = datetime(2026, 11, 26, 9, 0, tzinfo=UTC)


def _key() -> str:
    return base64.urlsafe_b64encode(secrets.token_bytes(32)).decode()


TEST_SECRETS = {
    "ECERT_MASTER_KEY": _key(),
    "ECERT_SECRET_KEY": "test-secret-key",
    "ECERT_DATA_KEYS": f"1:{_key()}",
    "ECERT_BLIND_INDEX_KEY": _key(),
}


class FakeClock:
    """An injected clock: tests move time forward instead of sleeping."""

    def __init__(self, start: datetime = START) -> None:
        self.current = start

    def __call__(self) -> datetime:
        return self.current

    def advance(self, **delta: float) -> datetime:
        self.current += timedelta(**delta)
        return self.current


@pytest.fixture(scope="session")
def database_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    admin_url = os.environ.get("ECERT_TEST_DATABASE_URL")
    if not admin_url:
        yield f"sqlite:///{tmp_path_factory.mktemp('db') / 'test.db'}"
        return
    with throwaway_postgres(admin_url, "ecert_test") as url:
        yield url


@pytest.fixture(scope="session")
def _migrated(database_url: str, tmp_path_factory: pytest.TempPathFactory) -> str:
    app = create_app(_settings(database_url, tmp_path_factory.mktemp("instance")))
    with app.app_context():
        upgrade(directory=str(PROJECT_ROOT / "migrations"))
        db.engine.dispose()
    return database_url


def _settings(database_url: str, instance: Path, **extra: Any) -> dict[str, Any]:
    return {
        "ECERT_ENV": "testing",
        "ECERT_DATABASE_URL": database_url,
        "ECERT_INSTANCE_PATH": str(instance),
        "ECERT_PUBLIC_URL": "http://localhost",
        "ECERT_DEV_LOGIN": "1",
        **TEST_SECRETS,
        "RATELIMIT_ENABLED": False,
        **extra,
    }


def _empty_database() -> None:
    """Delete every row (children first) and reset the audit chain head, so each test starts clean."""
    with db.engine.begin() as conn:
        for table in reversed(Base.metadata.sorted_tables):
            conn.execute(table.delete())
        conn.execute(sa.text("INSERT INTO audit_head (id, seq, chain_hash) VALUES (1, 0, :h)"), {"h": GENESIS})


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def app_settings() -> dict[str, Any]:
    """Override in a test module (or parametrize) to change settings for the `app` fixture."""
    return {}


@pytest.fixture
def app(_migrated: str, tmp_path: Path, clock: FakeClock, app_settings: dict[str, Any]) -> Iterator[OpenAPI]:
    app = create_app(_settings(_migrated, tmp_path / "instance", ECERT_CLOCK=clock, **app_settings))
    with app.app_context():
        _empty_database()
    yield app
    with app.app_context():
        db.session.remove()
        db.engine.dispose()


@pytest.fixture
def client(app: OpenAPI) -> FlaskClient:
    return app.test_client()


@pytest.fixture
def runner(app: OpenAPI) -> FlaskCliRunner:
    return app.test_cli_runner()


@pytest.fixture
def catalog(app: OpenAPI, clock: FakeClock) -> None:
    """The Xinyang demo catalog with department keys, plus the platform keys."""
    with app.app_context():
        store = keystore()
        load_catalog(db.session, DEMO_CATALOG, store, actor=Actor.operator("test"), now=clock())
        store.create_key("platform", None, "ES256", clock())
        store.create_key("wallet", None, "ES256", clock())
        db.session.commit()


@dataclass
class DeptClient:
    """A registered department client with its private key, able to sign assertions and get tokens."""

    client_id: str
    department_code: str
    private_key: ec.EllipticCurvePrivateKey
    http: FlaskClient
    clock: FakeClock
    scopes: list[str] = field(default_factory=list)

    def assertion(self, **overrides: Any) -> str:
        issued = int(self.clock().timestamp())
        claims: dict[str, Any] = {
            "iss": self.client_id, "sub": self.client_id, "aud": "http://localhost/gov/v1/oauth/token",
            "iat": issued, "exp": issued + 120, "jti": uuid.uuid4().hex,
        }
        claims.update(overrides)
        claims = {k: v for k, v in claims.items() if v is not None}
        return jwt.encode(claims, self.private_key, algorithm="ES256")

    def token_response(self, assertion: str | None = None, **form: str) -> Any:
        data = {
            "grant_type": "client_credentials",
            "client_assertion_type": "urn:ietf:params:oauth:client-assertion-type:jwt-bearer",
            "client_assertion": assertion or self.assertion(),
            **form,
        }
        return self.http.post("/gov/v1/oauth/token", data=data)

    def token(self, scope: str | None = None) -> str:
        response = self.token_response(**({"scope": scope} if scope else {}))
        assert response.status_code == 200, response.get_json()
        return str(response.get_json()["access_token"])

    def headers(self, scope: str | None = None) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.token(scope)}"}


@pytest.fixture
def make_dept_client(app: OpenAPI, client: FlaskClient, clock: FakeClock, catalog: None) -> Any:
    """Factory: register a client for a department with the given scopes."""

    def factory(department: str = SAMR, scopes: tuple[str, ...] = ("catalog", "issue", "verify"),
                name: str = "业务系统") -> DeptClient:
        private = ec.generate_private_key(ec.SECP256R1())
        with app.app_context():
            registered = register_client(db.session, department=get_department(db.session, department), name=name,
                                         scopes=list(scopes), jwks=public_jwk(private.public_key()),
                                         actor=Actor.operator("test"), now=clock())
            db.session.commit()
            client_id = registered.client_id
        return DeptClient(client_id, department, private, client, clock, list(scopes))

    return factory


@pytest.fixture
def dept_client(make_dept_client: Any) -> DeptClient:
    return make_dept_client()


@pytest.fixture
def department(make_dept_client: Any) -> Callable[..., Department]:
    """Factory: a department's business system (tests.support.Department) with a new client of the given scopes."""

    def factory(code: str = SAMR, scopes: tuple[str, ...] = ("issue",)) -> Department:
        return Department(make_dept_client(code, scopes=scopes))

    return factory


@pytest.fixture
def samr(department: Callable[..., Department]) -> Department:
    """信阳市市场监督管理局: business and food licences (legal persons)."""
    return department(SAMR)


@pytest.fixture
def civil_affairs(department: Callable[..., Department]) -> Department:
    """信阳市民政局: marriage certificates (natural persons)."""
    return department(CIVIL_AFFAIRS)


@pytest.fixture
def disability_federation(department: Callable[..., Department]) -> Department:
    """信阳市残疾人联合会: disability certificates (ID number and address on the face), valid for ten years."""
    return department(DISABILITY_FEDERATION)


@dataclass
class Citizen:
    """A logged-in citizen (dev provider) with helpers for authenticated requests."""

    http: FlaskClient
    name: str
    id_number: str
    access_token: str
    refresh_token: str

    @property
    def headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.access_token}"}


@pytest.fixture
def login(client: FlaskClient, catalog: None) -> Any:
    """Factory: log a citizen in through the dev provider; `companies` are the companies they represent."""

    def factory(name: str = "张伟", id_number: str | None = None,
                companies: list[dict[str, str]] | None = None) -> Citizen:
        from tests.factories import resident_id

        number = id_number or resident_id()
        response = client.post("/api/v1/auth/login", json={"provider": "dev", "name": name, "id_type": "111",
                                                           "id_number": number, "companies": companies or []})
        assert response.status_code == 200, response.get_json()
        body = response.get_json()
        return Citizen(client, name, number, body["access_token"], body["refresh_token"])

    return factory


# -- people and systems that tests of several areas share ----------------------------------------------------------

@pytest.fixture
def company() -> str:
    """A company's USCC; the `representative` fixture represents it."""
    from tests.factories import company_code

    return company_code()


@pytest.fixture
def citizen(login: Any) -> Citizen:
    """张伟, logged in, representing no company."""
    return login("张伟")


@pytest.fixture
def representative(login: Any, company: str) -> Citizen:
    """张伟, representing `company`."""
    return login("张伟", companies=[{"code": company, "name": "信阳毛尖茶业有限公司"}])


@pytest.fixture
def samr_system(make_dept_client: Any) -> Any:
    """信阳市市场监督管理局's system: issues licences, and redeems grants."""
    return make_dept_client(SAMR, scopes=("issue", "verify", "redeem"))


@pytest.fixture
def clerk(app: OpenAPI, clock: FakeClock, catalog: None) -> Staff:
    """li.clerk, a staff member of 信阳市民政局 (which issues marriage certificates)."""
    return make_staff(app, clock, CIVIL_AFFAIRS, username="li.clerk")


@pytest.fixture
def civil_issuer(make_dept_client: Any) -> DeptClient:
    """信阳市民政局's system that only issues (marriage certificates)."""
    return make_dept_client(CIVIL_AFFAIRS, scopes=("issue",))


@pytest.fixture
def civil_requester(make_dept_client: Any) -> DeptClient:
    """信阳市民政局's system that issues, verifies, asks holders for certificates and redeems grants."""
    return make_dept_client(CIVIL_AFFAIRS, scopes=("issue", "verify", "redeem", "request"))
