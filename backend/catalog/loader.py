"""Catalog (证照目录): load departments and certificate types from data files, list them."""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

import yaml
from pydantic import ValidationError
from sqlalchemy import select
from sqlalchemy.orm import Session, selectinload

from backend.audit.chain import record_event
from backend.catalog.schema import CertificateTypeDoc, DepartmentsDoc
from backend.crypto.canonical import canonical_json
from backend.errors import DomainError, NotFound
from backend.kernel.actors import Actor
from backend.keys.keystore import PURPOSE_CERTIFICATE, KeyStore
from backend.models import CertificateType, CertificateTypeVersion, Department


class CatalogError(DomainError):
    code = "catalog_invalid"
    status = 422
    message = "证照目录数据无效"


@dataclass
class LoadReport:
    departments_created: list[str] = field(default_factory=list)
    departments_updated: list[str] = field(default_factory=list)
    types_created: list[str] = field(default_factory=list)
    types_updated: list[str] = field(default_factory=list)
    unchanged: int = 0


def _read_document(path: Path) -> Any:
    text = path.read_text(encoding="utf-8")
    try:
        return json.loads(text) if path.suffix == ".json" else yaml.safe_load(text)
    except (json.JSONDecodeError, yaml.YAMLError) as exc:
        raise CatalogError(f"{path.name}: 无法解析：{exc}") from exc


def _validate(model: Any, path: Path) -> Any:
    try:
        return model.model_validate(_read_document(path))
    except ValidationError as exc:
        problems = "; ".join(f"{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in exc.errors())
        raise CatalogError(f"{path.name}: {problems}", details={"file": path.name}) from exc
    except DomainError as exc:
        raise CatalogError(f"{path.name}: {exc.message}", details={"file": path.name}) from exc


def read_catalog(root: Path) -> tuple[DepartmentsDoc, list[CertificateTypeDoc]]:
    """Read and validate a catalog directory (departments.yaml + types/*.yaml|json) without touching the DB."""
    dept_file = next((root / name for name in ("departments.yaml", "departments.yml", "departments.json")
                      if (root / name).exists()), None)
    if dept_file is None:
        raise CatalogError(f"{root} 中没有 departments.yaml")
    departments: DepartmentsDoc = _validate(DepartmentsDoc, dept_file)
    type_files = sorted(p for p in (root / "types").glob("*") if p.suffix in {".yaml", ".yml", ".json"})
    types = [_validate(CertificateTypeDoc, p) for p in type_files]
    codes = [t.type_code for t in types]
    duplicates = sorted({c for c in codes if codes.count(c) > 1})
    if duplicates:
        raise CatalogError(f"证照类型代码重复：{', '.join(duplicates)}")
    return departments, types


def _content_hash(document: Any) -> str:
    return hashlib.sha256(canonical_json(document)).hexdigest()


def load_catalog(
    session: Session, root: Path, keys: KeyStore, *, actor: Actor, now: datetime, signing_alg: str = "ES256"
) -> LoadReport:
    """Upsert departments and types. Idempotent; a changed type gets a new catalog version."""
    departments_doc, type_docs = read_catalog(root)
    report = LoadReport()
    existing = {d.code: d for d in session.scalars(select(Department))}
    known_codes = set(existing) | {d.code for d in departments_doc.departments}

    for doc in departments_doc.departments:
        if doc.parent and doc.parent not in known_codes:
            raise CatalogError(f"部门 {doc.code} 的上级部门 {doc.parent} 不存在")
        dept = existing.get(doc.code)
        values = {"name": doc.name, "level": doc.level.value, "region_code": doc.region_code}
        if dept is None:
            dept = Department(code=doc.code, created_at=now, updated_at=now, **values)
            session.add(dept)
            existing[doc.code] = dept
            report.departments_created.append(doc.code)
            record_event(session, actor=actor, action="catalog.department_created", now=now,
                         object_type="department", object_id=doc.code, details={"name": doc.name})
        elif any(getattr(dept, k) != v for k, v in values.items()):
            for k, v in values.items():
                setattr(dept, k, v)
            dept.updated_at = now
            report.departments_updated.append(doc.code)
            record_event(session, actor=actor, action="catalog.department_updated", now=now,
                         object_type="department", object_id=doc.code, details=values)
        else:
            report.unchanged += 1
    session.flush()
    for doc in departments_doc.departments:
        parent = existing[doc.parent] if doc.parent else None
        if existing[doc.code].parent_id != (parent.id if parent else None):
            existing[doc.code].parent = parent

    for code, dept in existing.items():
        if code in report.departments_created:
            keys.create_key(PURPOSE_CERTIFICATE, dept, signing_alg, now)

    current = {t.type_code: t for t in session.scalars(select(CertificateType))}
    for type_doc in type_docs:
        missing = [c for c in [type_doc.defining_authority, *type_doc.issuers] if c not in existing]
        if missing:
            raise CatalogError(f"证照类型 {type_doc.type_code} 引用了不存在的部门：{', '.join(missing)}")
        definition = type_doc.model_dump(mode="json")
        digest = _content_hash(definition)
        ctype = current.get(type_doc.type_code)
        issuers = [existing[c] for c in type_doc.issuers]
        if ctype is None:
            ctype = CertificateType(type_code=type_doc.type_code, catalog_version=1, created_at=now)
            session.add(ctype)
            report.types_created.append(type_doc.type_code)
            action = "catalog.type_created"
        elif ctype.content_hash != digest:
            ctype.catalog_version += 1
            report.types_updated.append(type_doc.type_code)
            action = "catalog.type_updated"
        else:
            report.unchanged += 1
            continue
        ctype.name = type_doc.name
        ctype.defining_department = existing[type_doc.defining_authority]
        ctype.holder_category = type_doc.holder_category.value
        ctype.classification_level = type_doc.classification_level
        ctype.definition = definition
        ctype.content_hash = digest
        ctype.updated_at = now
        ctype.issuers = issuers
        session.add(CertificateTypeVersion(certificate_type=ctype, version=ctype.catalog_version,
                                           content_hash=digest, definition=definition, created_at=now))
        record_event(session, actor=actor, action=action, now=now, object_type="certificate_type",
                     object_id=type_doc.type_code, details={"version": ctype.catalog_version, "hash": digest})
    session.flush()
    return report


def list_types(session: Session) -> list[CertificateType]:
    stmt = (select(CertificateType).options(selectinload(CertificateType.issuers),
                                            selectinload(CertificateType.defining_department))
            .order_by(CertificateType.type_code))
    return list(session.scalars(stmt))


def list_departments(session: Session) -> list[Department]:
    stmt = select(Department).options(selectinload(Department.issuable_types)).order_by(Department.code)
    return list(session.scalars(stmt))


def get_department(session: Session, code: str) -> Department:
    dept = session.scalar(select(Department).where(Department.code == code))
    if dept is None:
        raise NotFound(f"部门 {code} 不存在", code="department_not_found")
    return dept
