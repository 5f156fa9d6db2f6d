"""The arrows of DESIGN §2 point one way: faces → business areas → keys, crypto, kernel, core, models.

Read from the source with `ast` (no import-linter needed). A known debt would be listed in ALLOWED with the reason
(the list is empty: a new entry needs a reason as good as a code change that removes it).
"""

from __future__ import annotations

import ast
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

from backend.config import PROJECT_ROOT

FACES = frozenset({"dept_api", "miniapp_api", "public_api", "web", "cli", "jobs"})
AREAS = frozenset(
    {"catalog", "issuance", "imports", "wallet", "sharing", "objections", "identity", "notifications", "audit"})
BELOW = frozenset({"keys", "crypto", "kernel", "core", "models"})
# Between the layers: `auth` (route decorators, used by faces only), `adapters` (external services, used by
# areas), `schemas` (API models for the faces), and the app's own modules (app, config, extensions, errors).
ABOVE_AREAS = FACES | {"auth", "app", "schemas"}
PURE = frozenset({"crypto", "kernel"})
REQUEST_GLOBALS = frozenset({"request", "g", "session"})

# (importing module, imported part): debts that need a real code change, not a move. Keep this list empty.
ALLOWED: frozenset[tuple[str, str]] = frozenset()


@dataclass(frozen=True)
class Import:
    importer: str  # dotted module name
    target: str  # dotted module (or package) name imported
    names: tuple[str, ...]  # names imported from it (`from target import names`), or attributes read off it


def part_of(module: str) -> str:
    """The part of the house a module is in: `backend.sharing.grants` → `sharing`, `miniapp_api.x` → `miniapp_api`."""
    pieces = module.split(".")
    if pieces[0] == "miniapp_api":
        return "miniapp_api"
    return pieces[1] if len(pieces) > 1 else pieces[0]


def module_name(path: Path, root: Path = PROJECT_ROOT) -> str:
    dotted = ".".join(path.relative_to(root).with_suffix("").parts)
    return dotted.removesuffix(".__init__")


def source_files() -> Iterator[Path]:
    for top in ("backend", "miniapp_api"):
        yield from sorted((PROJECT_ROOT / top).rglob("*.py"))


def imports_of(path: Path, root: Path = PROJECT_ROOT) -> Iterator[Import]:
    importer = module_name(path, root)
    tree = ast.parse(path.read_text(encoding="utf-8"), str(path))
    # `import flask` then `flask.request`: the attribute counts as a name imported from the module.
    imported_modules = {alias.asname or alias.name: alias.name for node in ast.walk(tree)
                        if isinstance(node, ast.Import) for alias in node.names if "." not in alias.name}
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                yield Import(importer, alias.name, ())
        elif (isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name)
              and node.value.id in imported_modules):
            yield Import(importer, imported_modules[node.value.id], (node.attr,))
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names = tuple(alias.name for alias in node.names)
            if node.module == "backend":  # `from backend import cli` imports the package backend.cli
                for name in names:
                    yield Import(importer, f"backend.{name}", ())
            else:
                yield Import(importer, node.module, names)


def all_imports() -> list[Import]:
    return [imp for path in source_files() for imp in imports_of(path)]


def project_imports(imports: list[Import] | None = None) -> list[tuple[str, str, str]]:
    """(importer, its part, the imported part) for every import of backend or miniapp_api code."""
    edges = []
    for imp in all_imports() if imports is None else imports:
        if imp.target.split(".")[0] in {"backend", "miniapp_api"} and imp.target != "backend":
            edges.append((imp.importer, part_of(imp.importer), part_of(imp.target)))
    return edges


RULES: dict[str, Callable[[str, str], bool]] = {
    "area_imports_face": lambda source, target: source in AREAS and target in ABOVE_AREAS,
    "below_imports_above": lambda source, target: source in BELOW and target in AREAS | ABOVE_AREAS,
    "face_imports_face": lambda source, target: source in FACES and target in FACES,
    "pure_imports_models": lambda source, target: source in PURE and target == "models",
}


def violations(rule: str, imports: list[Import] | None = None) -> set[tuple[str, str]]:
    """(importing module, imported part) pairs breaking `rule`, less the known debts (all the code's imports unless
    `imports` are given)."""
    wrong_way = RULES[rule]
    found = {(importer, target) for importer, source, target in project_imports(imports)
             if source != target and wrong_way(source, target)}
    return found - ALLOWED


def request_global_readers(imports: list[Import] | None = None) -> set[str]:
    """Modules of a business area (or below, but for the request edge in core) that read `flask.request`, `g` or
    `session`."""
    return {imp.importer for imp in (all_imports() if imports is None else imports)
            if part_of(imp.importer) in AREAS | BELOW - {"core"}
            and imp.target in {"flask", "flask.globals"} and REQUEST_GLOBALS & set(imp.names)}


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
    assert request_global_readers() == set()


def test_every_allowed_debt_still_exists():
    """An entry of ALLOWED that the code no longer needs is removed, so the list stays the list of debts."""
    edges = {(importer, target) for importer, _, target in project_imports()}
    assert ALLOWED - edges == set()


# -- the checks themselves: each reports an arrow that runs the wrong way -------------------------------------------

def synthetic_imports(tmp_path: Path, module: str, source: str) -> list[Import]:
    """The imports of a module written with `source` at `module`'s place in a throwaway tree."""
    path = tmp_path.joinpath(*module.split(".")).with_suffix(".py")
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(source, encoding="utf-8")
    return list(imports_of(path, root=tmp_path))


def test_a_business_area_importing_a_face_is_reported(tmp_path):
    imports = synthetic_imports(tmp_path, "backend.sharing.fake", "from backend.dept_api import batches\n"
                                                                  "from backend import web\n"
                                                                  "import miniapp_api.wallet\n")
    assert violations("area_imports_face", imports) == {
        ("backend.sharing.fake", "dept_api"), ("backend.sharing.fake", "web"), ("backend.sharing.fake", "miniapp_api")}
    downwards = synthetic_imports(tmp_path, "backend.sharing.fine", "from backend.keys import keystore\n"
                                                                    "from backend.sharing import grants\n")
    assert violations("area_imports_face", downwards) == set()


def test_core_importing_an_area_or_auth_is_reported(tmp_path):
    imports = synthetic_imports(tmp_path, "backend.core.fake", "from backend.objections.evidence import clean_image\n"
                                                               "from backend.auth.access import enforce_access\n")
    assert violations("below_imports_above", imports) == {("backend.core.fake", "objections"),
                                                          ("backend.core.fake", "auth")}


def test_a_face_importing_another_face_is_reported(tmp_path):
    imports = synthetic_imports(tmp_path, "miniapp_api.fake", "from backend.jobs.callbacks import deliver\n")
    imports += synthetic_imports(tmp_path, "backend.web.fake", "from backend.public_api import public\n")
    assert violations("face_imports_face", imports) == {("miniapp_api.fake", "jobs"),
                                                        ("backend.web.fake", "public_api")}


def test_kernel_importing_models_is_reported(tmp_path):
    imports = synthetic_imports(tmp_path, "backend.kernel.fake", "from backend.models import Certificate\n")
    assert violations("pure_imports_models", imports) == {("backend.kernel.fake", "models")}


def test_a_business_area_reading_request_globals_is_reported(tmp_path):
    imports = synthetic_imports(tmp_path, "backend.wallet.fake", "from flask import g, current_app\n")
    imports += synthetic_imports(tmp_path, "backend.identity.fake", "import flask\n\ndef who():\n"
                                                                   "    return flask.request.remote_addr\n")
    imports += synthetic_imports(tmp_path, "backend.audit.fake", "from flask.globals import session\n")
    imports += synthetic_imports(tmp_path, "backend.core.fine", "from flask import request\n")  # the edge may
    assert request_global_readers(imports) == {"backend.wallet.fake", "backend.identity.fake", "backend.audit.fake"}
