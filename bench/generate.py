"""Scale data set (not a test): N valid certificates over the demo catalog, as batch import files (JSON Lines).

Certificates are spread evenly over the demo catalog's (department, type) pairs and over about N/5 holders — companies
with valid 统一社会信用代码 for the legal-person types, citizens with valid 公民身份号码 for the natural-person types —
so that each holder has about five certificates, of several types and departments. Each file holds one department's
rows (`flask --app wsgi certificates import FILE --dept CODE`, or `POST /gov/v1/certificates/batches`), at most
`--file-rows` of them. Everything is derived from the row number: the same arguments give the same files.
Usage: `python bench/generate.py 1000000 /tmp/scale` (see bench/README.md).
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import date, timedelta
from pathlib import Path
from typing import Any

from stdnum.cn import ric, uscc

BENCH = Path(__file__).resolve().parent
sys.path.insert(0, str(BENCH.parent))  # run as a script, only bench/ is on sys.path

from backend.kernel.holder_codes import validate_holder_code  # noqa: E402

BUSINESS_LICENCE, FOOD_LICENCE = "11411500MB1C629765001", "11411500MB1C629765002"
MARKET, SHIHE_MARKET = "11411500MB1C629765", "11411502MB1C74539N"
# (issuing department, certificate type) of the demo catalog (catalog/xinyang): 营业执照 has two issuers.
PAIRS = [
    (MARKET, BUSINESS_LICENCE),
    (MARKET, FOOD_LICENCE),
    (SHIHE_MARKET, BUSINESS_LICENCE),
    ("114115000059925712", "114115000059925712001"),  # 结婚证, 民政局
    ("11411500MB1C631860", "11411500MB1C631860001"),  # 不动产权证书, 自然资源和规划局
    ("11411500MB1C64066F", "11411500MB1C64066F001"),  # 出生医学证明, 卫生健康委员会
    ("13411500005993726Q", "13411500005993726Q001"),  # 残疾人证, 残疾人联合会
    ("11411500005991210G", "11411500005991210G001"),  # 居民户口簿, 公安局
]
LEGAL_PERSON_TYPES = {BUSINESS_LICENCE, FOOD_LICENCE}
DEPARTMENTS = list(dict.fromkeys(department for department, _ in PAIRS))
FILE_ROWS = 100_000  # ECERT_MAX_BATCH_ROWS: the most one batch may hold

SURNAMES = "王李张刘陈杨黄赵吴周徐孙马朱胡郭何高林罗郑梁谢宋唐许韩冯邓曹彭曾肖田董袁潘于蒋蔡余杜叶程苏魏吕丁任沈"
GIVEN = "伟芳娜秀英敏静丽强磊军洋勇艳杰娟涛明超秀兰霞平刚桂英华建国红梅玉兰志强海燕文辉晓东春雨"
TRADES = ["茶业", "食品", "餐饮", "商贸", "建材", "农业", "物流", "科技", "电子", "纺织", "医药", "酒店"]
PLACES = ["浉河区", "平桥区", "罗山县", "光山县", "新县", "商城县", "固始县", "潢川县", "淮滨县", "息县"]
STREETS = ["茶韵路", "民权路", "中山路", "胜利路", "新华路", "东方红大道", "北京大街", "申城大道"]


def _name(n: int) -> str:
    return SURNAMES[n % len(SURNAMES)] + GIVEN[(n // len(SURNAMES)) % len(GIVEN)] \
        + ("" if n % 3 else GIVEN[(n // 7) % len(GIVEN)])


def _address(n: int) -> str:
    return f"河南省信阳市{PLACES[n % len(PLACES)]}{STREETS[(n // 10) % len(STREETS)]} {n % 997 + 1} 号"


@dataclass(frozen=True)
class Company:
    code: str
    name: str
    representative: str
    established_on: date


@dataclass(frozen=True)
class Person:
    code: str
    name: str
    birth: date
    female: bool


BIRTH_START = date(1950, 1, 1)
BIRTH_DAYS = (date(2005, 12, 31) - BIRTH_START).days + 1


def company(n: int) -> Company:
    """Company n: a valid 统一社会信用代码 (registered in 平桥区, organisation code from n with its GB 11714 check
    character), never one of the test factories' (浉河区)."""
    org = f"{20_000_000 + n:08d}"
    check = 11 - sum(int(c) * w for c, w in zip(org, (3, 7, 9, 10, 5, 8, 4, 2), strict=True)) % 11
    org += "0123456789X0"[check] if check != 11 else "0"
    body = "91411503" + org
    name = f"信阳{PLACES[n % len(PLACES)].rstrip('区县')}{TRADES[n % len(TRADES)]}第{n}有限公司"
    return Company(body + uscc.calc_check_digit(body), name, _name(n * 7 + 3), date(2000, 1, 1) + timedelta(n % 8000))


def person(n: int) -> Person:
    """Citizen n: a valid 公民身份号码, unique for n < 20 million: birth date and sequence from n, region 信阳县
    (413021, before 1998) or 平桥区 (411503, since), never the test factories' regions."""
    birth = BIRTH_START + timedelta(days=n % BIRTH_DAYS)
    sequence = (n // BIRTH_DAYS) % 1000
    body = f"{'411503' if birth.year >= 1998 else '413021'}{birth:%Y%m%d}{sequence:03d}"
    code = body + ric.calc_check_digit(body + "0")  # stdnum wants a placeholder check digit
    female = int(code[16]) % 2 == 0
    return Person(code, _name(n), birth, female)


class Holders:
    """About `total` holders in two pools, in the proportion of the certificates that need them (the files go round
    the departments, two of the seven issuing legal-person types): certificate k of a
    pool goes to holder k mod the pool's size, so each has about five, spread over the data set. Each holder's code
    is checked once with the platform's own validator."""

    def __init__(self, total: int) -> None:
        legal = {department for department, type_code in PAIRS if type_code in LEGAL_PERSON_TYPES}
        legal_share = len(legal) / len(DEPARTMENTS)  # the files go round the departments
        self.companies = max(1, round(total * legal_share))
        self.people = max(1, total - self.companies)
        self._counts = {True: 0, False: 0}
        self._checked: set[str] = set()

    def next(self, legal: bool) -> Company | Person:
        k = self._counts[legal]
        self._counts[legal] += 1
        holder = company(k % self.companies) if legal else person(k % self.people)
        if holder.code not in self._checked:
            validate_holder_code("001" if legal else "111", holder.code)  # raises if the generator is wrong
            self._checked.add(holder.code)
        return holder


def _day(n: int, start: date = date(2010, 1, 1), days: int = 5800) -> date:
    return start + timedelta(days=n % days)


def _business(n: int, holder: Company, issued: date) -> dict[str, Any]:
    return {"holder": {"name": holder.name, "code_type": "001", "code": holder.code}, "valid_until": None, "fields": {
        "company_name": holder.name, "uscc": holder.code, "entity_type": "有限责任公司（自然人投资或控股）",
        "legal_representative": holder.representative, "registered_capital": f"{n % 900 + 100}万元人民币",
        "established_on": holder.established_on.isoformat(), "address": _address(n),
        "business_scope": f"{TRADES[n % len(TRADES)]}产品的生产、加工、销售"}}


def _food(n: int, holder: Company, issued: date) -> dict[str, Any]:
    return {"holder": {"name": holder.name, "code_type": "001", "code": holder.code}, "fields": {
        "operator_name": holder.name, "uscc": holder.code, "legal_representative": holder.representative,
        "address": _address(n), "business_premises": _address(n) + "一层",
        "business_format": ("食品销售经营者", "餐饮服务经营者", "单位食堂")[n % 3], "business_items": "热食类食品制售",
        "online_operation": n % 2 == 0, "supervising_agency": f"信阳市{PLACES[n % len(PLACES)]}市场监督管理局",
        "supervisor": _name(n + 11), "complaint_hotline": "12315"}}


def _marriage(n: int, holder: Person, issued: date) -> dict[str, Any]:
    spouse = person(n * 31 + 17)
    return {"holder": _citizen(holder), "valid_until": None, "fields": {
        "holder_name": holder.name, "registered_on": issued.isoformat(), "certificate_no": f"J4115{n:011d}",
        "party_a_name": holder.name, "party_a_gender": "女" if holder.female else "男", "party_a_nationality": "中国",
        "party_a_birth_date": holder.birth.isoformat(), "party_a_id_number": holder.code,
        "party_b_name": spouse.name, "party_b_gender": "男" if holder.female else "女", "party_b_nationality": "中国",
        "party_b_birth_date": spouse.birth.isoformat(), "party_b_id_number": spouse.code,
        "registration_office": f"信阳市{PLACES[n % len(PLACES)]}民政局婚姻登记处"}}


def _property(n: int, holder: Person, issued: date) -> dict[str, Any]:
    return {"holder": _citizen(holder), "valid_until": None, "fields": {
        "right_holder": holder.name, "right_holder_id_number": holder.code, "co_ownership": "单独所有",
        "location": _address(n) + f" {n % 30 + 1} 幢 {n % 200 + 101} 室", "unit_number": f"411503{n:016d}F0001",
        "right_type": "国有建设用地使用权/房屋（构筑物）所有权", "right_nature": "出让/商品房",
        "usage": "城镇住宅用地/住宅", "land_area": f"{n % 90 + 20}.{n % 100:02d}",
        "building_area": f"{n % 150 + 50}.{n % 97:02d}",
        "land_use_start": "2008-01-01", "land_use_end": "2078-01-01"}}


def _birth(n: int, holder: Person, issued: date) -> dict[str, Any]:
    mother = person(n * 29 + 5)
    return {"holder": _citizen(holder), "issued_on": max(issued, holder.birth).isoformat(),
            "valid_from": max(issued, holder.birth).isoformat(), "valid_until": None, "fields": {
                "newborn_name": holder.name, "gender": "女" if holder.female else "男",
                "birth_date": holder.birth.isoformat(), "birth_time": f"{n % 24:02d}:{n % 60:02d}",
                "birth_place": f"河南省信阳市{PLACES[n % len(PLACES)]}", "birth_place_category": "医院",
                "gestational_weeks": 37 + n % 5, "birth_weight_g": 2800 + n % 1200, "birth_length_cm": "50.5",
                "mother_name": mother.name, "mother_age": 22 + n % 18, "mother_nationality": "中国",
                "mother_ethnicity": "汉族", "mother_id_number": mother.code,
                "delivery_institution": "信阳市中心医院"}}


def _disability(n: int, holder: Person, issued: date) -> dict[str, Any]:
    return {"holder": _citizen(holder), "fields": {  # valid_until: the type's default (10 years)
        "holder_name": holder.name, "gender": "女" if holder.female else "男", "birth_date": holder.birth.isoformat(),
        "id_number": holder.code, "disability_category": ("视力", "听力", "言语", "肢体", "智力", "精神")[n % 6],
        "disability_grade": ("一级", "二级", "三级", "四级")[n % 4], "address": _address(n)}}


def _household(n: int, holder: Person, issued: date) -> dict[str, Any]:
    return {"holder": _citizen(holder), "valid_until": None, "fields": {
        "household_type": "家庭户", "household_number": f"{n:09d}", "head_of_household": holder.name,
        "household_address": _address(n), "holder_name": holder.name, "relationship_to_head": "户主",
        "gender": "女" if holder.female else "男", "birthplace": "河南省信阳市", "ethnicity": "汉族",
        "native_place": "河南省信阳市", "birth_date": holder.birth.isoformat(), "id_number": holder.code,
        "registered_on": max(issued, holder.birth).isoformat(), "registration_authority": "信阳市公安局"}}


def _citizen(holder: Person) -> dict[str, str]:
    return {"name": holder.name, "code_type": "111", "code": holder.code}


Body = Callable[[int, Any, date], dict[str, Any]]
BODIES: dict[str, Body] = {
    BUSINESS_LICENCE: _business, FOOD_LICENCE: _food, "114115000059925712001": _marriage,
    "11411500MB1C631860001": _property, "11411500MB1C64066F001": _birth, "13411500005993726Q001": _disability,
    "11411500005991210G001": _household,
}


def row(n: int, type_code: str, holders: Holders) -> dict[str, Any]:
    """Certificate n of `type_code` (its number unique within the type), as one line of a batch file."""
    holder = holders.next(type_code in LEGAL_PERSON_TYPES)
    issued = _day(n * 13)
    body = {"type_code": type_code, "certificate_number": f"SC{type_code[-5:]}{n:010d}",
            "issued_on": issued.isoformat(), "valid_from": issued.isoformat()}
    body.update(BODIES[type_code](n, holder, issued))
    return body


@dataclass(frozen=True)
class BatchFile:
    path: Path
    department: str
    rows: int


def file_sizes(total: int, first: int, file_rows: int) -> list[int]:
    """How many rows each file holds: `first` (if any) and what completes `file_rows` with it, then `file_rows` per
    file, the last one what is left: files end on multiples of `file_rows` (the windows of bench/scale.py)."""
    sizes = [min(first, total)] if 0 < first < file_rows else []
    if sizes and total > first:
        sizes.append(min(file_rows - first, total - first))
    rest = total - sum(sizes)
    return sizes + [file_rows] * (rest // file_rows) + ([rest % file_rows] if rest % file_rows else [])


def files(total: int, out: Path, *, holders: int | None = None, first: int = 0, file_rows: int = FILE_ROWS,
          departments: list[str] | None = None) -> Iterator[BatchFile]:
    """Write the files one after the other (each is yielded once written, so an import can start on it). File i
    belongs to `departments[i]` (default: department i mod 7, in the order of PAIRS) and cycles over that
    department's types."""
    out.mkdir(parents=True, exist_ok=True)
    pool = Holders(holders if holders is not None else max(1, total // 5))
    numbers = dict.fromkeys(BODIES, 0)
    for i, size in enumerate(file_sizes(total, first, file_rows)):
        department = departments[i] if departments else DEPARTMENTS[i % len(DEPARTMENTS)]
        types = [type_code for code, type_code in PAIRS if code == department]
        path = out / f"{i + 1:03d}-{department}.jsonl"
        with path.open("w", encoding="utf-8") as handle:
            for k in range(size):
                type_code = types[k % len(types)]
                numbers[type_code] += 1
                handle.write(json.dumps(row(numbers[type_code], type_code, pool), ensure_ascii=False) + "\n")
        yield BatchFile(path, department, size)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("certificates", type=int, help="how many certificates (rows) in all")
    parser.add_argument("out", type=Path, help="directory for the files (NNN-<department USCC>.jsonl)")
    parser.add_argument("--holders", type=int, help="holders (default certificates / 5)")
    parser.add_argument("--file-rows", type=int, default=FILE_ROWS, help=f"rows per file (default {FILE_ROWS})")
    parser.add_argument("--first", type=int, default=0, help="rows of a first, smaller file (default none)")
    args = parser.parse_args()
    for written in files(args.certificates, args.out, holders=args.holders, first=args.first,
                         file_rows=args.file_rows):
        print(f"{written.path}\t{written.department}\t{written.rows}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
