"""Factories for valid test data: holder codes with correct check characters and certificate bodies per type."""

from __future__ import annotations

import copy
import itertools
from typing import Any

from stdnum.cn import ric, uscc

BUSINESS_LICENCE = "11411500MB1C629765001"  # 营业执照, 市场监督管理局 (and 浉河区 bureau)
FOOD_LICENCE = "11411500MB1C629765002"  # 食品经营许可证, 市场监督管理局, 5 years
MARRIAGE = "114115000059925712001"  # 结婚证, 民政局, level 3
DISABILITY = "13411500005993726Q001"  # 残疾人证, 残疾人联合会, level 4, 10 years

_counter = itertools.count(1)


def resident_id(birth: str = "19900101", seq: int | None = None) -> str:
    """A valid 18-digit 公民身份号码: 浉河区 (411502, since 1998) or the older 信阳市 code (413001)."""
    region = "411502" if birth >= "1998" else "413001"
    body = f"{region}{birth}{(seq if seq is not None else next(_counter)) % 1000:03d}"
    return body + ric.calc_check_digit(body + "0")  # stdnum expects a placeholder check digit


def company_code(seq: int | None = None) -> str:
    """A syntactically valid 统一社会信用代码 of a company (registration authority 9, category 1)."""
    n = seq if seq is not None else next(_counter)
    org = f"{n:08d}"
    weights = (3, 7, 9, 10, 5, 8, 4, 2)
    check = 11 - sum(int(c) * w for c, w in zip(org, weights, strict=True)) % 11
    org += "0123456789X0"[check] if check != 11 else "0"
    body = "91411502" + org
    return body + uscc.calc_check_digit(body)


BODIES: dict[str, dict[str, Any]] = {
    BUSINESS_LICENCE: {
        "type_code": BUSINESS_LICENCE,
        "holder": {"name": "信阳毛尖茶业有限公司", "code_type": "001"},
        "issued_on": "2026-03-01", "valid_from": "2026-03-01", "valid_until": None,
        "fields": {"company_name": "信阳毛尖茶业有限公司", "entity_type": "有限责任公司（自然人投资或控股）",
                   "legal_representative": "王建国", "registered_capital": "500万元人民币",
                   "established_on": "2018-05-12", "address": "河南省信阳市浉河区茶韵路 18 号",
                   "business_scope": "茶叶种植、加工、销售"},
    },
    FOOD_LICENCE: {
        "type_code": FOOD_LICENCE,
        "holder": {"name": "信阳老街饭店有限公司", "code_type": "001"},
        "issued_on": "2026-01-10", "valid_from": "2026-01-10",
        "fields": {"operator_name": "信阳老街饭店有限公司", "legal_representative": "李红",
                   "address": "河南省信阳市浉河区民权路 6 号", "business_premises": "河南省信阳市浉河区民权路 6 号一层",
                   "business_format": "餐饮服务经营者", "business_items": "热食类食品制售", "online_operation": True,
                   "supervising_agency": "信阳市浉河区市场监督管理局", "supervisor": "赵强",
                   "complaint_hotline": "12315"},
    },
    MARRIAGE: {
        "type_code": MARRIAGE,
        "holder": {"name": "张伟", "code_type": "111"},
        "issued_on": "2025-05-20", "valid_from": "2025-05-20", "valid_until": None,
        "fields": {"holder_name": "张伟", "registered_on": "2025-05-20", "party_a_name": "张伟",
                   "party_a_gender": "男", "party_a_nationality": "中国", "party_a_birth_date": "1990-01-01",
                   "party_b_name": "李娜", "party_b_gender": "女", "party_b_nationality": "中国",
                   "party_b_birth_date": "1992-03-08", "registration_office": "信阳市浉河区民政局婚姻登记处"},
    },
    DISABILITY: {
        "type_code": DISABILITY,
        "holder": {"name": "刘芳", "code_type": "111"},
        "issued_on": "2024-06-01", "valid_from": "2024-06-01",
        "fields": {"holder_name": "刘芳", "gender": "女", "birth_date": "1985-07-15", "disability_category": "肢体",
                   "disability_grade": "三级", "address": "河南省信阳市平桥区中山路 9 号"},
    },
}


def certificate_body(type_code: str = BUSINESS_LICENCE, **overrides: Any) -> dict[str, Any]:
    """A valid POST /gov/v1/certificates body with a fresh certificate number and holder code."""
    body = copy.deepcopy(BODIES[type_code])
    n = next(_counter)
    body["certificate_number"] = f"XY{n:010d}"
    holder = body["holder"]
    if holder["code_type"] == "001":
        holder["code"] = company_code(n)
        body["fields"]["uscc"] = holder["code"]
    else:
        holder["code"] = resident_id(seq=n)
    if type_code == MARRIAGE:
        body["fields"]["certificate_no"] = body["certificate_number"]
        body["fields"]["party_a_id_number"] = holder["code"]
        body["fields"]["party_b_id_number"] = resident_id("19920308", n + 500)
    if type_code == DISABILITY:
        body["fields"]["id_number"] = holder["code"]
    for key, value in overrides.items():
        if key == "fields":
            body["fields"].update(value)
        elif key == "holder":
            body["holder"].update(value)
        else:
            body[key] = value
    return body
