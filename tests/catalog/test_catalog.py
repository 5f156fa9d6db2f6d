"""Catalog (证照目录): loading is validated, idempotent and versioned; departments' systems can read it."""

from __future__ import annotations

import json
import shutil

import pytest
import yaml
from sqlalchemy import func, select
from stdnum.cn import uscc

from backend.catalog.schema import CertificateTypeDoc
from backend.extensions import db
from backend.models import AuditEvent, CertificateType, CertificateTypeVersion, Department
from tests.conftest import DEMO_CATALOG, SAMR


def count(model):
    return db.session.scalar(select(func.count()).select_from(model))


@pytest.fixture
def catalog_copy(tmp_path):
    target = tmp_path / "catalog"
    shutil.copytree(DEMO_CATALOG, target)
    return target


def test_demo_catalog_has_at_least_six_types_from_five_departments(app, runner):
    result = runner.invoke(args=["catalog", "load", str(DEMO_CATALOG)])
    assert result.exit_code == 0, result.output
    with app.app_context():
        types = db.session.scalars(select(CertificateType)).all()
        assert len(types) >= 6
        assert len({t.defining_department_id for t in types}) >= 5
        for department in db.session.scalars(select(Department)):
            assert uscc.is_valid(department.code), department.code
        for ctype in types:
            assert len(ctype.type_code) == 21
            assert ctype.type_code.startswith(ctype.defining_department.code)


def test_loading_the_same_catalog_twice_changes_nothing(app, runner):
    runner.invoke(args=["catalog", "load", str(DEMO_CATALOG)])
    with app.app_context():
        events_before, versions_before = count(AuditEvent), count(CertificateTypeVersion)
    result = runner.invoke(args=["catalog", "load", str(DEMO_CATALOG)])
    assert result.exit_code == 0
    assert "0 created, 0 updated; types: 0 created, 0 new versions" in result.output
    with app.app_context():
        assert count(AuditEvent) == events_before
        assert count(CertificateTypeVersion) == versions_before


def test_a_changed_type_gets_a_new_catalog_version_and_keeps_the_old_one(app, runner, catalog_copy):
    runner.invoke(args=["catalog", "load", str(catalog_copy)])
    path = catalog_copy / "types" / "business_license.yaml"
    document = yaml.safe_load(path.read_text(encoding="utf-8"))
    document["fields"][0]["label"] = "企业名称"
    path.write_text(yaml.safe_dump(document, allow_unicode=True), encoding="utf-8")

    result = runner.invoke(args=["catalog", "load", str(catalog_copy)])
    assert result.exit_code == 0, result.output
    assert "1 new versions" in result.output
    with app.app_context():
        ctype = db.session.scalar(select(CertificateType).where(CertificateType.type_code == document["type_code"]))
        assert ctype.catalog_version == 2
        assert [v.version for v in ctype.versions] == [1, 2]
        assert ctype.versions[0].definition["fields"][0]["label"] != "企业名称"
        assert ctype.definition["fields"][0]["label"] == "企业名称"


def test_an_invalid_type_file_is_refused_and_nothing_is_loaded(app, runner, catalog_copy):
    path = catalog_copy / "types" / "marriage_certificate.yaml"
    document = yaml.safe_load(path.read_text(encoding="utf-8"))
    code = document["type_code"]
    document["type_code"] = code[:17] + ("0" if code[17] != "0" else "1") + code[18:]  # wrong check character
    path.write_text(yaml.safe_dump(document, allow_unicode=True), encoding="utf-8")

    result = runner.invoke(args=["catalog", "load", str(catalog_copy)])
    assert result.exit_code != 0
    assert "marriage_certificate.yaml" in result.output
    with app.app_context():
        assert count(Department) == 0
        assert count(CertificateType) == 0


def test_a_level_four_field_can_never_be_disclosable():
    document = yaml.safe_load((DEMO_CATALOG / "types" / "disability_certificate.yaml").read_text(encoding="utf-8"))
    level_four = next(f["name"] for f in document["fields"] if f["sensitivity"] == 4)
    document["sharing"]["disclosable_fields"].append(level_four)
    with pytest.raises(ValueError, match="level-4"):
        CertificateTypeDoc.model_validate(document)


def test_unknown_keys_in_a_type_file_are_refused():
    document = yaml.safe_load((DEMO_CATALOG / "types" / "business_license.yaml").read_text(encoding="utf-8"))
    document["colour"] = "red"
    with pytest.raises(ValueError, match="colour"):
        CertificateTypeDoc.model_validate(document)


def test_catalog_list_json_prints_departments_and_their_issuable_types(runner, catalog):
    result = runner.invoke(args=["catalog", "list", "--json"])
    assert result.exit_code == 0
    listing = json.loads(result.output)
    by_code = {d["code"]: d for d in listing["departments"]}
    assert by_code[SAMR]["name"] == "信阳市市场监督管理局"
    assert {t["name"] for t in by_code[SAMR]["types"]} >= {"营业执照", "食品经营许可证"}


def test_departments_systems_read_the_catalog_with_labels_and_policies(dept_client):
    response = dept_client.http.get("/gov/v1/catalog/types", headers=dept_client.headers())
    assert response.status_code == 200
    items = {item["name"]: item for item in response.get_json()["items"]}
    licence = items["营业执照"]
    assert licence["defining_authority"]["code"] == SAMR
    assert licence["holder_category"] == "legal_person"
    assert all({"name", "label", "type", "required", "sensitivity"} <= set(f) for f in licence["fields"])
    assert all(1 <= f["sensitivity"] <= 4 for item in items.values() for f in item["fields"])
    sensitive = {f["name"] for item in items.values() for f in item["fields"] if f["sensitivity"] == 4}
    assert not sensitive & {n for item in items.values() for n in item["sharing"]["disclosable_fields"]}
