"""The shape of the package: imports point one way (README, "Code map").

Read statically from the source (lazy imports inside functions count too), so a new upward import or cycle
fails here before it confuses a reader or an import order."""

import ast
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
# Where each package's source sits (pyproject.toml's package-dir): the kernels live at the top, as kernels/.
SOURCES = {"fastcae": REPO / "fastcae", "fastcae.kernels": REPO / "kernels"}


def _module_name(path: Path) -> tuple[str, bool]:
    package, root = max(((p, r) for p, r in SOURCES.items() if path.is_relative_to(r)), key=lambda pr: len(pr[0]))
    parts = [package, *path.relative_to(root).with_suffix("").parts]
    is_package = parts[-1] == "__init__"
    return ".".join(parts[:-1] if is_package else parts), is_package


def _all_imports(path: Path) -> set[str]:
    """Every absolute module name ``path`` imports (relative imports left out)."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found |= {a.name for a in node.names}
        elif isinstance(node, ast.ImportFrom) and not node.level and node.module:
            found.add(node.module)
    return found


def _imports() -> dict[str, set[str]]:
    """fastcae module -> the fastcae modules it imports (a ``from X import name`` counts as X, or X.name when
    that is a module)."""
    files = {_module_name(p)[0]: p for root in SOURCES.values() for p in root.rglob("*.py")}
    graph = {}
    for name, path in files.items():
        _, is_package = _module_name(path)
        package = name if is_package else name.rpartition(".")[0]
        found = set()
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                found |= {a.name for a in node.names if a.name.split(".")[0] == "fastcae"}
            elif isinstance(node, ast.ImportFrom):
                if node.level:
                    base = package.split(".")
                    base = base[: len(base) - node.level + 1]
                    target = ".".join(base + ([node.module] if node.module else []))
                else:
                    target = node.module or ""
                if target.split(".")[0] != "fastcae":
                    continue
                subs = {f"{target}.{a.name}" for a in node.names if f"{target}.{a.name}" in files}
                found |= subs or {target}
        graph[name] = {m for m in found if m in files and m != name}
    return graph


GRAPH = _imports()


def _in(module: str, *packages: str) -> bool:
    return any(module == p or module.startswith(p + ".") for p in packages)


def test_the_graph_is_read():
    assert "fastcae.steps" in GRAPH["fastcae.loop"] and "fastcae.synthesis.cend" in GRAPH["fastcae.paradigms"]
    assert "fastcae.kernels.shared" in GRAPH["fastcae.kernels.logit_loss"] and "fastcae.kernels" in GRAPH["fastcae.ops"]


def test_the_schedule_is_pure_arithmetic():
    """plan.py takes measured step costs and returns a plan: it imports the config and nothing that builds, runs
    or times a model, not even torch, so it is tested alone. ``measure`` (which times the run's own steps) and
    ``defaults`` (which reads the teacher) import what they use at module level: no cycle needs a lazy import."""
    assert GRAPH["fastcae.plan"] <= {"fastcae.config"}
    assert not {m for m in _all_imports(REPO / "fastcae" / "plan.py") if m.split(".")[0] == "torch"}
    assert {"fastcae.plan", "fastcae.steps", "fastcae.paradigms"} <= GRAPH["fastcae.measure"]
    assert "fastcae.bn_stats" in GRAPH["fastcae.defaults"]


def test_the_sources_are_where_pyproject_installs_them_from():
    """The kernels are installed from the top-level kernels/ (pyproject's package-dir), and fastcae/ holds no
    second copy that an import from the repository root could pick up instead."""
    tomllib = pytest.importorskip("tomllib")
    setuptools = tomllib.loads((REPO / "pyproject.toml").read_text())["tool"]["setuptools"]
    mapped = {package: REPO / folder for package, folder in setuptools["package-dir"].items()}
    assert mapped == {"fastcae.kernels": SOURCES["fastcae.kernels"]}
    assert set(SOURCES) <= set(setuptools["packages"])
    # A leftover fastcae/kernels/ (say, the __pycache__ of a checkout from before the move) would be imported
    # as an empty namespace package in place of the mapped kernels/: "cannot import name 'OPS'".
    assert not (REPO / "fastcae" / "kernels").exists(), "remove the stale fastcae/kernels/ (kernels/ replaced it)"


def test_the_library_imports_no_tool():
    """tools/ (the AOT kernel check, diagnostics) may import fastcae; fastcae and its kernels never import tools."""
    for root in SOURCES.values():
        for path in root.rglob("*.py"):
            bad = {m for m in _all_imports(path) if m.split(".")[0] in ("tools", "benchmarks", "tests")}
            assert not bad, (path, bad)


def test_no_import_cycles():
    state: dict[str, int] = {}

    def visit(m, path):
        state[m] = 1
        for n in GRAPH[m]:
            if n == "fastcae" or n.endswith("__main__"):
                continue
            if state.get(n) == 1:
                pytest.fail("import cycle: " + " -> ".join(path + [n]))
            if n not in state:
                visit(n, path + [n])
        state[m] = 2

    for module in GRAPH:
        if module not in state:
            visit(module, [module])


@pytest.mark.parametrize("bottom", ["fastcae.config", "fastcae.datasets", "fastcae.utils", "fastcae.atomic",
                                    "fastcae.losses", "fastcae.distributed"])
def test_the_bottom_imports_nothing_of_fastcae(bottom):
    assert GRAPH[bottom] <= {"fastcae"} if bottom == "fastcae.utils" else GRAPH[bottom] == set()


def test_the_model_zoo_and_the_kernels_stand_alone():
    for module, deps in GRAPH.items():
        if _in(module, "fastcae.models"):
            assert all(_in(d, "fastcae.models", "fastcae.datasets", "fastcae.utils") for d in deps), (module, deps)
        if _in(module, "fastcae.kernels"):
            assert all(_in(d, "fastcae.kernels") for d in deps), (module, deps)


# The one import that points up: distill's result saves and exports its student with the export app, imported
# inside those methods (and under TYPE_CHECKING for annotations), so that `import fastcae` does not load it.
LAZY_UP = {("fastcae.result", "fastcae.apps.export")}


def test_nothing_below_imports_api_loop_or_apps():
    top = {"fastcae.api": ("fastcae.apps", "fastcae.api"),
           "fastcae.result": ("fastcae.apps", "fastcae.api", "fastcae.result"),
           "fastcae.loop": ("fastcae.apps", "fastcae.api", "fastcae.loop")}
    for module, deps in GRAPH.items():
        if module in ("fastcae", "fastcae.__main__"):
            continue
        for d in deps:
            if _in(d, "fastcae.apps") and (module, d) not in LAZY_UP:
                assert _in(module, "fastcae.apps"), f"{module} imports the app {d}"
            for name, allowed in top.items():
                if d == name:
                    assert _in(module, *allowed), f"{module} imports {name}"
    for name in ("api.py", "result.py"):
        tree = ast.parse((REPO / "fastcae" / name).read_text())
        eager = [n.module for n in tree.body if isinstance(n, ast.ImportFrom) and "apps" in (n.module or "").split(".")]
        assert not eager, f"fastcae/{name} imports {eager} when it is imported: import the app inside the method"


def test_the_cend_definition_sits_below_the_ops():
    """``ops`` takes ``cend_linear``'s reference from ``synthesis.cend``, where the method's CEND step is defined;
    so ``cend`` (and the Philox stream it draws from) may import only the bottom layer, never ``ops`` or the
    generator that calls it."""
    assert "fastcae.synthesis.cend" in GRAPH["fastcae.ops"]
    for module in ("fastcae.synthesis.cend", "fastcae.synthesis.philox"):
        assert GRAPH[module] <= {"fastcae.config", "fastcae.synthesis.philox"}, (module, GRAPH[module])
