"""The layering rule: Ray lives only in deployments/ and graph.py; only deployments/graph.py binds."""

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def imported_modules(path: Path) -> set[str]:
    tree = ast.parse(path.read_text(), filename=str(path))
    names = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names.update(alias.name.split(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module.split(".")[0])
    return names


def is_deployment_bind(node: ast.AST) -> bool:
    """``SomethingDeployment.bind(...)`` or ``Ingress.bind(...)`` (not ``socket.bind``)."""
    if not (isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and node.func.attr == "bind"):
        return False
    target = node.func.value
    return isinstance(target, ast.Name) and (target.id.endswith("Deployment") or target.id == "Ingress")


def calls_bind(path: Path) -> bool:
    return any(is_deployment_bind(node) for node in ast.walk(ast.parse(path.read_text(), filename=str(path))))


def test_gen3d_never_imports_ray() -> None:
    offenders = [p for p in (ROOT / "gen3d").rglob("*.py") if "ray" in imported_modules(p)]
    assert offenders == []


def test_library_does_not_import_the_service_layer() -> None:
    offenders = [
        p for p in (ROOT / "gen3d").rglob("*.py") if imported_modules(p) & {"deployments", "graph", "fastapi"}
    ]
    assert offenders == []


def test_only_the_graph_module_binds_deployments() -> None:
    sources = [ROOT / "graph.py", *(ROOT / "deployments").rglob("*.py"), *(ROOT / "gen3d").rglob("*.py")]
    sources += [*(ROOT / "scripts").rglob("*.py"), *(ROOT / "tests").rglob("*.py")]
    binders = [p.relative_to(ROOT) for p in sources if calls_bind(p)]
    assert binders == [Path("deployments/graph.py")]


def test_each_stage_names_library_and_deployment_module() -> None:
    for stage in ("text_to_image", "background", "image_to_3d", "export"):
        assert (ROOT / "gen3d" / "stages" / f"{stage}.py").is_file(), stage
        assert (ROOT / "deployments" / f"{stage}.py").is_file(), stage


#: gen3d's floors, bottom up: a package may import only packages on its own floor or below.
#: Shared building blocks, then the models, then the stages that use them, then the service.
FLOORS = ("parts", "models", "stages", "service")
#: Top-level modules that stand on a higher floor than the ground. ``gen3d.client`` speaks the
#: service's HTTP contract (it shares ``gen3d.service.api``'s models), so it is service floor,
#: though users import it from the top (``from gen3d.client import Client``).
MODULE_FLOORS = {"client": "service"}


def floor_name(name: str) -> str:
    """The floor a ``gen3d.<name>`` package or top-level module stands on (by its floor's name)."""
    return MODULE_FLOORS.get(name, name)


def gen3d_packages_imported(path: Path) -> set[str]:
    """The ``gen3d.<package>`` names that ``path`` imports (first component after ``gen3d``)."""
    tree = ast.parse(path.read_text(), filename=str(path))
    names = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            dotted = [node.module] if node.module != "gen3d" else [f"gen3d.{a.name}" for a in node.names]
        elif isinstance(node, ast.Import):
            dotted = [alias.name for alias in node.names]
        else:
            continue
        names.update(name.split(".")[1] for name in dotted if name.startswith("gen3d."))
    return names


def floor_of(path: Path) -> int:
    """A gen3d file's floor; modules outside the four folders (mesh, splat, config, ...) sit with
    parts, unless ``MODULE_FLOORS`` places them."""
    package = floor_name(path.relative_to(ROOT / "gen3d").with_suffix("").parts[0])
    return FLOORS.index(package) if package in FLOORS else 0


def test_gen3d_imports_point_down() -> None:
    upward = []
    for path in (ROOT / "gen3d").rglob("*.py"):
        for package in {floor_name(name) for name in gen3d_packages_imported(path)} & set(FLOORS):
            if FLOORS.index(package) > floor_of(path):
                upward.append(f"{path.relative_to(ROOT)} -> gen3d.{package}")
    assert upward == []
