"""Settings: development generates its secrets; production refuses anything unsafe and names the setting."""

from __future__ import annotations

import base64
import os
import stat

import pytest

from backend.app import create_app
from backend.config import ConfigError, load_settings
from tests.settings_support import KEY, production


def test_development_generates_secrets_into_instance_with_mode_0600(tmp_path):
    settings = load_settings(env={"ECERT_INSTANCE_PATH": str(tmp_path)})
    secrets_file = tmp_path / "secrets.json"
    assert stat.S_IMODE(os.stat(secrets_file).st_mode) == 0o600
    assert len(settings["ECERT_MASTER_KEY"]) == 32
    assert settings["ECERT_GENERATED_SECRETS"] == sorted(
        ["ECERT_MASTER_KEY", "ECERT_SECRET_KEY", "ECERT_DATA_KEYS", "ECERT_BLIND_INDEX_KEY"])
    again = load_settings(env={"ECERT_INSTANCE_PATH": str(tmp_path)})
    assert again["ECERT_MASTER_KEY"] == settings["ECERT_MASTER_KEY"]
    assert settings["SQLALCHEMY_DATABASE_URI"] == f"sqlite:///{tmp_path / 'ecert.db'}"


def test_safe_production_settings_are_accepted(tmp_path):
    settings = load_settings(env=production(tmp_path))
    assert settings["ECERT_DEV_LOGIN"] is False
    assert settings["SQLALCHEMY_DATABASE_URI"].startswith("postgresql+psycopg://")
    assert not (tmp_path / "secrets.json").exists()


@pytest.mark.parametrize("missing", ["ECERT_MASTER_KEY", "ECERT_SECRET_KEY", "ECERT_DATA_KEYS",
                                     "ECERT_BLIND_INDEX_KEY"])
def test_production_refuses_missing_secrets_and_names_them(tmp_path, missing):
    with pytest.raises(ConfigError, match=missing):
        load_settings(env=production(tmp_path, **{missing: None}))
    assert not (tmp_path / "secrets.json").exists()


@pytest.mark.parametrize(
    ("change", "named"),
    [
        ({"ECERT_DATABASE_URL": None}, "ECERT_DATABASE_URL"),
        ({"ECERT_DATABASE_URL": "sqlite:////var/lib/ecert.db"}, "ECERT_DATABASE_URL"),
        ({"ECERT_DEV_LOGIN": "1"}, "ECERT_DEV_LOGIN"),
        ({"ECERT_PUBLIC_URL": "http://ecert.xinyang.gov.cn"}, "ECERT_PUBLIC_URL"),
        ({"ECERT_REDIS_URL": None}, "ECERT_REDIS_URL"),
        ({"ECERT_TRUSTED_PROXIES": None}, "ECERT_TRUSTED_PROXIES"),
        ({"ECERT_ACCESS_TOKEN_TTL": "3600"}, "ECERT_ACCESS_TOKEN_TTL"),
        ({"ECERT_SIGNING_ALG": "HS256"}, "ECERT_SIGNING_ALG"),
        ({"ECERT_MASTER_KEY": base64.b64encode(b"short").decode()}, "ECERT_MASTER_KEY"),
        ({"ECERT_DATA_KEYS": "one:abc"}, "ECERT_DATA_KEYS"),
    ],
)
def test_production_refuses_unsafe_settings_and_names_them(tmp_path, change, named):
    with pytest.raises(ConfigError, match=named):
        load_settings(env=production(tmp_path, **change))


def test_create_app_refuses_production_with_dev_login(tmp_path, monkeypatch):
    for name, value in production(tmp_path, ECERT_DEV_LOGIN="true").items():
        monkeypatch.setenv(name, value)
    with pytest.raises(ConfigError, match="ECERT_DEV_LOGIN"):
        create_app()


def test_unknown_environment_is_refused(tmp_path):
    with pytest.raises(ConfigError, match="ECERT_ENV"):
        load_settings(env={"ECERT_ENV": "staging", "ECERT_INSTANCE_PATH": str(tmp_path)})


def test_data_keys_are_versioned_and_the_highest_encrypts(tmp_path):
    other = base64.urlsafe_b64encode(b"o" * 32).decode()
    settings = load_settings(env=production(tmp_path, ECERT_DATA_KEYS=f"1:{KEY},2:{other}"))
    assert set(settings["ECERT_DATA_KEYS"]) == {1, 2}
    assert settings["ECERT_DATA_KEYS"][2] == b"o" * 32


def test_the_dev_login_is_opt_in_even_in_development(tmp_path):
    assert load_settings(env={"ECERT_INSTANCE_PATH": str(tmp_path)})["ECERT_DEV_LOGIN"] is False
    enabled = load_settings(env={"ECERT_INSTANCE_PATH": str(tmp_path), "ECERT_DEV_LOGIN": "1"})
    assert enabled["ECERT_DEV_LOGIN"] is True


@pytest.mark.parametrize(("value", "accepted"), [("", 86400), ("60", 60), ("2592000", 2592000), ("59", None),
                                                 ("2592001", None), ("0", None), ("one day", None)])
def test_representation_max_age_defaults_to_a_day_and_is_bounded(tmp_path, value, accepted):
    env = {"ECERT_INSTANCE_PATH": str(tmp_path), "ECERT_REPRESENTATION_MAX_AGE": value}
    if accepted is None:
        with pytest.raises(ConfigError, match="ECERT_REPRESENTATION_MAX_AGE"):
            load_settings(env=env)
    else:
        assert load_settings(env=env)["ECERT_REPRESENTATION_MAX_AGE"] == accepted
