"""The house rules of docs/architecture.md, read from the source with `ast`: which
package may import which, no import circle between modules, and the page naming every
package there is."""

from __future__ import annotations

import ast
from pathlib import Path

from tests.live_server import REPO

PACKAGES = ("purifier", "service", "training", "benchmarks")


def module_name(path: Path) -> str:
    parts = path.relative_to(REPO).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def modules() -> dict[str, Path]:
    return {module_name(p): p for pkg in PACKAGES for p in sorted((REPO / pkg).rglob("*.py"))}


MODULES = modules()  # module name -> file, read once for every test
KNOWN = set(MODULES)


def imports(path: Path, top_level_only: bool = False) -> set[str]:
    """Every module `path` imports (with top_level_only, not those inside functions)."""
    tree = ast.parse(path.read_text())
    nodes = tree.body if top_level_only else list(ast.walk(tree))
    found: set[str] = set()
    for node in nodes:
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
            # `from pkg import sub` imports the module pkg.sub when there is one (the
            # package's own __init__ runs first, but that is not an edge back to it)
            for alias in node.names:
                sub = f"{node.module}.{alias.name}"
                found.add(sub if sub in KNOWN else node.module)
    return found


def reaches(found: set[str], root: str) -> list[str]:
    return sorted(m for m in found if m == root or m.startswith(root + "."))


def test_the_service_imports_no_torch_and_nothing_from_training():
    for name, path in MODULES.items():
        if name.startswith("service"):
            found = imports(path)
            assert not reaches(found, "torch"), name
            assert not reaches(found, "training"), name


def test_training_imports_nothing_from_the_service():
    for name, path in MODULES.items():
        if name.startswith("training"):
            assert not reaches(imports(path), "service"), name


def test_the_contract_package_imports_neither_side_and_the_cli_only_lazily():
    # The CLI's commands and `from purifier import Purifier` (the package's __getattr__)
    # import their side on first use, never at import time.
    lazy = {"purifier.cli", "purifier"}
    for name, path in MODULES.items():
        if not name.startswith("purifier"):
            continue
        found = imports(path, top_level_only=name in lazy)
        assert not reaches(found, "service") and not reaches(found, "training"), name
        assert not reaches(found, "torch"), name


def test_no_route_imports_another():
    """Shared request plumbing lives below the routes (service.body, routes.tracking)."""
    routes = {n for n, p in MODULES.items() if "router = APIRouter" in p.read_text()}
    assert {"service.routes.purify", "service.routes.v2", "service.routes.health"} <= routes
    for name in routes:
        assert not imports(MODULES[name]) & (routes - {name}), name


def test_no_import_circle_between_modules():
    graph = {
        name: {m for m in imports(path, top_level_only=True) if m in KNOWN and m != name}
        for name, path in MODULES.items()
    }
    done: set[str] = set()

    def visit(name: str, path: list[str]) -> None:
        if name in path:
            raise AssertionError("import circle: " + " -> ".join([*path[path.index(name) :], name]))
        if name in done:
            return
        for dep in sorted(graph[name]):
            visit(dep, [*path, name])
        done.add(name)

    for name in sorted(graph):
        visit(name, [])


def test_the_house_page_names_every_package_and_every_training_room():
    page = (REPO / "docs" / "architecture.md").read_text()
    rooms = [p.name for p in (REPO / "training").iterdir() if (p / "__init__.py").exists()]
    loose = [p.stem for p in (REPO / "training").glob("*.py") if p.stem != "__init__"]
    for name in [*PACKAGES, *(f"{r}/" for r in rooms), *(f"{m}.py" for m in loose)]:
        assert name in page, f"docs/architecture.md does not mention {name}"


def test_the_contract_page_names_every_name_and_card_field_of_the_contract():
    import purifier.contract as contract

    page = (REPO / "docs" / "model-contract.md").read_text()
    files = [v for k, v in vars(contract).items() if k.endswith("_FILE")]
    assert len(files) >= 6 and all(name in page for name in files)  # distinctive strings
    for name in [contract.INPUT_NAME, contract.OUTPUT_NAME, *contract.REQUIRED_CARD_FIELDS]:
        assert f"`{name}`" in page, f"docs/model-contract.md lacks `{name}`"
    for section in contract.VARIANT_FILES:
        assert f"`{section}`" in page, f"docs/model-contract.md lacks `{section}`"
