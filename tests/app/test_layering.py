"""The arrows of DESIGN §2 point one way: faces → business areas → keys, crypto, kernel, core, models.

Read from the source with `ast` (no import-linter needed). Known debts are listed in ALLOWED with the reason;
the next restructuring step removes them, and a new entry needs a reason as good.
"""

from __future__ import annotations

import ast
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

from backend.config import PROJECT_ROOT

FACES = frozenset({"dept_api", "miniapp_api", "web", "cli", "jobs"})
AREAS = frozenset(
    {"catalog", "issuance", "imports", "wallet", "sharing", "objections", "identity", "notifications", "audit"})
BELOW = frozenset({"keys", "crypto", "kernel", "core", "models"})
# Between the layers: `auth` (route decorators, used by faces only), `adapters` (external services, used by
# areas), `schemas` (API models for the faces), and the app's own modules (app, config, extensions, errors).
ABOVE_AREAS = FACES | {"auth", "app", "schemas"}
PURE = frozenset({"crypto", "kernel"})
REQUEST_GLOBALS = frozenset({"request", "g", "session"})

# (importing module, imported part): debts that need a real code change, not a move. Keep this list short.
ALLOWED: frozenset[tuple[str, str]] = frozenset({
    # The CLI and the API faces start jobs in process (the development runner, delivery after the response);
    # a job launcher interface owned by `jobs` and handed to the faces by the app would remove these.
    ("backend.cli.jobs", "jobs"),
    ("backend.dept_api.batches", "jobs"),
    ("miniapp_api.access_requests", "jobs"),
    # The request context builds the evidence storage and the working-day calendar of the objections area;
    # they belong in core (storage, calendar) with objections only using them.
    ("backend.core.context", "objections"),
    # The edge audits refused attempts and asks auth whether a route is allowed before the view runs.
    ("backend.core.edge", "audit"),
    ("backend.core.edge", "auth"),
    # Re-encrypting rows under the current data key is a verb over certificates, holders and objections that
    # audits itself; it belongs in an area (or audit below keys) rather than in keys.
    ("backend.keys.data_keys", "audit"),
})


@dataclass(frozen=True)
class Import:
    importer: str  # dotted module name
    target: str  # dotted module (or package) name imported
    names: tuple[str, ...]  # names imported from it (`from target import names`)


def part_of(module: str) -> str:
    """The part of the house a module is in: `backend.sharing.grants` → `sharing`, `miniapp_api.x` → `miniapp_api`."""
    pieces = module.split(".")
    if pieces[0] == "miniapp_api":
        return "miniapp_api"
    return pieces[1] if len(pieces) > 1 else pieces[0]


def module_name(path: Path) -> str:
    dotted = ".".join(path.relative_to(PROJECT_ROOT).with_suffix("").parts)
    return dotted.removesuffix(".__init__")


def source_files() -> Iterator[Path]:
    for top in ("backend", "miniapp_api"):
        yield from sorted((PROJECT_ROOT / top).rglob("*.py"))


def imports_of(path: Path) -> Iterator[Import]:
    importer = module_name(path)
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"), str(path))):
        if isinstance(node, ast.Import):
            for alias in node.names:
                yield Import(importer, alias.name, ())
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names = tuple(alias.name for alias in node.names)
            if node.module == "backend":  # `from backend import cli` imports the package backend.cli
                for name in names:
                    yield Import(importer, f"backend.{name}", ())
            else:
                yield Import(importer, node.module, names)


def all_imports() -> list[Import]:
    return [imp for path in source_files() for imp in imports_of(path)]


def project_imports() -> list[tuple[str, str, str]]:
    """(importer, its part, the imported part) for every import of backend or miniapp_api code."""
    edges = []
    for imp in all_imports():
        if imp.target.split(".")[0] in {"backend", "miniapp_api"} and imp.target != "backend":
            edges.append((imp.importer, part_of(imp.importer), part_of(imp.target)))
    return edges


RULES: dict[str, Callable[[str, str], bool]] = {
    "area_imports_face": lambda source, target: source in AREAS and target in ABOVE_AREAS,
    "below_imports_above": lambda source, target: source in BELOW and target in AREAS | ABOVE_AREAS,
    "face_imports_face": lambda source, target: source in FACES and target in FACES,
    "pure_imports_models": lambda source, target: source in PURE and target == "models",
}


def violations(rule: str) -> set[tuple[str, str]]:
    """(importing module, imported part) pairs breaking `rule`, less the known debts."""
    wrong_way = RULES[rule]
    found = {(importer, target) for importer, source, target in project_imports()
             if source != target and wrong_way(source, target)}
    return found - ALLOWED


def test_the_parts_named_here_are_the_packages_on_disk():
    on_disk = {p.name for p in (PROJECT_ROOT / "backend").iterdir() if (p / "__init__.py").exists()}
    assert (FACES - {"miniapp_api"}) | AREAS | BELOW | {"auth", "adapters"} == on_disk
    assert not (PROJECT_ROOT / "backend" / "services").exists()
    assert not (PROJECT_ROOT / "backend" / "security").exists()


def test_no_business_area_imports_a_face():
    assert violations("area_imports_face") == set()


def test_keys_crypto_kernel_core_and_models_import_no_area_and_no_face():
    assert violations("below_imports_above") == set()


def test_faces_do_not_import_each_other():
    assert violations("face_imports_face") == set()


def test_crypto_and_kernel_know_no_tables_and_no_flask():
    assert violations("pure_imports_models") == set()
    flask_users = {imp.importer for imp in all_imports()
                   if part_of(imp.importer) in PURE and imp.target.split(".")[0] in {"flask", "flask_openapi3"}}
    assert flask_users == set()


def test_business_areas_never_read_request_globals():
    readers = {imp.importer for imp in all_imports() if part_of(imp.importer) in AREAS | BELOW - {"core"}
               and imp.target in {"flask", "flask.globals"} and REQUEST_GLOBALS & set(imp.names)}
    assert readers == set()


def test_every_allowed_debt_still_exists():
    """An entry of ALLOWED that the code no longer needs is removed, so the list stays the list of debts."""
    edges = {(importer, target) for importer, _, target in project_imports()}
    assert ALLOWED - edges == set()
