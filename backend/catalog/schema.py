"""Pydantic schema of catalog data files (证照目录): departments and certificate types."""

from __future__ import annotations

from enum import StrEnum
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from backend.kernel.identifiers import validate_type_code, validate_uscc


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class DepartmentLevel(StrEnum):
    PROVINCE = "province"  # 省
    CITY = "city"  # 市
    COUNTY = "county"  # 县/区
    TOWNSHIP = "township"  # 乡镇/街道


class HolderCategory(StrEnum):
    NATURAL_PERSON = "natural_person"  # 自然人
    LEGAL_PERSON = "legal_person"  # 法人和其他组织


class FieldType(StrEnum):
    STRING = "string"
    DATE = "date"
    INTEGER = "integer"
    DECIMAL = "decimal"
    BOOLEAN = "boolean"
    ENUM = "enum"


Sensitivity = Annotated[int, Field(ge=1, le=4)]


class DepartmentDoc(Strict):
    code: str = Field(description="统一社会信用代码 (18 chars)")
    name: str = Field(min_length=2, max_length=100)
    level: DepartmentLevel
    parent: str | None = None
    region_code: str = Field(default="411500", pattern=r"^\d{6}$", description="行政区划代码")

    @field_validator("code", "parent")
    @classmethod
    def _uscc(cls, value: str | None) -> str | None:
        return None if value is None else validate_uscc(value, field="code")


class DepartmentsDoc(Strict):
    departments: list[DepartmentDoc] = Field(min_length=1)


class FaceField(Strict):
    """One field of the certificate face (照面)."""

    name: str = Field(pattern=r"^[a-z][a-z0-9_]{0,39}$")
    label: str = Field(min_length=1, max_length=40, description="Chinese label shown to people")
    type: FieldType
    required: bool = True
    sensitivity: Sensitivity = Field(description="1 public … 4 highly sensitive")
    max_length: int | None = Field(default=None, ge=1, le=4000)
    choices: list[str] | None = None
    mask: Literal["none", "name", "id_number", "partial", "full"] = "none"

    @model_validator(mode="after")
    def _choices_for_enum(self) -> FaceField:
        if (self.type is FieldType.ENUM) != bool(self.choices):
            raise ValueError("choices are required for enum fields and only for them")
        return self


class Validity(Strict):
    """Default validity: a number of years, or None for long-term (长期)."""

    default_years: int | None = Field(default=None, ge=1, le=100)
    long_term_allowed: bool = False


class SharingPolicy(Strict):
    public_fields: list[str] = Field(default_factory=list, description="shown on a basic show code")
    showable_fields: list[str] = Field(default_factory=list, description="shown on a full show code")
    disclosable_fields: list[str] = Field(
        default_factory=list, description="may ever be disclosed to a department by grant"
    )
    max_grant_seconds: int = Field(default=86400, ge=60, le=365 * 86400)
    step_up_required: bool = False


class ObjectionDeadlines(Strict):
    """Time limits for objections (异议) about certificates of the type, in working days from filing."""

    acknowledge_working_days: int = Field(default=1, ge=1, le=30, description="受理时限")
    resolve_working_days: int = Field(default=5, ge=1, le=60, description="办结时限")

    @model_validator(mode="after")
    def _ordered(self) -> ObjectionDeadlines:
        if self.resolve_working_days < self.acknowledge_working_days:
            raise ValueError("resolve_working_days must not be shorter than acknowledge_working_days")
        return self


class CertificateTypeDoc(Strict):
    type_code: str = Field(description="证照类型代码: defining authority USCC + 3-digit sequence")
    name: str = Field(min_length=2, max_length=100)
    defining_authority: str
    issuers: list[str] = Field(min_length=1)
    holder_category: HolderCategory
    classification_level: Annotated[int, Field(ge=1, le=4)]
    validity: Validity
    fields: list[FaceField] = Field(min_length=1)
    sharing: SharingPolicy
    objections: ObjectionDeadlines = Field(default_factory=ObjectionDeadlines)
    description: str = ""

    @field_validator("type_code")
    @classmethod
    def _type_code(cls, value: str) -> str:
        return validate_type_code(value, field="type_code")

    @field_validator("defining_authority")
    @classmethod
    def _authority(cls, value: str) -> str:
        return validate_uscc(value, field="defining_authority")

    @field_validator("issuers")
    @classmethod
    def _issuers(cls, value: list[str]) -> list[str]:
        return [validate_uscc(v, field="issuers") for v in value]

    @model_validator(mode="after")
    def _consistent(self) -> CertificateTypeDoc:
        if not self.type_code.startswith(self.defining_authority):
            raise ValueError("type_code must start with the defining authority's code")
        names = [f.name for f in self.fields]
        if len(set(names)) != len(names):
            raise ValueError("field names must be unique")
        by_name = {f.name: f for f in self.fields}
        sharing = self.sharing
        for group in ("public_fields", "showable_fields", "disclosable_fields"):
            unknown = sorted(set(getattr(sharing, group)) - set(by_name))
            if unknown:
                raise ValueError(f"sharing.{group} names unknown fields: {unknown}")
        never = [n for n in sharing.disclosable_fields if by_name[n].sensitivity >= 4]
        if never:
            raise ValueError(f"level-4 fields can never be disclosed by grant: {never}")
        return self
