"""The package's shape (README "Layout"): Ray only at the edges, imports that only go one way, and a driver that
knows nothing of the demo or the experiment."""

import ast
import pkgutil
import subprocess
import sys
from pathlib import Path

import vstar

# The modules that may import Ray (shared/STYLE.md §7, "Ray stays at the edges"): the Ray Data stages and their actors, the Ray Train launch, the Serve
# app, and the entry points that start or join Ray.
RAY_EDGES = {
    "vstar.generate.stage",
    "vstar.generate.actors",
    "vstar.train.launch",
    "vstar.serve.app",
    "vstar.driver",
    "vstar.cli",
}
MODULES = sorted(m.name for m in pkgutil.walk_packages(vstar.__path__, "vstar."))


def python(code: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)


def test_every_other_module_imports_without_ray():
    others = [m for m in MODULES if m not in RAY_EDGES]
    assert "vstar.train.core" in others and "vstar.storage" in others and "vstar.demo.pretrain" in others
    block = (
        "import importlib, sys\n"
        "class NoRay:\n"
        "    def find_spec(self, name, path=None, target=None):\n"
        "        if name == 'ray' or name.startswith('ray.'):\n"
        "            raise ImportError(f'ray is blocked: {name}')\n"
        "sys.meta_path.insert(0, NoRay())\n"
        f"for m in {others!r}:\n"
        "    importlib.import_module(m)\n"
        "assert not any(m == 'ray' or m.startswith('ray.') for m in sys.modules)\n"
    )
    out = python(block)
    assert out.returncode == 0, out.stderr[-3000:]
    edge = python(block.replace(f"for m in {others!r}", "for m in ['vstar.driver']"))
    assert edge.returncode != 0 and "ray is blocked" in edge.stderr  # the block works: an edge needs Ray


def test_the_driver_imports_no_demo_or_experiment():
    out = python(
        "import sys, vstar.driver\n"
        "print([m for m in sys.modules if m.startswith('vstar.demo') or m.startswith('vstar.experiment')])"
    )
    assert out.returncode == 0 and out.stdout.strip() == "[]", out.stderr[-3000:]


def imports(path: Path, module: str) -> set[str]:
    """The vstar modules a module imports, at its top or inside its functions."""
    package = module if path.name == "__init__.py" else module.rsplit(".", 1)[0]
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found |= {a.name for a in node.names}
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                base = ".".join(package.split(".")[: len(package.split(".")) - node.level + 1] + [base]).strip(".")
            found |= {base} | {f"{base}.{a.name}" for a in node.names}
    return {m for m in found if m in MODULES or m == "vstar"}


def test_imports_go_one_way():
    """No cycle in the graph of vstar's imports, counting those inside functions: every layer imports downward."""
    root = Path(vstar.__file__).parent
    graph = {}
    for m in MODULES:
        rel = Path(*m.split(".")[1:])
        path = root / rel / "__init__.py" if (root / rel).is_dir() else root / rel.with_suffix(".py")
        graph[m] = imports(path, m) - {m}
    state: dict[str, int] = {}

    def visit(m: str, trail: list[str]) -> None:
        if state.get(m) == 2:
            return
        assert state.get(m) != 1, "circular import: " + " → ".join([*trail[trail.index(m) :], m])
        state[m] = 1
        for n in sorted(graph.get(m, ())):
            visit(n, [*trail, m])
        state[m] = 2

    for m in MODULES:
        visit(m, [])
